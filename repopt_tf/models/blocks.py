"""Building blocks the families share: the four forms of a 3x3 CSLA block
(RepOpt-VGG's, and any csla_form network's), with aligned layer names.

Every block maps `x` to `ReLU(BN(...))` (RepVGG: `ReLU(sum of BN branches)`)
with a 3x3 conv of stride 1 or 2 and symmetric zero padding 1, so that the
1x1 branch lands exactly on the 3x3 centre tap. Convs are `FastGradConv2D`
(padding inside the op and a fast CPU input gradient), or `RingConv2D` (the
same, with an RPG kernel, from `RingPlan.conv`). Names for a block called
`name` (e.g. `stage3_block7`; `block_name`):

- `plain`   : `{name}_conv` (3x3, no bias) -> `{name}_bn` -> `{name}_relu`
- `hs`      : `s*{name}_conv(x) + t*{name}_conv1x1(x) (+ gamma*x)` with
              trainable scales `{name}_scale_conv`, `{name}_scale_1x1`,
              `{name}_scale_identity`, then `{name}_bn` -> `{name}_relu`
- `repvgg`  : `{name}_bn(conv) + {name}_bn1x1(conv1x1) (+ {name}_bn_identity(x))`
              -> `{name}_relu`
- `deploy`  : `{name}_conv` (3x3 with bias) -> `{name}_relu` (fused RepVGG)

This module is the one home of that naming rule (`block_name`,
`csla_layer_name`, `split_block_layer`, `BLOCK_CONV`, `model_name`).
"""

import re

import keras

from repopt_tf.csla import identity_fits
from repopt_tf.models.fast_conv import FastGradConv2D
from repopt_tf.models.fast_norm import FastBatchNorm

BLOCK_KINDS = ("plain", "hs", "repvgg", "deploy")
_BLOCK_LAYER = re.compile(r"(stage(\d+)_block(\d+))_(\w+)")
# The block convs of RepOpt-VGG; other models pass their own pattern.
BLOCK_CONV = r"stage\d+_block\d+_conv"


def block_name(stage, index):
    """`stage3_block7`: block `index` of stage `stage` (the stem is stage 0)."""
    return f"stage{stage}_block{index}"


def model_name(variant, form):
    """`{variant}_{form}`, e.g. `repopt_vgg_s_plain`, `repopt_vgg_s_rpg0.1`."""
    return f"{variant}_{form}"


def csla_layer_name(conv_name, part):
    """Name of a CSLA branch layer of the 3x3 conv `conv_name`:
    `{base}_{part}`, `base` being the name less a `_conv` suffix
    (`stage1_block0_conv` -> `stage1_block0_scale_1x1`)."""
    return f"{conv_name.removesuffix('_conv')}_{part}"


def split_block_layer(layer_name):
    """`"stage3_block7_bn1x1"` -> `("stage3_block7", 3, 7, "bn1x1")`, else None."""
    match = _BLOCK_LAYER.fullmatch(layer_name)
    if match is None:
        return None
    block, stage, index, part = match.groups()
    return block, int(stage), int(index), part


def batch_norm(name):
    """BatchNorm with PyTorch's defaults (eps 1e-5, momentum 0.1), fused
    training step (`FastBatchNorm`)."""
    return FastBatchNorm(epsilon=1e-5, momentum=0.9, name=name)


@keras.saving.register_keras_serializable(package="repopt_tf")
class ChannelScale(keras.layers.Layer):
    """Multiplies the last axis by a trainable per-channel vector.

    With `kernel_like=True` the weight is stored as `(1, 1, 1, C)` so that
    optimizers that decay only kernels (ndim >= 2) decay it, as the official
    hyper-search does for the identity scale; otherwise it has shape `(C,)`.
    """

    def __init__(self, initial_value=1.0, kernel_like=False, **kwargs):
        super().__init__(**kwargs)
        self.initial_value = float(initial_value)
        self.kernel_like = kernel_like

    def build(self, input_shape):
        channels = input_shape[-1]
        shape = (1, 1, 1, channels) if self.kernel_like else (channels,)
        self.scale = self.add_weight(
            name="scale",
            shape=shape,
            initializer=keras.initializers.Constant(self.initial_value),
        )

    def call(self, inputs):
        return inputs * keras.ops.reshape(self.scale, (-1,))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "initial_value": self.initial_value,
                "kernel_like": self.kernel_like,
            }
        )
        return config


