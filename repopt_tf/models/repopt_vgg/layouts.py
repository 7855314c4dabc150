"""The reference RepOpt-VGG / RepVGG state-dict layouts (`VGG`), mapped
onto our Keras models.

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

Tensors convert as `repopt_tf.checkpoints.layout` says.
"""

import typing

from repopt_tf.models.blocks import split_block_layer
from repopt_tf.models.repopt_vgg.model import VARIANTS
from repopt_tf.models.repopt_vgg.model import block_groups
from repopt_tf.models.state_dict_layout import Form
from repopt_tf.models.state_dict_layout import Layout

HEAD = "linear"
_SE = {"se_reduce": "post_se.down", "se_expand": "post_se.up"}


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


def torch_block_prefix(stage, index):
    """`stage0` for the stem (a bare module), else `stageN.i`."""
    return "stage0" if stage == 0 else f"stage{stage}.{index}"


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


class RepOptVGGLayout(Layout):
    """RepOpt-VGG and RepVGG checkpoints (module docstring)."""

    forms = FORMS
    head = HEAD

    def recognizes(self, state):
        return any(key.startswith("stage0.") for key in state)

    def module(self, layer_name, form, model):
        split = split_block_layer(layer_name)
        if split is None or split[3] not in form.modules:
            return None
        _, stage, index, part = split
        return f"{torch_block_prefix(stage, index)}.{form.modules[part]}"

    def num_classes(self, state):
        return describe_state(state).num_classes

    def channels(self, state):
        return describe_state(state).channels

    def matching_variants(self, state):
        return matching_variants(state)

    def looks_like(self, state):
        return looks_like(state)

    def variant_prefix(self, form):
        return "repvgg_" if form.name.startswith("repvgg") else "repopt_vgg_"


VGG = RepOptVGGLayout()
