"""The model as it is converted for a device: same function, device form.

`device_model(model, batch_size, fold_padding)` rebuilds a functional
model layer by layer (`rebuild`) with its weights:

- `batch_size`: a fixed input batch, so the converter folds every shape
  computation (no `SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE` from a
  `Flatten` under a dynamic batch).
- `conv_ops`: a `Dense` on flat features as a 1x1 conv (`DenseAsConv`),
  and the input `Rescaling` (the preprocessing inside our models) as a 1x1
  depthwise conv (`RescalingAsConv`), the same functions and weights.
  TFLM's and LiteRT's FULLY_CONNECTED kernels round the per-channel
  requantization differently (TFLM's results are up to 1 LSB off LiteRT's
  reference kernels on a few outputs); their CONV_2D kernels agree bit for
  bit, so the device computes what the host evaluated. A per-channel
  Rescaling converts to MUL + ADD with broadcast constants, which XNNPACK
  ran in 1.0 ms on a 224x224x3 input here, the 3-channel depthwise conv in
  0.3 and its `(224, 1, 672)` view in about 0.1.
- `fold_padding`: PyTorch-style symmetric zero padding `p` before a conv of
  stride `s > 1` (a `ZeroPadding2D` + "valid" conv, or `FastGradConv2D(
  zero_padding=p)`) becomes a "same" conv with a kernel zero-extended at
  its end (`same_kernel_size`). TFLite's SAME pads `total // 2` in front;
  at stride 2 on an even input a 3x3 kernel gets `total = 1`, front 0, so
  the converter must keep an explicit PAD (a padded copy of the input
  beside it in memory), while a 4x4 kernel with a zero last row and column
  gets `total = 2`, front 1: the same windows, no PAD. It costs
  `(k+1)^2 / k^2` of those convs' multiply-adds and weights (16/9 for 3x3)
  and saves the padded copy, which is where a VGG's arena peaks.
"""

from dataclasses import dataclass

import keras
import numpy as np

from repopt_tf.models.fast_conv import FastGradConv2D
from repopt_tf.models.graph import consumers

