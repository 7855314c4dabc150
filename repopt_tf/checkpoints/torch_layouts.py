"""The reference PyTorch state-dict layouts, mapped onto our Keras models.

Torch module paths per block (`P` is `stage0` for the stem, `stageN.i` for
block i of stage N; the head is `linear`):

- `repopt_target` (RepOptimizers, mode "target"; kind plain): `P.conv`,
  `P.bn` (`P.post_se.down/up` with SE).
- `repopt_hs` (RepOptimizers, "hs" / "csla"; kind hs): `P.conv`,
  `P.conv_1x1`, `P.scale_conv`, `P.scale_1x1`, `P.scale_identity`, `P.bn`.
- `repopt_repvgg` (RepOptimizers, mode "repvgg"; kind repvgg): `P.conv_3x3`,
  `P.bn_3x3`, `P.conv_1x1`, `P.bn_1x1`, `P.bn_identity`.
- `repvgg_train` (RepVGG, training form; kind repvgg): `P.rbr_dense.conv/bn`,
  `P.rbr_1x1.conv/bn`, `P.rbr_identity`.
- `repvgg_deploy` (RepVGG after `switch_to_deploy`; kind deploy):
  `P.rbr_reparam` (weight and bias).

Tensors convert by layer type: conv weights `(Cout, Cin, kh, kw)` ->
`(kh, kw, Cin, Cout)`; BN `weight, bias, running_mean, running_var` ->
`gamma, beta, moving_mean, moving_variance` (`num_batches_tracked` is
ignored); Linear `(K, C)` -> Dense `(C, K)`; scale vectors -> `ChannelScale`.
"""

import dataclasses
import typing

import keras
import numpy as np

from repopt_tf.models.blocks import ChannelScale
from repopt_tf.models.blocks import split_block_layer
from repopt_tf.models.repopt_vgg import VARIANTS
from repopt_tf.models.repopt_vgg import block_groups

HEAD = "linear"
_SE = {"se_reduce": "post_se.down", "se_expand": "post_se.up"}


@dataclasses.dataclass(frozen=True)
class Form:
    name: str
    kind: str
    description: str
    modules: dict  # Keras block-layer part -> torch module path inside a block
    marker: str  # a module that only this form has


FORMS = (
    Form(
        "repvgg_deploy",
        "deploy",
        "RepVGG deploy form (rbr_reparam)",
        {"conv": "rbr_reparam"},
        "rbr_reparam",
    ),
    Form(
        "repvgg_train",
        "repvgg",
        "RepVGG training form (rbr_dense/rbr_1x1)",
        {
            "conv": "rbr_dense.conv",
            "bn": "rbr_dense.bn",
            "conv1x1": "rbr_1x1.conv",
            "bn1x1": "rbr_1x1.bn",
            "bn_identity": "rbr_identity",
        },
        "rbr_dense",
    ),
    Form(
        "repopt_hs",
        "hs",
        "RepOpt-VGG hyper-search form (scale_conv/scale_1x1)",
        {
            "conv": "conv",
            "conv1x1": "conv_1x1",
            "scale_conv": "scale_conv",
            "scale_1x1": "scale_1x1",
            "scale_identity": "scale_identity",
            "bn": "bn",
            **_SE,
        },
        "scale_conv",
    ),
    Form(
        "repopt_repvgg",
        "repvgg",
        "RepOptimizers' RepVGG baseline form (conv_3x3/bn_3x3)",
        {
            "conv": "conv_3x3",
            "bn": "bn_3x3",
            "conv1x1": "conv_1x1",
            "bn1x1": "bn_1x1",
            "bn_identity": "bn_identity",
            **_SE,
        },
        "conv_3x3",
    ),
    Form(
        "repopt_target",
        "plain",
        "RepOpt-VGG target form (conv/bn)",
        {"conv": "conv", "bn": "bn", **_SE},
        "bn",
    ),
)
IGNORED_SUFFIXES = (".num_batches_tracked",)


def torch_block_prefix(stage, index):
    """`stage0` for the stem (a bare module), else `stageN.i`."""
    return "stage0" if stage == 0 else f"stage{stage}.{index}"


def detect_form(state, source="state dict"):
    """The `Form` of a RepOpt-VGG / RepVGG state dict, from its module names."""
    modules = {part for key in state for part in key.split(".")}
    for form in FORMS:
        if form.marker in modules and any(
            key.startswith("stage0.") for key in state
        ):
            return form
    raise ValueError(
        f"{source} is not a RepOpt-VGG or RepVGG state dict (no stage0.* keys "
        f"in a known layout); its first keys: {', '.join(list(state)[:5])}."
    )


class StateShape(typing.NamedTuple):
    """The architecture a state dict describes (None where it cannot tell)."""

    num_classes: int | None
    channels: int | None
    blocks: tuple
    widths: tuple
    stem: int | None
    se: bool
    groups: tuple  # conv groups per block, in model order

    def variant_key(self):
        return self.blocks, self.widths, self.stem, self.se, self.groups


