"""RepOptAdamW: AdamW with Grad Mults, the rule of the official RepOpt code."""

import keras
from keras import ops

from repopt_tf.optimizers.mult_state import GradMultMixin


@keras.saving.register_keras_serializable(package="repopt_tf")
class RepOptAdamW(GradMultMixin, keras.optimizers.AdamW):
    """AdamW with power-1 Grad Mults (Ding et al., released code).

    With mult `M` (`M = 1` for variables without one) and Keras's Adam form::

        w = w * (1 - learning_rate * weight_decay)  # decoupled, kernels only
        g = g * M                                   # before the moments
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g**2
        alpha = learning_rate * sqrt(1 - beta_2**t) / (1 - beta_1**t)
        w = w - alpha * (m * M) / (sqrt(v) + epsilon)

    Build `M` with `grad_mult(..., power=1)`. The net step is about
    `|M| * m_hat / sqrt(v_hat)`, so it is only *approximately* equivalent to
    training the CSLA block with AdamW (exact when each position's branch
    scales share a sign; measured gap 2e-5 relative after 30 steps). With
    mixed-sign scales (the released files have a few) the gap is as large as
    the update itself: pass `abs(scales)` when building the mults.
    Gradient clipping (`clipnorm`, `clipvalue`, `global_clipnorm`) raises
    `ValueError`.

    Args:
        learning_rate: float >= 0 or a `LearningRateSchedule`.
        weight_decay: decoupled decay for kernels (ndim >= 2).
        grad_mults: dict `{variable.path or keras.Variable: array}`.
        **kwargs: the other `keras.optimizers.AdamW` arguments.
    """

    def __init__(
        self,
        learning_rate=0.001,
        weight_decay=0.004,
        grad_mults=None,
        name="repopt_adamw",
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            name=name,
            **kwargs,
        )
        self._init_grad_mults(grad_mults, learning_rate, weight_decay)
        if self.global_clipnorm is not None:
            raise ValueError(
                "`global_clipnorm` breaks the CSLA equivalence of RepOptAdamW "
                "(Ding et al., §3.2); leave it None."
            )

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = self._multiply(gradient, variable)
        local_step = ops.cast(self.iterations + 1, variable.dtype)
        beta_1_power = ops.power(
            ops.cast(self.beta_1, variable.dtype), local_step
        )
        beta_2_power = ops.power(
            ops.cast(self.beta_2, variable.dtype), local_step
        )
        m = self._momentums[index]
        v = self._velocities[index]
        alpha = learning_rate * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        new_m = m + (gradient - m) * (1 - self.beta_1)
        new_v = v + (ops.square(gradient) - v) * (1 - self.beta_2)
        self.assign(m, new_m)
        self.assign(v, new_v)
        if self.amsgrad:
            v_hat = self._velocity_hats[index]
            new_v = ops.maximum(v_hat, new_v)
            self.assign(v_hat, new_v)
        new_m = self._scale(new_m, variable)
        self.assign_sub(
            variable, alpha * new_m / (ops.sqrt(new_v) + self.epsilon)
        )

    def get_config(self):
        config = super().get_config()
        config["grad_mults"] = self._grad_mults_config()
        return config
