"""Conv2D with built-in symmetric zero padding and a fast CPU input gradient.

On CPU, TF's `Conv2DBackpropInput` is very slow for small feature maps with
many channels: for a 3x3 conv on 2x2x128 maps (batch 128) it takes 21 ms at
stride 1 and 42 ms at stride 2 (to 256 channels), against about 1 ms for the
forward pass, and it dominated a RepOpt-VGG-S training step. For a conv with
stride `s` (the same in both directions), kernel `K` of `k` rows and zero
padding `p`, write each row of the unpadded input as `r = s*a + q` (phase
`q < s`). Row `r` is padded row `r + p = s*(a + c) + i0` with
`c, i0 = divmod(q + p, s)`, so

    dx[s*a + q] = sum_u dy[a + c - u] K[i0 + s*u],   i0 + s*u < k

(columns likewise): all `s*s` phases of `dx` are one stride-1 VALID
convolution of a window of `dy` with a small kernel of `s*s*C_in` output
channels gathered from `K`, followed by `depth_to_space(s)`. At `s = 1` this
is the textbook `conv(dy, flip(K)^T)` with padding `k-1-p`. It runs through
the fast forward kernel (about 2 ms on the shapes above) and needs no large
workspace. The kernel gradient keeps TF's own op (faster than the forward-
conv alternatives tried; see docs/results.md). On GPUs the stock gradients
are used.

`zero_padding` pads every side (PyTorch's `padding=p`, which keeps a 1x1
branch on the 3x3 centre tap at stride 2, where Keras's "same" pads one side
only) inside the convolution: with a separate `ZeroPadding2D` layer the input
gradient would also be computed for the padding and then dropped, four times
the work on 2x2 maps. TFLite converts it to PAD + CONV_2D. Forward results
equal `ZeroPadding2D(p)` + `Conv2D(padding="valid")`.
"""

import keras
import numpy as np
import tensorflow as tf


def _window(dy, axis, start, length):
    """`dy[start : start + length]` along `axis`, zero-filled outside."""
    size = dy.shape[axis]
    before, after = max(0, -start), max(0, start + length - size)
    crop_start, crop_end = max(0, start), min(size, start + length)
    begin = [0] * 4
    begin[axis] = crop_start
    extent = [-1] * 4
    extent[axis] = crop_end - crop_start
    dy = tf.slice(dy, begin, extent)
    paddings = [[0, 0]] * 4
    paddings[axis] = [before, after]
    return tf.pad(dy, paddings) if before or after else dy


def _phase_taps(size, stride, padding):
    """Kernel rows feeding each phase of dx, by window offset.

    Returns `(start, taps)`: `dx[s*a + q]` sums `dy[a + start + t] K[taps[t, q]]`
    over `t`; `taps[t, q] == size` marks a zero row.
    """
    uses = []  # (dy offset, phase, kernel row)
    for q in range(stride):
        carry, first_row = divmod(q + padding, stride)
        for u, row in enumerate(range(first_row, size, stride)):
            uses.append((carry - u, q, row))
    start = min(offset for offset, _, _ in uses)
    taps = np.full((max(o for o, _, _ in uses) - start + 1, stride), size)
    for offset, q, row in uses:
        taps[offset - start, q] = row
    return start, taps


def _input_gradient(dy, kernel, stride, padding, input_shape):
    """dx of `conv(pad(x, padding), kernel, stride)` (see the module doc)."""
    kh, kw, c_in, c_out = kernel.shape
    start_h, taps_h = _phase_taps(kh, stride, padding)
    start_w, taps_w = _phase_taps(kw, stride, padding)
    zero_padded = tf.pad(kernel, [[0, 1], [0, 1], [0, 0], [0, 0]])
    phase_kernel = tf.gather(tf.gather(zero_padded, taps_h, axis=0), taps_w, axis=2)
    # (t_h, q_h, t_w, q_w, C_in, C_out) -> (t_h, t_w, C_out, q_h * q_w * C_in)
    phase_kernel = tf.reshape(
        tf.transpose(phase_kernel, [0, 2, 5, 1, 3, 4]),
        [len(taps_h), len(taps_w), c_out, stride * stride * c_in])
    height, width = input_shape[1], input_shape[2]
    rows, cols = -(-height // stride), -(-width // stride)
    dy = _window(dy, 1, start_h, rows + len(taps_h) - 1)
    dy = _window(dy, 2, start_w, cols + len(taps_w) - 1)
    dx = tf.nn.conv2d(dy, phase_kernel, 1, "VALID")
    if stride > 1:
        dx = tf.nn.depth_to_space(dx, stride)
    if stride * rows != height or stride * cols != width:
        dx = dx[:, :height, :width, :]
    return dx


def _explicit(padding):
    return [[0, 0], [padding, padding], [padding, padding], [0, 0]]


def _conv_fast_dx(x, kernel, stride, padding):
    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):
            dx = _input_gradient(dy, kernel, stride, padding, x.shape)
            dk = tf.raw_ops.Conv2DBackpropFilter(
                input=x, filter_sizes=tf.shape(kernel), out_backprop=dy,
                strides=[1, stride, stride, 1], padding="EXPLICIT",
                explicit_paddings=sum(_explicit(padding), []))
            return dx, dk

        return tf.nn.conv2d(x, kernel, stride, _explicit(padding)), grad

    return conv(x, kernel)


@keras.saving.register_keras_serializable(package="repopt_tf")
class FastGradConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` with `zero_padding` and a fast CPU input gradient.

    Args:
        zero_padding: zeros added on every side of the input before a
            `padding="valid"` convolution (see the module docstring).
        Others: as `keras.layers.Conv2D`.
    """

    def __init__(self, *args, zero_padding=0, **kwargs):
        super().__init__(*args, **kwargs)
        self.zero_padding = int(zero_padding)
        if self.zero_padding < 0:
            raise ValueError(f"zero_padding must be >= 0, got {zero_padding}.")
        if self.zero_padding and (self.padding != "valid"
                                  or self.data_format != "channels_last"):
            raise ValueError("zero_padding needs padding='valid' and "
                             "data_format='channels_last'.")

    def _padded_shape(self, input_shape):
        grow = 2 * self.zero_padding
        return (input_shape[0], *(None if d is None else d + grow
                                  for d in input_shape[1:3]), input_shape[3])

    def build(self, input_shape):
        super().build(self._padded_shape(input_shape))

    def compute_output_shape(self, input_shape):
        return super().compute_output_shape(self._padded_shape(input_shape))

    def convolution_op(self, inputs, kernel):
        strides = tuple(self.strides)
        if (strides[0] == strides[1] and self.padding == "valid"
                and tuple(self.dilation_rate) == (1, 1)
                and self.data_format == "channels_last"
                and keras.backend.backend() == "tensorflow"
                and None not in inputs.shape[1:]
                and not tf.config.list_logical_devices("GPU")):
            return _conv_fast_dx(inputs, tf.convert_to_tensor(kernel),
                                 strides[0], self.zero_padding)
        if self.zero_padding:
            inputs = keras.ops.pad(inputs, _explicit(self.zero_padding))
        return super().convolution_op(inputs, kernel)

    def get_config(self):
        return {**super().get_config(), "zero_padding": self.zero_padding}