_CONVS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def same_kernel_size(size, kernel, stride, padding):
    """The kernel length `k >= kernel` for which a "same" conv over `size`
    inputs equals zero padding `padding` on both sides + a "valid" conv with
    `kernel` (its taps first, zeros after), or None when no such `k`."""
    out = (size + 2 * padding - kernel) // stride + 1
    same_out = -(-size // stride)
    for length in range(kernel, kernel + stride):
        total = max((same_out - 1) * stride + length - size, 0)
        if same_out == out and total // 2 == padding:
            return length
    return None


def _foldable(conv, padding, input_shape):
    """`(kh, kw)` for `conv` after symmetric `padding`, when folding it
    removes a PAD the converter would keep, else None."""
    strides = tuple(conv.strides)
    if (
        conv.padding != "valid"
        or max(strides) == 1
        or tuple(conv.dilation_rate) != (1, 1)
        or conv.data_format != "channels_last"
        or None in input_shape[1:3]
    ):
        return None
    sizes = tuple(
        same_kernel_size(input_shape[axis], conv.kernel_size[i], strides[i], p)
        for i, (axis, p) in enumerate(((1, padding[0]), (2, padding[1])))
    )
    if None in sizes or sizes == tuple(conv.kernel_size):
        return None  # not expressible, or the converter folds it itself
    return sizes


@dataclass(frozen=True)
class Fold:
    """One padded conv that `fold_padding` rewrites."""

    conv: str  # the conv layer
    pad: str | None  # its ZeroPadding2D layer (None: FastGradConv2D)
    padded_shape: tuple  # (H, W, C) of the padded input: the PAD's output
    replacement: tuple  # (layer class, config) of the "same" conv


def fold_candidates(model):
    """The convs of `model` whose PAD `fold_padding` can remove, in order."""
    users_of = consumers(model)
    folds = []
    for layer in model.layers:
        if isinstance(layer, FastGradConv2D) and layer.zero_padding:
            conv, pad, p = layer, None, layer.zero_padding
            padding = (p, p)
            config = layer.get_config()
            config.pop("zero_padding")
        elif isinstance(layer, keras.layers.ZeroPadding2D):
            (top, bottom), (left, right) = layer.padding
            users = users_of.get(layer.name, [])
            if top != bottom or left != right or len(users) != 1:
                continue
            conv, pad, padding = users[0], layer.name, (top, left)
            if not isinstance(conv, _CONVS) or isinstance(conv, FastGradConv2D):
                continue
            config = conv.get_config()
        else:
            continue
        source = model.get_layer(pad) if pad else conv
        _, height, width, channels = source.input.shape
        sizes = _foldable(conv, padding, source.input.shape)
        if sizes:
            config.update(kernel_size=sizes, padding="same")
            folds.append(
                Fold(
                    conv.name,
                    pad,
                    (height + 2 * padding[0], width + 2 * padding[1], channels),
                    (
                        keras.layers.Conv2D if pad is None else conv.__class__,
                        config,
                    ),
                )
            )
    return folds


def _copy_weights(source, target):
    """Target layer's weights from the source layer's, kernels zero-extended
    at the end of the spatial axes where the target's are larger."""
    for old, new in zip(source.weights, target.weights):
        value = np.asarray(old)
        grow = [n - o for n, o in zip(new.shape, value.shape)]
        if any(grow[2:]) or min(grow, default=0) < 0:
            raise ValueError(
                f"{target.name}: cannot map weight {old.path} of shape "
                f"{value.shape} onto {tuple(new.shape)}."
            )
        new.assign(np.pad(value, [(0, g) for g in grow]))


def rebuild(model, configure=None, batch_size=None):
    """A copy of a functional `model` with every layer rebuilt from its
    config, passed through `configure(layer) -> (class, config) | None`
    (None: unchanged), on an input of fixed `batch_size` (None: as it is),
    with the source weights copied by layer name (`_copy_weights`)."""

    def clone(layer):
        change = configure(layer) if configure else None
        cls, config = change or (layer.__class__, layer.get_config())
        return cls.from_config(config)

    input_tensors = None
    if batch_size:
        if len(model.inputs) != 1:
            raise ValueError("A fixed batch needs a model with one input.")
        input_tensors = keras.Input(
            batch_shape=(batch_size, *model.input_shape[1:]),
            name=model.inputs[0].name,
        )
    twin = keras.models.clone_model(
        model, input_tensors=input_tensors, clone_function=clone
    )
    for layer in twin.layers:
        if layer.weights:
            _copy_weights(model.get_layer(layer.name), layer)
    return twin


FOLD_MODES = ("none", "peak", "all")


class DenseAsConv(keras.layers.Dense):
    """`Dense` on `(N, C)` computed as a 1x1 convolution of `(N, 1, 1, C)`:
    the same function and weights, converted to CONV_2D (+ RESHAPE)."""

    def call(self, inputs):
        channels = inputs.shape[-1]
        x = keras.ops.reshape(inputs, (-1, 1, 1, channels))
        kernel = keras.ops.reshape(self.kernel, (1, 1, channels, self.units))
        y = keras.ops.reshape(keras.ops.conv(x, kernel), (-1, self.units))
        if self.use_bias:
            y = y + self.bias
        return self.activation(y) if self.activation is not None else y


class RescalingAsConv(keras.layers.Rescaling):
    """`Rescaling` (`x * scale + offset`, per channel or not) computed as a
    1x1 depthwise convolution with a bias: converted to DEPTHWISE_CONV_2D.
    With static widths the image is viewed as `(N, H, 1, W*C)` (the scale
    and offset tiled W times): the same values, and a wide depthwise
    kernel that XNNPACK vectorises, where 3 channels leave it idle."""

    def call(self, inputs):
        _, height, width, channels = inputs.shape
        dtype = self.compute_dtype
        lanes = channels * (width or 1)
        scale, offset = (
            keras.ops.tile(
                keras.ops.broadcast_to(keras.ops.cast(v, dtype), (channels,)),
                (lanes // channels,),
            )
            for v in (self.scale, self.offset)
        )
        x = keras.ops.cast(inputs, dtype)
        if width and height:
            x = keras.ops.reshape(x, (-1, height, 1, lanes))
        kernel = keras.ops.reshape(scale, (1, 1, lanes, 1))
        y = keras.ops.depthwise_conv(x, kernel) + offset
        return keras.ops.reshape(y, (-1, *inputs.shape[1:])) if width else y


def _conv_op_changes(model):
    """`rebuild` changes: Dense on flat features -> `DenseAsConv`, an
    image Rescaling -> `RescalingAsConv`."""
    changes = {}
    for layer in model.layers[1:]:  # past the InputLayer
        rank = len(getattr(layer.input, "shape", ()))
        if type(layer) is keras.layers.Dense and rank == 2:
            changes[layer.name] = (DenseAsConv, layer.get_config())
        elif type(layer) is keras.layers.Rescaling and rank == 4:
            changes[layer.name] = (RescalingAsConv, layer.get_config())
    return changes


def device_model(model, batch_size=None, fold_padding="none", conv_ops=False):
    """`model` in its device form (module docstring), or `model` itself when
    nothing changes. Returns `(model, names of the folded convs)`.

    `conv_ops`: Dense and Rescaling as convs (module docstring).

    `fold_padding`: "none"; "all" (every fold candidate); "peak" (only the
    PADs that set the activation peak: the model is converted to float32,
    and while a PAD's output is alive at the peak of `activation_plan` its
    conv is folded and the plan made again), or a list of conv names.
    """
    if isinstance(fold_padding, str):
        if fold_padding not in FOLD_MODES:
            raise ValueError(
                f"fold_padding must be one of {FOLD_MODES} or a list of conv "
                f"names, got {fold_padding!r}."
            )
        folds = fold_candidates(model) if fold_padding != "none" else []
        if fold_padding == "peak":
            folds = _peak_folds(model, batch_size, folds)
    else:
        by_name = {fold.conv: fold for fold in fold_candidates(model)}
        unknown = sorted(set(fold_padding) - set(by_name))
        if unknown:
            raise ValueError(f"No padded stride-2 conv to fold: {unknown}.")
        folds = [by_name[name] for name in fold_padding]
    changes = _conv_op_changes(model) if conv_ops else {}
    if not folds and not batch_size and not changes:
        return model, []
    changes.update({fold.conv: fold.replacement for fold in folds})
    changes.update(
        {
            fold.pad: (keras.layers.Identity, {"name": fold.pad})
            for fold in folds
            if fold.pad
        }
    )
    twin = rebuild(model, lambda layer: changes.get(layer.name), batch_size)
    return twin, [fold.conv for fold in folds]


def _peak_folds(model, batch_size, candidates):
    from repopt_tf.export.convert import convert_float32
    from repopt_tf.export.tflite_graph import TFLiteGraph

    chosen = []
    while True:
        twin, _ = device_model(model, batch_size, [f.conv for f in chosen])
        graph = TFLiteGraph(convert_float32(twin))
        padded = {
            graph.tensors[t].shape[1:]
            for t in graph.activation_plan()["peak_tensors"]
            if getattr(graph.producer(t), "name", None) == "PAD"
        }
        more = [
            f
            for f in candidates
            if f not in chosen and tuple(f.padded_shape) in padded
        ]
        if not more:
            return chosen
        chosen.append(more[0])
