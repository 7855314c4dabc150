"""RepOptAdamW: AdamW with Grad Mults, the rule of the official RepOpt code."""

import keras
from keras import ops

from repopt_tf.optimizers.mult_state import GradMultMixin
from repopt_tf.optimizers.mult_state import auto_name


@keras.saving.register_keras_serializable(package="repopt_tf")
class RepOptAdamW(GradMultMixin, keras.optimizers.AdamW):
    """AdamW with power-1 Grad Mults, the update of the official code.

    With mult `M` (`M = 1` for variables without one), step `t` and the
    official (PyTorch) epsilon form::

        w = w * (1 - learning_rate * weight_decay)  # decoupled
        g = g * M                                   # before the moments
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g**2
        m_hat = m / (1 - beta_1**t);  v_hat = v / (1 - beta_2**t)
        w = w - learning_rate * (m_hat * M) / (sqrt(v_hat) + epsilon)

    Build `M` with `grad_mult(..., power=1)`. The net step is about
    `|M| * m_hat / sqrt(v_hat)`, so it is only *approximately* equivalent to
    training the CSLA block with AdamW (exact when each position's branch
    scales share a sign; measured gap 2e-5 relative after 30 steps). With
    mixed-sign scales (the released files have a few) the gap is as large as
    the update itself: pass `abs(scales)` when building the mults.

    Where it deliberately differs from `keras.optimizers.AdamW` (with no
    mults and default arguments it is otherwise the same): epsilon is added
    to `sqrt(v_hat)`, as in PyTorch and the official code, where Keras adds
    it to `sqrt(v)` (a difference of order `epsilon`); gradient clipping
    (`clipnorm`, `clipvalue`, `global_clipnorm`) is refused while any
    variable has a mult, as it breaks the equivalence.

    Args:
        learning_rate: float >= 0 or a `LearningRateSchedule`.
        weight_decay: decoupled decay coefficient.
        grad_mults: dict `{variable.path: array}`.
        name: default `repopt_adamw`, `repopt_adamw_1`, ... as Keras names.
        decay_vectors: decay 1-D variables (biases, BN, scales) too, as
            Keras does (default); False decays only kernels (ndim >= 2) and
            the RPG ring, as the reference training scripts do.
        **kwargs: the other `keras.optimizers.AdamW` arguments.

    Returns:
        A Keras optimizer, for `model.compile(optimizer=...)`.

    Raises:
        ValueError: as `RepOptSGD` (a mult's shape, variable or values).

    Examples:
        >>> import keras, numpy as np
        >>> from repopt_tf import RepOptAdamW
        >>> w = keras.Variable(np.ones((2, 2), np.float32), name="kernel")
        >>> opt = RepOptAdamW(0.1, grad_mults={w.path: np.full((2, 2), 2.0)})
        >>> _ = opt.apply_gradients([(np.ones((2, 2), np.float32), w)])
        >>> round(float(w.numpy()[0, 0]), 4)  # decay 4e-4, step 0.1 * 2
        0.7996

    References:
        Ding et al., 2023, https://arxiv.org/abs/2205.15242;
        the official code, https://github.com/DingXiaoH/RepOptimizers
        (`repoptimizer/repoptimizer_adamw.py`).
    """

    _clip_advice = "."

    def __init__(
        self,
        learning_rate=0.001,
        weight_decay=0.004,
        grad_mults=None,
        name=None,
        decay_vectors=True,
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            name=name or auto_name("repopt_adamw"),
            **kwargs,
        )
        self._init_grad_mults(
            grad_mults, learning_rate, weight_decay, decay_vectors
        )
        if self.global_clipnorm is not None and self.grad_mults:
            raise ValueError(
                "`global_clipnorm` breaks the CSLA equivalence of RepOptAdamW "
                "(Ding et al., §3.2) where a variable has a Grad Mult; leave "
                "it None."
            )

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        learning_rate = ops.cast(learning_rate, dtype)
        gradient = self._multiply(gradient, variable)
        local_step = ops.cast(self.iterations + 1, dtype)
        correction_1 = 1 - ops.power(ops.cast(self.beta_1, dtype), local_step)
        correction_2 = 1 - ops.power(ops.cast(self.beta_2, dtype), local_step)
        m = self._momentums[index]
        v = self._velocities[index]
        new_m = m + (gradient - m) * (1 - self.beta_1)
        new_v = v + (ops.square(gradient) - v) * (1 - self.beta_2)
        self.assign(m, new_m)
        self.assign(v, new_v)
        if self.amsgrad:
            v_hat = self._velocity_hats[index]
            new_v = ops.maximum(v_hat, new_v)
            self.assign(v_hat, new_v)
        denominator = ops.sqrt(new_v / correction_2) + self.epsilon
        step = self._scale(new_m, variable) / correction_1 / denominator
        self.assign_sub(variable, learning_rate * step)

    def get_config(self):
        return {**super().get_config(), **self._grad_mults_config()}
