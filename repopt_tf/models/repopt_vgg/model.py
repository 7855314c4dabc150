"""RepOpt-VGG models: one functional builder over a variant table.

Topology (Ding et al., ICLR 2023, Table 1): a stride-2 stem block
`stage0_block0`, then four stages whose first block has stride 2, every block
a 3x3 conv (see `blocks.py` for the forms), then global average pooling and a
dense classifier `classifier` (logits). Input preprocessing (rescale from raw
0-255 pixels and per-channel normalisation) is the first layer, so exported
int8 models take raw pixels.
"""

import keras
import numpy as np

from repopt_tf.models.blocks import block
from repopt_tf.models.blocks import block_name
from repopt_tf.models.blocks import model_name
from repopt_tf.models.blocks import squeeze_excite
from repopt_tf.models.family import variant_spec
from repopt_tf.models.fast_conv import FastGradConv2D
from repopt_tf.models.identity import RepOptModel
from repopt_tf.models.identity import make_identity
from repopt_tf.models.preprocessing import image_input
from repopt_tf.models.rpg import RingPlan

# blocks: 3x3 layers per stage 1-4; widths: channels per stage 1-4; stem: the
# stage-0 width, min(64, 64 * a) in the paper.
VARIANTS = {
    "repopt_vgg_b1": dict(
        blocks=(4, 6, 16, 1),
        widths=(128, 256, 512, 2048),
        stem=64,
        description="Paper's B1 (51.8M params at 1000 classes); GPU training.",
    ),
    "repopt_vgg_b2": dict(
        blocks=(4, 6, 16, 1),
        widths=(160, 320, 640, 2560),
        stem=64,
        description="Paper's B2 (80.3M); GPU training.",
    ),
    "repopt_vgg_l1": dict(
        blocks=(8, 14, 24, 1),
        widths=(128, 256, 512, 2048),
        stem=64,
        description="Paper's L1 (76.0M); GPU training.",
    ),
    "repopt_vgg_l2": dict(
        blocks=(8, 14, 24, 1),
        widths=(160, 320, 640, 2560),
        stem=64,
        description="Paper's L2 (118.1M); GPU training.",
    ),
    "repopt_vgg_l2_se": dict(
        blocks=(8, 14, 24, 1),
        widths=(160, 320, 640, 2560),
        stem=64,
        se=True,
        description="L2 with an SE block after each ReLU (internal C/4).",
    ),
    "repopt_vgg_a0": dict(
        blocks=(2, 4, 14, 1),
        widths=(48, 96, 192, 1280),
        stem=48,
        description="RepVGG-A0 shape (8.3M): phones and edge NPUs.",
    ),
    "repopt_vgg_s": dict(
        blocks=(1, 2, 4, 1),
        widths=(32, 64, 128, 256),
        stem=32,
        description="Small (1.1M): trains on 2 CPU cores; microcontroller-"
        "class CPUs. The CPU default for Fashion-MNIST.",
    ),
    "repopt_vgg_a0_narrow": dict(
        blocks=(2, 4, 14, 1),
        widths=(16, 32, 64, 128),
        stem=16,
        description="RepVGG-A0 depth (22 layers) at narrow widths (0.6M): "
        "the paper-table study on 2 CPU cores.",
    ),
    "repopt_vgg_tiny": dict(
        blocks=(1, 2, 1, 1),
        widths=(8, 16, 16, 32),
        stem=8,
        description="Tiny (44K): unit tests and smoke runs.",
    ),
    # RepVGG (Ding et al., CVPR 2021, Table 2): the same topology, for the
    # authors' released RepVGG checkpoints (kind="repvgg" or "deploy").
    "repvgg_a0": dict(
        blocks=(2, 4, 14, 1),
        widths=(48, 96, 192, 1280),
        stem=48,
        description="RepVGG-A0 (8.3M deployed).",
    ),
    "repvgg_a1": dict(
        blocks=(2, 4, 14, 1),
        widths=(64, 128, 256, 1280),
        stem=64,
        description="RepVGG-A1 (12.8M deployed).",
    ),
    "repvgg_a2": dict(
        blocks=(2, 4, 14, 1),
        widths=(96, 192, 384, 1408),
        stem=64,
        description="RepVGG-A2 (25.5M deployed).",
    ),
    "repvgg_b0": dict(
        blocks=(4, 6, 16, 1),
        widths=(64, 128, 256, 1280),
        stem=64,
        description="RepVGG-B0 (14.3M deployed).",
    ),
    "repvgg_b1": dict(
        blocks=(4, 6, 16, 1),
        widths=(128, 256, 512, 2048),
        stem=64,
        description="RepVGG-B1 (51.8M deployed).",
    ),
    "repvgg_b2": dict(
        blocks=(4, 6, 16, 1),
        widths=(160, 320, 640, 2560),
        stem=64,
        description="RepVGG-B2 (80.3M deployed).",
    ),
    "repvgg_b3": dict(
        blocks=(4, 6, 16, 1),
        widths=(192, 384, 768, 2560),
        stem=64,
        description="RepVGG-B3 (111.0M deployed).",
    ),
}
# RepVGG's groupwise variants: the 3x3 and 1x1 convs of the blocks at
# GROUPED_BLOCKS (positions in model order, the stem is 0) have `groups`.
GROUPED_BLOCKS = tuple(range(2, 27, 2))
VARIANTS.update(
    {
        f"{base}g{groups}": dict(
            VARIANTS[base],
            groups=groups,
            description=f"RepVGG-{base[-2:].upper()}g{groups}: groupwise "
            f"({groups} groups) convs in every other block.",
        )
        for base in ("repvgg_b1", "repvgg_b2", "repvgg_b3")
        for groups in (2, 4)
    }
)


