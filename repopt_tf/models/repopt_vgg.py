"""RepOpt-VGG family: one functional builder over a variant table.

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
from repopt_tf.models.blocks import squeeze_excite
from repopt_tf.models.rpg import ParameterRing

# blocks: 3x3 layers per stage 1-4; widths: channels per stage 1-4; stem: the
# stage-0 width, min(64, 64 * a) in the paper.
VARIANTS = {
    "repopt_vgg_b1": dict(
        blocks=(4, 6, 16, 1), widths=(128, 256, 512, 2048), stem=64,
        description="Paper's B1 (51.8M params at 1000 classes); GPU training.",
    ),
    "repopt_vgg_b2": dict(
        blocks=(4, 6, 16, 1), widths=(160, 320, 640, 2560), stem=64,
        description="Paper's B2 (80.3M); GPU training.",
    ),
    "repopt_vgg_l1": dict(
        blocks=(8, 14, 24, 1), widths=(128, 256, 512, 2048), stem=64,
        description="Paper's L1 (76.0M); GPU training.",
    ),
    "repopt_vgg_l2": dict(
        blocks=(8, 14, 24, 1), widths=(160, 320, 640, 2560), stem=64,
        description="Paper's L2 (118.1M); GPU training.",
    ),
    "repopt_vgg_l2_se": dict(
        blocks=(8, 14, 24, 1), widths=(160, 320, 640, 2560), stem=64, se=True,
        description="L2 with an SE block after each ReLU (internal C/4).",
    ),
    "repopt_vgg_a0": dict(
        blocks=(2, 4, 14, 1), widths=(48, 96, 192, 1280), stem=48,
        description="RepVGG-A0 shape (8.3M): phones and edge NPUs.",
    ),
    "repopt_vgg_s": dict(
        blocks=(1, 2, 4, 1), widths=(32, 64, 128, 256), stem=32,
        description="Small (1.1M): trains on 2 CPU cores; microcontroller-"
        "class CPUs. The CPU default for Fashion-MNIST.",
    ),
    "repopt_vgg_tiny": dict(
        blocks=(1, 2, 1, 1), widths=(8, 16, 16, 32), stem=8,
        description="Tiny (44K): unit tests and smoke runs.",
    ),
    # RepVGG (Ding et al., CVPR 2021, Table 2): the same topology, for the
    # authors' released RepVGG checkpoints (kind="repvgg" or "deploy").
    "repvgg_a0": dict(
        blocks=(2, 4, 14, 1), widths=(48, 96, 192, 1280), stem=48,
        description="RepVGG-A0 (8.3M deployed).",
    ),
    "repvgg_a1": dict(
        blocks=(2, 4, 14, 1), widths=(64, 128, 256, 1280), stem=64,
        description="RepVGG-A1 (12.8M deployed).",
    ),
    "repvgg_a2": dict(
        blocks=(2, 4, 14, 1), widths=(96, 192, 384, 1408), stem=64,
        description="RepVGG-A2 (25.5M deployed).",
    ),
    "repvgg_b0": dict(
        blocks=(4, 6, 16, 1), widths=(64, 128, 256, 1280), stem=64,
        description="RepVGG-B0 (14.3M deployed).",
    ),
    "repvgg_b1": dict(
        blocks=(4, 6, 16, 1), widths=(128, 256, 512, 2048), stem=64,
        description="RepVGG-B1 (51.8M deployed).",
    ),
    "repvgg_b2": dict(
        blocks=(4, 6, 16, 1), widths=(160, 320, 640, 2560), stem=64,
        description="RepVGG-B2 (80.3M deployed).",
    ),
    "repvgg_b3": dict(
        blocks=(4, 6, 16, 1), widths=(192, 384, 768, 2560), stem=64,
        description="RepVGG-B3 (111.0M deployed).",
    ),
}
# RepVGG's groupwise variants: the 3x3 and 1x1 convs of the blocks at
# GROUPED_BLOCKS (positions in model order, the stem is 0) have `groups`.
GROUPED_BLOCKS = tuple(range(2, 27, 2))
VARIANTS.update({
    f"{base}g{groups}": dict(
        VARIANTS[base], groups=groups,
        description=f"RepVGG-{base[-2:].upper()}g{groups}: groupwise "
        f"({groups} groups) convs in every other block.",
    )
    for base in ("repvgg_b1", "repvgg_b2", "repvgg_b3") for groups in (2, 4)
})

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)


def list_models():
    """Names accepted by `build_model`."""
    return sorted(VARIANTS)


def block_names(name):
    """Block names of a variant in model order: `stage0_block0`, ..."""
    spec = _spec(name)
    names = ["stage0_block0"]
    for stage, depth in enumerate(spec["blocks"], start=1):
        names += [f"stage{stage}_block{i}" for i in range(depth)]
    return names


def block_groups(spec):
    """Conv groups of each block in model order (1 unless groupwise)."""
    depth = 1 + sum(spec["blocks"])
    groups = spec.get("groups", 1)
    return [groups if position in GROUPED_BLOCKS else 1
            for position in range(depth)]


def hs_scale_init(block_index):
    """Hyper-search init of s and t: 1 for a stage's first block, else sqrt(2/l)."""
    return 1.0 if block_index == 0 else float(np.sqrt(2.0 / block_index))