def block(
    x,
    filters,
    stride,
    name,
    kind="plain",
    hs_scale_init=1.0,
    conv_factory=FastGradConv2D,
    groups=1,
):
    """Applies one block of the given kind (see the module docstring).

    `conv_factory(filters, kernel_size, strides=, name=, **args)` makes the
    3x3 conv (default `FastGradConv2D`; `RingPlan.conv` for an RPG model).
    `groups` splits the 3x3 and 1x1 convs into groups (RepVGG's g2/g4).
    """
    if kind not in BLOCK_KINDS:
        raise ValueError(f"kind must be one of {BLOCK_KINDS}, got {kind!r}.")
    identity = identity_fits(x.shape[-1], filters, stride)
    grouped = {"groups": groups} if groups != 1 else {}
    conv = conv_factory(
        filters,
        3,
        strides=stride,
        zero_padding=1,
        use_bias=kind == "deploy",
        name=f"{name}_conv",
        **grouped,
    )(x)
    if kind in ("plain", "deploy"):
        out = conv if kind == "deploy" else batch_norm(f"{name}_bn")(conv)
        return keras.layers.ReLU(name=f"{name}_relu")(out)

    conv1x1 = FastGradConv2D(
        filters,
        1,
        strides=stride,
        padding="valid",
        use_bias=False,
        groups=groups,
        name=f"{name}_conv1x1",
    )(x)
    if kind == "hs":
        conv_name = f"{name}_conv"
        out = csla_sum(
            conv, conv1x1, x if identity else None, conv_name, hs_scale_init
        )
        out = batch_norm(f"{name}_bn")(out)
    else:  # repvgg
        branches = [
            batch_norm(f"{name}_bn")(conv),
            batch_norm(f"{name}_bn1x1")(conv1x1),
        ]
        if identity:
            branches.append(batch_norm(f"{name}_bn_identity")(x))
        out = keras.layers.Add(name=f"{name}_add")(branches)
    return keras.layers.ReLU(name=f"{name}_relu")(out)


def csla_sum(
    conv,
    conv1x1,
    identity_input,
    conv_name,
    scale_init,
    identity_kernel_like=True,
):
    """`s * conv (+ t * conv1x1) (+ gamma * identity_input)`: the CSLA sum
    with trainable `ChannelScale`s (`s`, `t` from `scale_init`, `gamma` from
    1), named by `csla_layer_name(conv_name, ...)`; `conv1x1` or
    `identity_input` None: no such branch (with neither, `s * conv`).
    `gamma` is a decayed kernel-like weight unless `identity_kernel_like` is
    False."""
    branches = [
        ChannelScale(scale_init, name=csla_layer_name(conv_name, "scale_conv"))(
            conv
        )
    ]
    if conv1x1 is not None:
        branches.append(
            ChannelScale(
                scale_init, name=csla_layer_name(conv_name, "scale_1x1")
            )(conv1x1)
        )
    if identity_input is not None:
        branches.append(
            ChannelScale(
                1.0,
                kernel_like=identity_kernel_like,
                name=csla_layer_name(conv_name, "scale_identity"),
            )(identity_input)
        )
    if len(branches) == 1:
        return branches[0]
    return keras.layers.Add(name=csla_layer_name(conv_name, "add"))(branches)


def squeeze_excite(x, name, reduced_channels=None, gate="sigmoid"):
    """Squeeze-and-excitation `x * gate(W2 relu(W1 mean(x)))` with layers
    `{name}_se_*`; internal width `reduced_channels` (default C/4; RepOpt-
    VGG-L2 with SE after the block's ReLU), `gate` a Keras activation
    (e.g. `"hard_sigmoid"`, relu6(x + 3) / 6)."""
    channels = x.shape[-1]
    s = keras.layers.GlobalAveragePooling2D(
        keepdims=True, name=f"{name}_se_pool"
    )(x)
    s = keras.layers.Conv2D(
        reduced_channels or channels // 4,
        1,
        activation="relu",
        name=f"{name}_se_reduce",
    )(s)
    s = keras.layers.Conv2D(
        channels, 1, activation=gate, name=f"{name}_se_expand"
    )(s)
    return keras.layers.Multiply(name=f"{name}_se")([x, s])
