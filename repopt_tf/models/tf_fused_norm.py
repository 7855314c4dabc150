"""TensorFlow's fused batch-norm training step for `FastBatchNorm`.

Imported only on the TensorFlow backend (`repopt_tf.models.fast_norm`).
"""

import tensorflow as tf
from keras import ops


def fused_training_step(layer, inputs):
    """`layer`'s training output for NHWC `inputs` by `FusedBatchNormV3`,
    with the moving statistics updated as Keras does (the op returns the
    unbiased variance, converted back to the biased one Keras keeps)."""
    empty = tf.constant([], tf.float32)
    outputs, mean, unbiased, *_ = tf.raw_ops.FusedBatchNormV3(
        x=inputs,
        scale=ops.cast(layer.gamma, "float32"),
        offset=ops.cast(layer.beta, "float32"),
        mean=empty,
        variance=empty,
        epsilon=layer.epsilon,
        exponential_avg_factor=1.0,
        data_format="NHWC",
        is_training=True,
    )
    count = ops.cast(ops.size(inputs) // ops.shape(inputs)[-1], "float32")
    variance = unbiased * (count - 1.0) / ops.maximum(count, 1.0)
    layer.moving_mean.assign(
        layer.moving_mean * layer.momentum + mean * (1.0 - layer.momentum)
    )
    layer.moving_variance.assign(
        layer.moving_variance * layer.momentum
        + variance * (1.0 - layer.momentum)
    )
    return ops.cast(outputs, layer.compute_dtype)
