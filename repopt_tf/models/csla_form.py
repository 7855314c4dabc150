"""RepOpt for your own network: its hyper-search (CSLA) form.

`csla_form(model, layer_pattern)` returns a copy of a functional Keras model
in which every 3x3 `Conv2D` whose name fully matches `layer_pattern` becomes
the CSLA block of Ding et al. (ICLR 2023, §3.2, Eq. 1)::

    y = s * conv3x3(x) + t * conv1x1(x) (+ gamma * x)

and every matching 3x3 `DepthwiseConv2D` the depthwise block (no 1x1
branch)::

    y = t * dwconv3x3(x) (+ s * x)

with trainable per-channel scales `s`, `t` (initialised to `scale_init`) and
`gamma` (initialised to 1); the identity branch is there when the conv maps
C -> C at stride 1 (`can_carry_identity`). Everything else (the
BN after the conv, activations, residual adds, the head) is copied as it is,
with fresh weights. The 1x1 branch reads the centre of every 3x3 window
whatever the padding: with `padding="same"` at stride 2 (TF pads one side
only), after a `ZeroPadding2D` or for an unpadded conv, a crop picks the
window centres (the identity branch reads the same pixels). So the plain model
trained with `RepOptSGD` and the Grad Mults of the searched scales is this
model trained with SGD, as for RepOpt-VGG.

Names: the conv keeps its name; the other layers are
`csla_layer_name(conv_name, part)` (`{base}_conv1x1`, `{base}_scale_conv`,
`{base}_scale_1x1`, `{base}_scale_identity`, `{base}_add`, with `base` the
conv's name less a `_conv` suffix): the RepOpt-VGG `kind="hs"` blocks use the
same rule, so `extract_scales` reads both.

Workflow (see README, "RepOpt on your own network")::

    hs = csla_form(model, pattern)        # train it on the search data set
    scales = extract_scales(hs, pattern)
    reinitialize(model, scales, layer_pattern=pattern)
    mults = grad_mults_for_model(model, scales, pattern)   # -> RepOptSGD
"""

import warnings

import keras

from repopt_tf.models.blocks import csla_layer_name
from repopt_tf.models.blocks import csla_sum
from repopt_tf.models.family import can_carry_identity
from repopt_tf.models.family import is_3x3_conv
from repopt_tf.models.family import no_match_error


def csla_form(model, layer_pattern, scale_init=1.0):
    """The hyper-search (CSLA) form of your own network.

    Every 3x3 `Conv2D` whose name fully matches `layer_pattern` becomes
    `y = s * conv3x3(x) + t * conv1x1(x) (+ gamma * x)` and every matching 3x3
    `DepthwiseConv2D` `y = t * dwconv3x3(x) (+ s * x)`, with trainable
    per-channel scales (module docstring); everything else is copied with
    fresh weights. Train it on the search data set, then `extract_scales`,
    `reinitialize` and `grad_mults_for_model` give your plain network
    RepOpt's training.

    Args:
        model: a functional (or Sequential) Keras model.
        layer_pattern: regex (full match) of the block convs' names.
        scale_init: initial value of the conv and 1x1 scales.

    Returns:
        A new functional model (the search model).

    Raises:
        ValueError: when no 3x3 conv matches, or a match is dilated or
            grouped (no 1x1 / identity counterpart).

    Examples:
        >>> import keras
        >>> from repopt_tf import csla_form, extract_scales
        >>> x = keras.Input((16, 16, 3))
        >>> y = keras.layers.Conv2D(8, 3, padding="same", name="b1_conv")(x)
        >>> y = keras.layers.Conv2D(8, 3, padding="same", name="b2_conv")(y)
        >>> net = keras.Model(x, keras.layers.GlobalAveragePooling2D()(y))
        >>> hs = csla_form(net, "b[12]_conv")
        >>> [sorted(k for k, v in b.items() if v is not None)
        ...  for b in extract_scales(hs, "b[12]_conv")]
        [['1x1', 'conv'], ['1x1', 'conv', 'identity']]

    References:
        Ding et al., 2023, Sec. 3.2, Eq. 1, https://arxiv.org/abs/2205.15242.
    """
    if isinstance(model, keras.Sequential):
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    converted = []

    def call(layer, *args, **kwargs):
        if not is_3x3_conv(layer, layer_pattern):
            return layer(*args, **kwargs)
        converted.append(layer.name)
        return _csla_block(layer, args[0], scale_init)

    clone = keras.models.clone_model(model, call_function=call)
    if not converted:
        raise no_match_error(model, layer_pattern)
    return keras.Model(clone.inputs, clone.outputs, name=f"{model.name}_csla")


def _csla_block(conv, x, scale_init):
    depthwise = isinstance(conv, keras.layers.DepthwiseConv2D)
    if tuple(conv.dilation_rate) != (1, 1) or getattr(conv, "groups", 1) != 1:
        raise ValueError(
            f"{conv.name}: dilated or grouped convs have no CSLA "
            "form (1x1 and identity branches)."
        )
    name = conv.name
    y = conv(x)
    offset = _centre_offset(conv, x.shape, y.shape)
    rows = _crop(x.shape[1], offset[0], y.shape[1], conv.strides[0])
    cols = _crop(x.shape[2], offset[1], y.shape[2], conv.strides[1])
    branch_input = x
    if rows != (0, 0) or cols != (0, 0):
        if conv.padding == "same" and offset != (0, 0):
            warnings.warn(
                f"{name}: padding='same' at stride {conv.strides[0]} pads one "
                "side only, so the 3x3 window's centre is one pixel off the "
                "1x1 branch's; the branch input is cropped to keep the CSLA "
                "form exact. PyTorch's padding=1 (ZeroPadding2D(1) + 'valid', "
                "or FastGradConv2D(zero_padding=1)) avoids this and keeps "
                "weights portable.",
                stacklevel=3,
            )
        branch_input = keras.layers.Cropping2D(
            (rows, cols), name=csla_layer_name(name, "crop")
        )(x)
    conv1x1 = None
    if not depthwise:  # a depthwise block has no 1x1 branch
        conv1x1 = keras.layers.Conv2D(
            conv.filters,
            1,
            strides=conv.strides,
            padding="valid",
            use_bias=False,
            name=csla_layer_name(name, "conv1x1"),
        )(branch_input)
    identity = branch_input if can_carry_identity(conv) else None
    return csla_sum(y, conv1x1, identity, name, scale_init)


def _centre_offset(conv, input_shape, output_shape):
    """Where output pixel (0, 0)'s window centre sits in the unpadded input."""
    offsets = []
    for axis in (1, 2):
        size, out, stride = (
            input_shape[axis],
            output_shape[axis],
            conv.strides[axis - 1],
        )
        if size is None or out is None:
            raise ValueError(
                f"{conv.name}: csla_form needs static spatial input shapes."
            )
        if conv.padding == "same":
            before = max((out - 1) * stride + 3 - size, 0) // 2
        else:
            before = getattr(conv, "zero_padding", 0)
        offsets.append(1 - before)
    return tuple(offsets)


def _crop(size, offset, out, stride):
    """`(before, after)` so that a stride-`stride` 1x1 conv gives `out` centres."""
    if offset < 0:
        raise ValueError("a 3x3 window whose centre lies in the padding")
    return offset, size - offset - ((out - 1) * stride + 1)
