"""BatchNormalization whose training step runs TF's fused kernel.

Keras 3's `BatchNormalization` computes a training step from separate ops
(moments, subtract, multiply, ...): on a CPU their forward and backward took
about a fifth of a RepOpt-VGG-S step (docs/results.md). `FastBatchNorm` is
the same layer, with the same variables and maths: in training,

    y = gamma * (x - mean_B) / sqrt(var_B + epsilon) + beta
    moving = momentum * moving + (1 - momentum) * batch statistic

with `var_B` the batch's biased variance, as Keras; but on a 4-D NHWC input
it runs `FusedBatchNormV3` (one kernel forward, one backward; the op returns
the unbiased variance, which is converted back). Inference, masked or
renormalised calls and other shapes take Keras's own path, which is also
what TFLite converts.
"""

import keras
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="repopt_tf")
class FastBatchNorm(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with a fused training step."""

    def call(self, inputs, training=None, mask=None):
        if not (
            training
            and self.trainable
            and mask is None
            and not self.renorm
            and self.scale
            and self.center
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
        ):
            return super().call(inputs, training=training, mask=mask)
        empty = tf.constant([], tf.float32)
        outputs, mean, unbiased, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs,
            scale=ops.cast(self.gamma, "float32"),
            offset=ops.cast(self.beta, "float32"),
            mean=empty,
            variance=empty,
            epsilon=self.epsilon,
            exponential_avg_factor=1.0,
            data_format="NHWC",
            is_training=True,
        )
        count = ops.cast(ops.size(inputs) // ops.shape(inputs)[-1], "float32")
        variance = unbiased * (count - 1.0) / ops.maximum(count, 1.0)
        self.moving_mean.assign(
            self.moving_mean * self.momentum + mean * (1.0 - self.momentum)
        )
        self.moving_variance.assign(
            self.moving_variance * self.momentum
            + variance * (1.0 - self.momentum)
        )
        return ops.cast(outputs, self.compute_dtype)