def build_model(
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
    weights=None,
):
    """Builds a RepOpt-VGG variant.

    Args:
        name: one of `list_models()`.
        num_classes: classifier width (logits, no softmax).
        input_shape: `(H, W, C)` of raw 0-255 pixels.
        kind: `"plain"` (RepOpt-VGG target / plain VGG), `"hs"` (hyper-search
            CSLA model), `"repvgg"` (RepVGG training form), `"deploy"` (fused
            RepVGG: conv with bias, no BN).
        include_preprocessing: put `x / 255` and `(x - mean) / std` inside
            the model.
        mean, std: per-channel statistics in [0, 1] pixel units; default
            ImageNet's for 3 channels, Fashion-MNIST's for 1 channel.
        rpg_dof: with kind "plain", generate every block's 3x3 kernel from one
            shared ring (Recurrent Parameter Generators) of
            `round(rpg_dof * T)` entries, T the generated weights; in (0, 1].
        rpg_mode, rpg_seed: the ring's mode (see `repopt_tf.models.rpg`) and
            the seed of its permutations, signs and init.
        weights: a file to load (Keras applications' convention): the
            authors' PyTorch checkpoint of this variant and kind (read
            without torch), a `.keras` model or `.weights.h5`. See
            `repopt_tf.checkpoints.load_weights` for EMA weights and for
            loading all but the classifier.
    """
    spec = _spec(name)
    if spec.get("groups") and kind not in ("repvgg", "deploy"):
        raise ValueError(
            f"{name} is a groupwise RepVGG variant: build it with "
            f"kind='repvgg' or kind='deploy', not {kind!r}.")
    plan = list(block_plan(spec, input_shape[-1]))
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    if include_preprocessing:
        x = _preprocessing(input_shape[-1], mean, std)(x)
    ring = None
    if rpg_dof is not None:
        if kind != "plain":
            raise ValueError(f"rpg_dof needs kind='plain', got kind={kind!r}.")
        total = sum(9 * cin * cout for _, cin, cout, _, _ in plan)
        if not 0 < rpg_dof <= 1:
            raise ValueError(
                f"rpg_dof is the ring size as a fraction of the {total} "
                f"generated weights and must be in (0, 1], got {rpg_dof}."
            )
        size = max(1, round(rpg_dof * total))
        # Ring std = the weight-averaged He std, so per-layer gains are ~1.
        ring_std = float(np.sqrt(sum(9 * cin * cout * 2 / (9 * cin)
                                     for _, cin, cout, _, _ in plan) / total))
        ring_layer = ParameterRing(size, seed=rpg_seed, init_std=ring_std,
                                   name="ring")
        ring = [ring_layer(inputs), 0, rpg_seed, rpg_mode, ring_std]
    for (block_name, cin, cout, stride, index), groups in zip(
            plan, block_groups(spec)):
        x = block(x, cout, stride, block_name, kind,
                  hs_scale_init=hs_scale_init(index), ring=ring, groups=groups)
        if ring is not None:
            ring[1] += 9 * cin * cout
        if spec.get("se"):
            x = squeeze_excite(x, block_name)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(num_classes, name="classifier")(x)
    suffix = kind if ring is None else f"rpg{rpg_dof:g}"
    model = keras.Model(inputs, outputs, name=f"{name}_{suffix}")
    if weights is not None:
        # Imported here: repopt_tf.checkpoints maps onto this module's models.
        from repopt_tf.checkpoints import load_weights

        load_weights(model, weights)
    return model


def block_plan(spec, channels):
    """`(name, in_channels, out_channels, stride, index in stage)` per block."""
    yield "stage0_block0", channels, spec["stem"], 2, 0
    channels = spec["stem"]
    for stage, (depth, width) in enumerate(
        zip(spec["blocks"], spec["widths"]), start=1
    ):
        for index in range(depth):
            yield f"stage{stage}_block{index}", channels, width, \
                2 if index == 0 else 1, index
            channels = width


def _spec(name):
    if name not in VARIANTS:
        raise ValueError(
            f"Unknown model {name!r}. Available: {', '.join(list_models())}."
        )
    return VARIANTS[name]


def _preprocessing(channels, mean, std):
    if mean is None or std is None:
        if channels == 3:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            mean = FASHION_MNIST_MEAN * channels
            std = FASHION_MNIST_STD * channels
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    if mean.shape != (channels,) or std.shape != (channels,):
        raise ValueError(
            f"mean and std need {channels} values, got {mean.tolist()} and "
            f"{std.tolist()}."
        )
    return keras.layers.Rescaling(
        scale=(1.0 / (255.0 * std)).tolist(),
        offset=(-mean / std).tolist(),
        name="preprocessing",
    )
