"""BatchNormalization whose training step runs TF's fused kernel on TF.

Keras 3's `BatchNormalization` computes a training step from separate ops
(moments, subtract, multiply, ...): on a CPU their forward and backward took
about a fifth of a RepOpt-VGG-S step (docs/results.md). `FastBatchNorm` is
the same layer, with the same variables and maths: in training,

    y = gamma * (x - mean_B) / sqrt(var_B + epsilon) + beta
    moving = momentum * moving + (1 - momentum) * batch statistic

with `var_B` the batch's biased variance, as Keras; on the TensorFlow
backend, a 4-D NHWC input runs `FusedBatchNormV3` (one kernel forward, one
backward; `repopt_tf.models.tf_fused_norm`). Other backends (XLA fuses the
ops itself), inference, masked or renormalised calls and other shapes take
Keras's own path, which is also what TFLite converts.
"""

import keras


@keras.saving.register_keras_serializable(package="repopt_tf")
class FastBatchNorm(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with a fused training step on TF."""

    def call(self, inputs, training=None, mask=None):
        if not (
            training
            and keras.backend.backend() == "tensorflow"
            and self.trainable
            and mask is None
            and not self.renorm
            and self.scale
            and self.center
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
        ):
            return super().call(inputs, training=training, mask=mask)
        from repopt_tf.models.tf_fused_norm import fused_training_step

        return fused_training_step(self, inputs)
