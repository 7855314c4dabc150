"""Conv2D with built-in symmetric zero padding and fast CPU gradients on TF.

`FastGradConv2D` is `keras.layers.Conv2D` plus `zero_padding`: zeros on
every side of the input (PyTorch's `padding=p`, which keeps a 1x1 branch on
the 3x3 centre tap at stride 2, where Keras's "same" pads one side only).
Forward results equal `ZeroPadding2D(p)` + `Conv2D(padding="valid")` on
every backend, and its weights are a `Conv2D`'s, so a `.keras` file moves
between backends.

On JAX and PyTorch it runs Keras's own `ops.pad` + `ops.conv` (XLA and
cuDNN pick their gradients). On TensorFlow on a CPU it runs the input and
kernel gradients of `repopt_tf.models.tf_conv_gradients`, which are several
times faster than TF's stock CPU kernels on small maps with many channels
(docs/results.md); with the padding inside the op, the input gradient is not
computed for the padding and then dropped, four times the work on 2x2 maps.
TFLite converts it to PAD + CONV_2D.

Which gradients run (`use_fast_gradient`): the fast ones when the backend is
TensorFlow, no GPU is visible, the strides are equal, the padding is
"valid" (plus `zero_padding`), the spatial shapes are static and the conv
is not grouped; otherwise the backend's stock gradients. `set_fast_gradient(
"auto" | True | False)` overrides the device rule process-wide (tests force
both paths on a CPU); the forward pass is the same either way.
"""

import keras
import numpy as np
from keras import ops

_FAST_GRADIENT = "auto"


def set_fast_gradient(mode):
    """`"auto"` (the rule in the module docstring), True or False."""
    global _FAST_GRADIENT
    if mode not in ("auto", True, False):
        raise ValueError(f"mode must be 'auto', True or False, got {mode!r}.")
    _FAST_GRADIENT = mode


def use_fast_gradient(inputs, strides, padding):
    """Whether `fast_grad_conv2d` takes the fast-gradient path (see above)."""
    if keras.backend.backend() != "tensorflow" or _FAST_GRADIENT is False:
        return False
    from repopt_tf.models.tf_conv_gradients import cpu_only

    if _FAST_GRADIENT == "auto" and not cpu_only():
        return False
    return (
        strides[0] == strides[1]
        and padding == "valid"
        and None not in inputs.shape[1:]
    )


def zero_pad(inputs, padding):
    """NHWC `inputs` with `padding` zeros added on every side of H and W."""
    if not padding:
        return inputs
    return ops.pad(inputs, [[0, 0], [padding] * 2, [padding] * 2, [0, 0]])


def fast_grad_conv2d(
    inputs, kernel, strides=(1, 1), padding="valid", zero_padding=0
):
    """NHWC `ops.conv` of `inputs` zero-padded by `zero_padding` on each side,
    with the fast gradients where `use_fast_gradient` says so."""
    strides = tuple(np.broadcast_to(strides, 2).tolist())
    if use_fast_gradient(inputs, strides, padding):
        from repopt_tf.models.tf_conv_gradients import conv_fast_gradients

        return conv_fast_gradients(inputs, kernel, strides[0], zero_padding)
    return ops.conv(
        zero_pad(inputs, zero_padding),
        kernel,
        strides=strides,
        padding=padding,
        data_format="channels_last",
    )


@keras.saving.register_keras_serializable(package="repopt_tf")
class FastGradConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` with `zero_padding` and fast CPU gradients on TF.

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
        if self.zero_padding and (
            self.padding != "valid" or self.data_format != "channels_last"
        ):
            raise ValueError(
                "zero_padding needs padding='valid' and "
                "data_format='channels_last'."
            )

    def _padded_shape(self, input_shape):
        grow = 2 * self.zero_padding
        return (
            input_shape[0],
            *(None if d is None else d + grow for d in input_shape[1:3]),
            input_shape[3],
        )

    def build(self, input_shape):
        super().build(self._padded_shape(input_shape))

    def compute_output_shape(self, input_shape):
        return super().compute_output_shape(self._padded_shape(input_shape))

    def convolution_op(self, inputs, kernel):
        if (
            tuple(self.dilation_rate) == (1, 1)
            and self.groups == 1
            and self.data_format == "channels_last"
        ):
            return fast_grad_conv2d(
                inputs, kernel, self.strides, self.padding, self.zero_padding
            )
        return super().convolution_op(
            zero_pad(inputs, self.zero_padding), kernel
        )

    def get_config(self):
        return {**super().get_config(), "zero_padding": self.zero_padding}
