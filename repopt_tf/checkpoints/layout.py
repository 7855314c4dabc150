"""What every reference state-dict layout shares: forms, tensor conversion,
the key map of a model, and the strict copy into it.

A `Layout` (one per model family: `torch_layouts.VGG`,
`ghostnet_layout.GHOSTNET`) says which state dicts it reads
(`recognizes`), their `Form` (`detect_form`), the torch module of each Keras
layer (`module`), and what the file describes (classes, input channels,
matching variants). `load_state_dict` works on any of them.

Tensors convert by layer type: conv weights `(Cout, Cin, kh, kw)` ->
`(kh, kw, Cin, Cout)`, depthwise `(C, 1, kh, kw)` -> `(kh, kw, C, 1)`; BN
`weight, bias, running_mean, running_var` -> `gamma, beta, moving_mean,
moving_variance` (`num_batches_tracked` is ignored); Linear `(K, C)` ->
Dense `(C, K)`; scale vectors -> `ChannelScale`.
"""

import dataclasses

import keras
import numpy as np

from repopt_tf.models.blocks import ChannelScale
from repopt_tf.models.blocks import split_block_layer
from repopt_tf.models.registry import model_identity

IGNORED_SUFFIXES = (".num_batches_tracked",)


@dataclasses.dataclass(frozen=True)
class Form:
    name: str
    kind: str
    description: str
    modules: dict  # Keras layer part -> torch module path
    marker: str  # a module that only this form has


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


class Layout:
    """A family's state-dict layouts (module docstring). Subclasses set
    `forms`, `head` (the classifier's module) and `variant_prefix` (of the
    variants `model_from_checkpoint` prefers), and implement the methods."""

    forms = ()
    head = None

    def recognizes(self, state):
        raise NotImplementedError

    def module(self, layer_name, form, model):
        """The torch module path of Keras layer `layer_name` of `model`, or
        None."""
        raise NotImplementedError

    def num_classes(self, state):
        raise NotImplementedError

    def channels(self, state):
        raise NotImplementedError

    def matching_variants(self, state):
        raise NotImplementedError

    def looks_like(self, state):
        """A phrase naming the variant(s) the state dict has the shape of."""
        raise NotImplementedError

    def variant_prefix(self, form):
        raise NotImplementedError

    def detect_form(self, state, source="state dict"):
        """The `Form` of a state dict, from its module names (the first
        form, in `forms` order, whose marker module is present)."""
        modules = {part for key in state for part in key.split(".")}
        for form in self.forms:
            if form.marker in modules:
                return form
        raise ValueError(
            f"{source} is in no known {type(self).__name__} form; its first "
            f"keys: {', '.join(list(state)[:5])}."
        )

    def expected_keys(self, model, form, include_head=True):
        """`{torch key: (keras variable, converter)}` for `model` in `form`."""
        keys = {}
        for layer in model.layers:
            if not layer.weights:
                continue
            if layer.name == "classifier":
                if not include_head:
                    continue
                module = self.head
            else:
                module = self.module(layer.name, form, model)
            if module is None:
                raise ValueError(
                    f"Layer {layer.name} of {model.name} has no place in the "
                    f"{form.description} layout."
                )
            for key, variable, convert in variable_keys(layer, module):
                keys[key] = (variable, convert)
        return keys


def variable_keys(layer, module):
    """`[(torch key, keras variable, torch->keras converter)]` of one layer."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return [
            (f"{module}.weight", layer.gamma, _same),
            (f"{module}.bias", layer.beta, _same),
            (f"{module}.running_mean", layer.moving_mean, _same),
            (f"{module}.running_var", layer.moving_variance, _same),
        ]
    if isinstance(layer, ChannelScale):
        return [(f"{module}.weight", layer.scale, _reshape_like(layer.scale))]
    if isinstance(layer, keras.layers.Dense):
        pairs = [(f"{module}.weight", layer.kernel, np.transpose)]
    elif isinstance(layer, keras.layers.DepthwiseConv2D):
        pairs = [(f"{module}.weight", layer.kernel, _depthwise_kernel)]
    elif isinstance(layer, keras.layers.Conv2D):
        pairs = [(f"{module}.weight", layer.kernel, _conv_kernel)]
    else:
        raise ValueError(
            f"Layer {layer.name} ({type(layer).__name__}) has no PyTorch "
            "counterpart in the reference layouts (RPG models cannot load "
            ".pth weights)."
        )
    if layer.use_bias:
        pairs.append((f"{module}.bias", layer.bias, _same))
    return pairs


def _same(value):
    return value


def _conv_kernel(value):
    return np.transpose(value, (2, 3, 1, 0))


def _depthwise_kernel(value):
    return np.transpose(value, (2, 3, 0, 1))


def _reshape_like(variable):
    return lambda value: np.reshape(value, variable.shape)


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
    head = layout.head
    head_classes = layout.num_classes(state)
    model_classes = model.get_layer("classifier").units
    head_mismatch = head_classes is not None and head_classes != model_classes
    if head_mismatch and not skip_head:
        raise ValueError(
            f"{source} has a {head_classes}-class head ({head}.weight), the "
            f"model {model_classes} classes: build it with num_classes="
            f"{head_classes}, or skip the head to fine-tune a new one "
            "(load_weights(..., skip_head=True); in train.py "
            "--config.init_skip_head=True)."
        )
    expected = layout.expected_keys(model, form, include_head=not skip_head)
    present = {key for key in state if not key.endswith(IGNORED_SUFFIXES)}
    if skip_head:
        present = {key for key in present if not key.startswith(f"{head}.")}
    missing = sorted(set(expected) - present)
    unexpected = sorted(present - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{source} does not fit {model.name}: "
            + "; ".join(
                f"{label} keys {', '.join(keys[:5])}"
                + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
                for label, keys in (
                    ("missing", missing),
                    ("unexpected", unexpected),
                )
                if keys
            )
            + f". The file looks like {layout.looks_like(state)}."
        )
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
    for key, value in values.items():
        expected[key][0].assign(value)
    return LoadReport(
        source,
        form.description,
        len(values),
        sum(v.size for v in values.values()),
        skip_head,
    )