def describe_state(state):
    """The `StateShape` of a RepOpt-VGG / RepVGG state dict.

    Read from the 3x3 kernels (every form has exactly one per block, of
    shape `(Cout, Cin / groups, 3, 3)`) and the head; SE is the presence of
    `post_se` modules.
    """
    blocks, widths = [0, 0, 0, 0], [0, 0, 0, 0]
    stem = channels = None
    group_inputs = {}  # (stage, index) -> Cin / groups
    for key, value in state.items():
        if value.ndim != 4 or tuple(value.shape[2:]) != (3, 3):
            continue
        stage, _, rest = key.partition(".")
        if stage == "stage0":
            stem, channels = int(value.shape[0]), int(value.shape[1])
        elif stage in ("stage1", "stage2", "stage3", "stage4"):
            index = rest.split(".")[0]
            if index.isdigit():
                position = int(stage[-1]) - 1
                blocks[position] = max(blocks[position], int(index) + 1)
                widths[position] = int(value.shape[0])
                group_inputs[int(stage[-1]), int(index)] = int(value.shape[1])
    groups, cin = [1], stem
    for stage, (depth, width) in enumerate(zip(blocks, widths), start=1):
        for index in range(depth):
            inputs = group_inputs.get((stage, index))
            groups.append(cin // inputs if cin and inputs else 1)
            cin = width
    head = state.get(f"{HEAD}.weight")
    num_classes = int(head.shape[0]) if head is not None else None
    se = any(".post_se." in key for key in state)
    return StateShape(
        num_classes,
        channels,
        tuple(blocks),
        tuple(widths),
        stem,
        se,
        tuple(groups),
    )


def matching_variants(state):
    """Variant names whose table entry has the state dict's shape."""
    key = describe_state(state).variant_key()
    return [
        name
        for name, spec in sorted(VARIANTS.items())
        if (
            spec["blocks"],
            spec["widths"],
            spec["stem"],
            bool(spec.get("se")),
            tuple(block_groups(spec)),
        )
        == key
    ]


def looks_like(state):
    """A phrase naming the variant(s) the state dict has the shape of."""
    shape = describe_state(state)
    names = matching_variants(state)
    grouped = max(shape.groups) if shape.groups else 1
    text = (
        f"blocks {shape.blocks}, widths {shape.widths}, stem {shape.stem}"
        + (", SE" if shape.se else "")
        + (f", groupwise convs ({grouped} groups)" if grouped > 1 else "")
    )
    if names:
        return f"{' / '.join(names)} ({text})"
    return f"no variant in the table ({text})"


def model_kind(model):
    """The block form of a model built by `build_model`, from its layers."""
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


def _variable_keys(layer, module):
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


def _reshape_like(variable):
    return lambda value: np.reshape(value, variable.shape)


def expected_keys(model, form, include_head=True):
    """`{torch key: (keras variable, converter)}` for `model` in `form`."""
    keys = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        split = split_block_layer(layer.name)
        if layer.name == "classifier":
            if not include_head:
                continue
            module = HEAD
        elif split is not None and split[3] in form.modules:
            _, stage, index, part = split
            module = f"{torch_block_prefix(stage, index)}.{form.modules[part]}"
        else:
            raise ValueError(
                f"Layer {layer.name} of {model.name} has no place in the "
                f"{form.description} layout."
            )
        for key, variable, convert in _variable_keys(layer, module):
            keys[key] = (variable, convert)
    return keys


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


def load_state_dict(model, state, skip_head=False, source="state dict"):
    """Copies a reference PyTorch state dict into a `build_model` model.

    Every key must map: missing or unexpected keys, a form that does not
    match the model's kind, and shape mismatches raise one `ValueError`
    naming the keys (and the variant the file looks like). With
    `skip_head=True` the `linear.*` tensors are ignored and the model's own
    classifier stays as built (fine-tuning on other classes).
    """
    form = detect_form(state, source)
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
    head_classes = describe_state(state).num_classes
    model_classes = model.get_layer("classifier").units
    head_mismatch = head_classes is not None and head_classes != model_classes
    if head_mismatch and not skip_head:
        raise ValueError(
            f"{source} has a {head_classes}-class head ({HEAD}.weight), the "
            f"model {model_classes} classes: build it with num_classes="
            f"{head_classes}, or skip the head to fine-tune a new one "
            "(load_weights(..., skip_head=True); in train.py "
            "--config.init_skip_head=True)."
        )
    expected = expected_keys(model, form, include_head=not skip_head)
    present = {key for key in state if not key.endswith(IGNORED_SUFFIXES)}
    if skip_head:
        present = {key for key in present if not key.startswith(f"{HEAD}.")}
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
            + f". The file looks like {looks_like(state)}."
        )
    values = {}
    for key, (variable, convert) in expected.items():
        value = np.asarray(convert(state[key]), np.float32)
        if value.shape != tuple(variable.shape):
            raise ValueError(
                f"{source}: {key} has shape {tuple(state[key].shape)}, which "
                f"does not fit {variable.path} {tuple(variable.shape)}. The "
                f"file looks like {looks_like(state)}; the model is "
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
