"""Keeps the gradient-free part of an optimizer update out of the forward pass.

TF runs an op as soon as its inputs exist. In a training step, the parts of
an update that do not need the gradient, such as `weight_decay * w` or
`momentum * buf`, would run at the start of the step and hold a
variable-sized buffer each through the whole forward and backward pass,
where the step's memory peaks.
"""

import contextlib

import keras


def after_gradient(gradient):
    """Context whose new ops wait for `gradient` (TF graphs; else a no-op)."""
    if keras.backend.backend() != "tensorflow":
        return contextlib.nullcontext()
    import tensorflow as tf

    return tf.control_dependencies([gradient])
