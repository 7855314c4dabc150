"""RepOpt-GhostNet family: RepGhostNet with its re-parameterisation moved
into the optimizer (Ding et al., ICLR 2023, App. D; RepGhost: Chen et al.,
2022).

Topology (RepGhostNet): a stride-2 3x3 stem (`stem_*`), then bottlenecks
`stage{i}_block{j}` (the reference's `blocks.{i-1}.{j}`), each

    ghost1 (ReLU) -> [depthwise k x k stride 2 + BN] -> [SE, hard sigmoid]
    -> ghost2 (no ReLU), plus a shortcut (identity, or depthwise k x k +
    BN + 1x1 + BN where the shape changes),

then a 1x1 conv + BN + ReLU (`expand_*`), global pooling, a 1x1 conv with
bias to 1280 + ReLU (`head_conv`), dropout 0.2 and the classifier. Widths
are the reference's channels times the variant's width, rounded by
`make_divisible`. A ghost module `G` (e.g. `stage7_block0_ghost1`) is a 1x1
conv + BN (+ ReLU) `G_primary_*` whose output `x1` feeds the cheap
operation, a 3x3 depthwise conv `G_conv` (the re-parameterised kernel):

- `plain`    : `G_conv(x1)` -> `G_bn` (-> `G_relu`): the RepOpt target.
- `hs`       : `t * G_conv(x1) + s * x1` with trainable `G_scale_conv` (t,
               init sqrt(2/(n+1)) for the n-th module of a run of equal-
               shape bottlenecks) and `G_scale_identity` (s, init 1), then
               `G_bn` (-> `G_relu`).
- `repghost` : `G_bn(G_conv(x1)) + G_bn_identity(x1)` (-> `G_relu`): the
               RepGhostNet baseline ("fusion BN"); `kind="repvgg"` builds it
               too.
- `deploy`   : `G_conv` with bias (-> `G_relu`): `repghost` fused.

The block handler is `ConvBlocks` on the `DepthwiseConv2D`s `G_conv`:
scales `{"conv": t, "1x1": None, "identity": s}`, Rule of Initialization
`W'(0) = t*W + s*I`, Grad Mult `t**p` at every tap plus 1 at the identity
(centre) tap.
"""

import keras
import numpy as np

from repopt_tf.models.blocks import batch_norm
from repopt_tf.models.blocks import block_name
from repopt_tf.models.blocks import csla_sum
from repopt_tf.models.blocks import model_name
from repopt_tf.models.blocks import squeeze_excite
from repopt_tf.models.family import variant_spec
from repopt_tf.models.fast_conv import FastGradConv2D
from repopt_tf.models.identity import RepOptModel
from repopt_tf.models.identity import make_identity
from repopt_tf.models.preprocessing import image_input

KINDS = ("plain", "hs", "repghost", "repvgg", "deploy")
# The re-parameterised convs: the cheap operation of every ghost module.
GHOST_CONV = r"stage\d+_block\d+_ghost[12]_conv"
HEAD_WIDTH = 1280
DROPOUT = 0.2

# (kernel, expansion, channels, SE ratio, stride) of each bottleneck, one
# tuple per reference `blocks.i` (RepGhostNet's table).
GHOSTNET_STAGES = (
    ((3, 8, 16, 0, 1),),
    ((3, 24, 24, 0, 2),),
    ((3, 36, 24, 0, 1),),
    ((5, 36, 40, 0.25, 2),),
    ((5, 60, 40, 0.25, 1),),
    ((3, 120, 80, 0, 2),),
    (
        (3, 100, 80, 0, 1),
        (3, 120, 80, 0, 1),
        (3, 120, 80, 0, 1),
        (3, 240, 112, 0.25, 1),
        (3, 336, 112, 0.25, 1),
    ),
    ((5, 336, 160, 0.25, 2),),
    (
        (5, 480, 160, 0, 1),
        (5, 480, 160, 0.25, 1),
        (5, 480, 160, 0, 1),
        (5, 480, 160, 0.25, 1),
    ),
)
# Four bottlenecks with every feature of the full table (identity and
# projected shortcuts, SE, 3x3 and 5x5 depthwise, stride 2): tests.
TINY_STAGES = (
    ((3, 8, 16, 0, 1),),
    ((3, 24, 24, 0.25, 2),),
    ((3, 36, 24, 0, 1),),
    ((5, 48, 40, 0.25, 2),),
)

VARIANTS = {
    f"repopt_ghostnet_{label}": dict(
        width=width,
        stages=GHOSTNET_STAGES,
        description=f"RepOpt-GhostNet {width:g}x (RepGhostNet {width:g}x "
        "shape); phones.",
    )
    for label, width in (
        ("0_5x", 0.5),
        ("0_58x", 0.58),
        ("0_8x", 0.8),
        ("1_0x", 1.0),
        ("1_11x", 1.11),
        ("1_3x", 1.3),
        ("1_5x", 1.5),
        ("2_0x", 2.0),
    )
}
VARIANTS["repopt_ghostnet_tiny"] = dict(
    width=0.5,
    stages=TINY_STAGES,
    description="Tiny RepOpt-GhostNet (4 bottlenecks): unit tests.",
)


