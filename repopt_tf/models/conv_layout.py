"""Conv kernel layouts: Keras's `Conv2D` kernel is `(k, k, Cin per group,
Cout)`, `DepthwiseConv2D`'s `(k, k, C, multiplier)`; the CSLA maths of
`repopt_tf.csla` works in the first, so depthwise kernels are reshaped to
`(k, k, 1, C * multiplier)` and back."""

import keras
import numpy as np

from repopt_tf.backend import to_numpy


def conv_geometry(layer):
    """`(in_channels per group, out_channels, groups)` of a built `Conv2D`
    or `DepthwiseConv2D`."""
    kernel_shape = tuple(layer.kernel.shape)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        channels, multiplier = kernel_shape[2:]
        return 1, channels * multiplier, channels
    return kernel_shape[2], kernel_shape[3], layer.groups


def grouped_layout(layer, kernel):
    """`kernel` of `layer` in the `(k, k, Cin per group, Cout)` layout of
    `repopt_tf.csla` (a depthwise `(k, k, C, m)` becomes `(k, k, 1, C*m)`)."""
    kernel = to_numpy(kernel, np.float32)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        size = kernel.shape[0]
        return kernel.reshape(size, size, 1, -1)
    return kernel


def variable_layout(layer, kernel):
    """Inverse of `grouped_layout`: `kernel` in the shape of `layer.kernel`."""
    return np.asarray(kernel, np.float32).reshape(tuple(layer.kernel.shape))
