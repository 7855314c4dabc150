"""The strict copy of a reference state dict into a model, in the model's
family's layout (`repopt_tf.models.state_dict_layout`).
"""

import dataclasses

import numpy as np

from repopt_tf.models.blocks import split_block_layer
from repopt_tf.models.identity import num_classes_of
from repopt_tf.models.registry import model_identity

IGNORED_SUFFIXES = (".num_batches_tracked",)


@dataclasses.dataclass
class LoadReport:
    """What `load_state_dict` did."""

    source: str
    form: str
    tensors: int
    parameters: int
    head_skipped: bool

    def __str__(self):
        head = ", classifier head left as built" if self.head_skipped else ""
        return (
            f"loaded {self.tensors} tensors ({self.parameters:,} values) "
            f"from {self.source} ({self.form}){head}"
        )


def model_kind(model):
    """The form (`kind`) of a model built by `build_model`: its identity's
    (RPG rings are plain models); for other models, the block layers it
    has."""
    identity = model_identity(model)
    if identity is not None:
        return identity["kind"]
    parts = {
        split[3]
        for layer in model.layers
        if (split := split_block_layer(layer.name))
    }
    if "scale_conv" in parts:
        return "hs"
    if "bn1x1" in parts:
        return "repvgg"
    if "bn" in parts:
        return "plain"
    return "deploy"


def load_state_dict(model, state, layout, skip_head=False, source="state dict"):
    """Copies a reference PyTorch state dict in `layout` into a
    `build_model` model.

    Every key must map: missing or unexpected keys, a form that does not
    match the model's kind, and shape mismatches raise one `ValueError`
    naming the keys (and the variant the file looks like). With
    `skip_head=True` the head's tensors are ignored and the model's own
    classifier stays as built (fine-tuning on other classes).
    """
    form = _form_for(model, state, layout, source)
    _check_head(model, state, layout, skip_head, source)
    expected = layout.expected_keys(model, form, include_head=not skip_head)
    _check_keys(model, state, layout, expected, skip_head, source)
    values = _converted(model, state, layout, expected, source)
    for key, value in values.items():
        expected[key][0].assign(value)
    return LoadReport(
        source,
        form.description,
        len(values),
        sum(v.size for v in values.values()),
        skip_head,
    )


def _form_for(model, state, layout, source):
    """The file's form (`layout.detect_form`), which must load into the
    model's kind."""
    form = layout.detect_form(state, source)
    kind = model_kind(model)
    if form.kind != kind:
        hint = (
            " (load it into kind='repvgg', then fuse_repvgg)"
            if form.kind == "repvgg" and kind == "deploy"
            else ""
        )
        raise ValueError(
            f"{source} is in {form.description}, which loads into "
            f"kind={form.kind!r}, but the model has kind={kind!r}{hint}."
        )
    return form


def _check_head(model, state, layout, skip_head, source):
    """A head of other classes loads only when it is skipped."""
    head_classes = layout.num_classes(state)
    model_classes = num_classes_of(model)
    if head_classes in (None, model_classes) or skip_head:
        return
    raise ValueError(
        f"{source} has a {head_classes}-class head ({layout.head}.weight), "
        f"the model {model_classes} classes: build it with num_classes="
        f"{head_classes}, or skip the head to fine-tune a new one "
        "(load_weights(..., skip_head=True); in train.py "
        "--config.init_skip_head=True)."
    )


def _check_keys(model, state, layout, expected, skip_head, source):
    """Every expected key present and no other (a skipped head's aside)."""
    present = {key for key in state if not key.endswith(IGNORED_SUFFIXES)}
    if skip_head:
        present = {k for k in present if not k.startswith(f"{layout.head}.")}
    missing = sorted(set(expected) - present)
    unexpected = sorted(present - set(expected))
    if not (missing or unexpected):
        return

    def listed(label, keys):
        more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
        return f"{label} keys {', '.join(keys[:5])}{more}"

    problems = [
        listed(label, keys)
        for label, keys in (("missing", missing), ("unexpected", unexpected))
        if keys
    ]
    raise ValueError(
        f"{source} does not fit {model.name}: {'; '.join(problems)}. "
        f"The file looks like {layout.looks_like(state)}."
    )


def _converted(model, state, layout, expected, source):
    """`{key: float32 array}` in the model's shapes; a shape that does not
    fit raises, before any variable is assigned."""
    values = {}
    for key, (variable, convert) in expected.items():
        try:
            value = np.asarray(convert(state[key]), np.float32)
        except ValueError:  # a rank or size the conversion cannot take
            value = None
        if value is None or value.shape != tuple(variable.shape):
            raise ValueError(
                f"{source}: {key} has shape {tuple(state[key].shape)}, which "
                f"does not fit {variable.path} {tuple(variable.shape)}. The "
                f"file looks like {layout.looks_like(state)}; the model is "
                f"{model.name} with input {model.input_shape[1:]}."
            )
        values[key] = value
    return values