def block_names(name):
    """Block names of a variant in model order: `stage0_block0`, ..."""
    return [
        plan[0]
        for plan in block_plan(variant_spec(VARIANTS, name, "RepOpt-VGG"), 3)
    ]


def block_groups(spec):
    """Conv groups of each block in model order (1 unless groupwise)."""
    depth = 1 + sum(spec["blocks"])
    groups = spec.get("groups", 1)
    return [
        groups if position in GROUPED_BLOCKS else 1 for position in range(depth)
    ]


def hs_scale_init(block_index):
    """Hyper-search init of s and t: 1 for a stage's first block, else sqrt(2/l)."""
    return 1.0 if block_index == 0 else float(np.sqrt(2.0 / block_index))


def build_repopt_vgg(
    name,
    num_classes=1000,
    input_shape=(224, 224, 3),
    kind="plain",
    include_preprocessing=True,
    mean=None,
    std=None,
    rpg_dof=None,
    rpg_mode="signed_permutation",
    rpg_seed=0,
    rpg_scheme="window",
    rpg_size=None,
):
    """Builds a RepOpt-VGG or RepVGG variant (arguments: `build_model`)."""
    spec = variant_spec(VARIANTS, name, "RepOpt-VGG")
    if spec.get("groups") and kind not in ("repvgg", "deploy"):
        raise ValueError(
            f"{name} is a groupwise RepVGG variant: build it with "
            f"kind='repvgg' or kind='deploy', not {kind!r}."
        )
    plan = list(block_plan(spec, input_shape[-1]))
    inputs, x, stats = image_input(
        input_shape, include_preprocessing, mean, std
    )
    factories, form = _conv_factories(
        inputs, plan, kind, rpg_dof, rpg_mode, rpg_seed, rpg_scheme, rpg_size
    )
    for (name_in_model, _, cout, stride, index), groups, factory in zip(
        plan, block_groups(spec), factories
    ):
        x = block(
            x,
            cout,
            stride,
            name_in_model,
            kind,
            hs_scale_init=hs_scale_init(index),
            conv_factory=factory,
            groups=groups,
        )
        if spec.get("se"):
            x = squeeze_excite(x, name_in_model)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(num_classes, name="classifier")(x)
    return RepOptModel(
        inputs,
        outputs,
        name=model_name(name, form),
        identity=make_identity(
            "repopt_vgg", name, kind, num_classes, input_shape, stats
        ),
    )


def _conv_factories(inputs, plan, kind, dof, mode, seed, scheme, size):
    """Each block's conv layer factory and the model's form: plain
    `FastGradConv2D`s, or (RPG, `dof` or `size` given) convs whose kernels
    a ring generates, the form then named `rpg<dof or size>`."""
    factories = [FastGradConv2D] * len(plan)
    if dof is None and not size:
        return factories, kind
    if kind != "plain":
        raise ValueError(f"RPG rings need kind='plain', got kind={kind!r}.")
    first = 1 if scheme == "authors" else 0  # the authors keep the stem off
    ring = RingPlan.for_kernels(
        inputs,
        [(3, 3, cin, cout) for _, cin, cout, _, _ in plan[first:]],
        dof,
        mode,
        seed,
        scheme=scheme,
        size=size,
    )
    factories[first:] = [ring.conv] * (len(plan) - first)
    return factories, f"rpg{size or dof:g}"


def block_plan(spec, channels):
    """`(name, in_channels, out_channels, stride, index in stage)` per block."""
    yield block_name(0, 0), channels, spec["stem"], 2, 0
    channels = spec["stem"]
    for stage, (depth, width) in enumerate(
        zip(spec["blocks"], spec["widths"]), start=1
    ):
        for index in range(depth):
            yield (
                block_name(stage, index),
                channels,
                width,
                2 if index == 0 else 1,
                index,
            )
            channels = width