def make_divisible(value, divisor=4):
    """`value` rounded to the nearest multiple of `divisor` (at least
    `divisor`), never more than 10 % below `value` (MobileNet's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def hs_scale_init(module_index):
    """Hyper-search init of the cheap operation's scale t: sqrt(2/(n+1)) for
    the n-th ghost module (from 1) of a run of equal-shape bottlenecks."""
    return float(np.sqrt(2.0 / (module_index + 1)))


def bottleneck_plan(spec, stem_channels=None):
    """`(name, in, mid, out, kernel, stride, se_ratio, n)` per bottleneck;
    `n` counts the bottlenecks of the current run of stride-1, equal-width
    bottlenecks (1 for one that changes the shape)."""
    width = spec["width"]
    channels = stem_channels or make_divisible(16 * width)
    run = 0
    for stage, settings in enumerate(spec["stages"], start=1):
        for index, (kernel, expansion, out, se_ratio, stride) in enumerate(
            settings
        ):
            out = make_divisible(out * width)
            mid = make_divisible(expansion * width)
            run = run + 1 if stride == 1 and channels == out else 1
            yield (
                block_name(stage, index),
                channels,
                mid,
                out,
                kernel,
                stride,
                se_ratio,
                run,
            )
            channels = out


def expand_channels(spec):
    """Width of the 1x1 conv after the last bottleneck."""
    last_expansion = spec["stages"][-1][-1][1]
    return make_divisible(last_expansion * spec["width"] * 2)


def _depthwise(x, kernel, stride, name, use_bias=False):
    """Depthwise conv with PyTorch's symmetric padding `kernel // 2`."""
    padding = "same"
    if stride > 1:  # Keras's "same" pads one side only at stride 2
        x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"
    return keras.layers.DepthwiseConv2D(
        kernel,
        strides=stride,
        padding=padding,
        use_bias=use_bias,
        name=name,
    )(x)


def _pointwise(x, filters, name):
    return FastGradConv2D(filters, 1, use_bias=False, name=name)(x)


def ghost_module(
    x, filters, name, kind, relu, scale_init=1.0, identity_decay=False
):
    """One ghost module of the given kind (module docstring).

    `identity_decay`: store the hs identity scale kernel-like, so that
    kernel-only weight decay applies to it (the CSLA form of the reference's
    equivalence check); the reference's hyper-search does not decay it.
    """
    x1 = batch_norm(f"{name}_primary_bn")(
        _pointwise(x, filters, f"{name}_primary_conv")
    )
    if relu:
        x1 = keras.layers.ReLU(name=f"{name}_primary_relu")(x1)
    conv_name = f"{name}_conv"
    cheap = _depthwise(x1, 3, 1, conv_name, use_bias=kind == "deploy")
    if kind == "plain":
        out = batch_norm(f"{name}_bn")(cheap)
    elif kind == "hs":
        out = csla_sum(
            cheap,
            None,
            x1,
            conv_name,
            scale_init,
            identity_kernel_like=identity_decay,
        )
        out = batch_norm(f"{name}_bn")(out)
    elif kind == "repghost":
        out = keras.layers.Add(name=f"{name}_add")(
            [
                batch_norm(f"{name}_bn")(cheap),
                batch_norm(f"{name}_bn_identity")(x1),
            ]
        )
    else:  # deploy
        out = cheap
    if relu:
        out = keras.layers.ReLU(name=f"{name}_relu")(out)
    return out


def bottleneck(x, plan, kind):
    """One RepGhost bottleneck (module docstring) from a `bottleneck_plan`
    row."""
    name, channels, mid, out, kernel, stride, se_ratio, run = plan
    y = ghost_module(
        x, mid, f"{name}_ghost1", kind, True, hs_scale_init(2 * run - 1)
    )
    if stride > 1:
        y = _depthwise(y, kernel, stride, f"{name}_dw")
        y = batch_norm(f"{name}_dw_bn")(y)
    if se_ratio:
        y = squeeze_excite(
            y, name, make_divisible(mid * se_ratio), gate="hard_sigmoid"
        )
    y = ghost_module(
        y, out, f"{name}_ghost2", kind, False, hs_scale_init(2 * run)
    )
    shortcut = x
    if stride != 1 or channels != out:
        shortcut = _depthwise(x, kernel, stride, f"{name}_shortcut_dw")
        shortcut = batch_norm(f"{name}_shortcut_dw_bn")(shortcut)
        shortcut = _pointwise(shortcut, out, f"{name}_shortcut_conv")
        shortcut = batch_norm(f"{name}_shortcut_bn")(shortcut)
    return keras.layers.Add(name=f"{name}_add")([y, shortcut])


def build_repopt_ghostnet(
    name,
    num_classes=1000,
    input_shape=(224, 224, 3),
    kind="plain",
    include_preprocessing=True,
    mean=None,
    std=None,
):
    """Builds a RepOpt-GhostNet variant (arguments: `build_model`)."""
    spec = variant_spec(VARIANTS, name, "RepOpt-GhostNet")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    if kind == "repvgg":
        kind = "repghost"
    inputs, x, stats = image_input(
        input_shape, include_preprocessing, mean, std
    )
    stem = make_divisible(16 * spec["width"])
    x = FastGradConv2D(
        stem, 3, strides=2, zero_padding=1, use_bias=False, name="stem_conv"
    )(x)
    x = keras.layers.ReLU(name="stem_relu")(batch_norm("stem_bn")(x))
    for plan in bottleneck_plan(spec, stem):
        x = bottleneck(x, plan, kind)
    x = _pointwise(x, expand_channels(spec), "expand_conv")
    x = keras.layers.ReLU(name="expand_relu")(batch_norm("expand_bn")(x))
    x = keras.layers.GlobalAveragePooling2D(keepdims=True, name="avg_pool")(x)
    x = keras.layers.Conv2D(HEAD_WIDTH, 1, activation="relu", name="head_conv")(
        x
    )
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(DROPOUT, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, name="classifier")(x)
    return RepOptModel(
        inputs,
        outputs,
        name=model_name(name, kind),
        identity=make_identity(
            "repopt_ghostnet", name, kind, num_classes, input_shape, stats
        ),
    )
