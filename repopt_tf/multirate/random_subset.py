"""`RandomSubsetMultirate`: multirate as a regulariser (random slow subset)."""

import keras
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="repopt_tf")
class RandomSubsetMultirate(keras.optimizers.Optimizer):
    """Multirate with a random slow subset re-drawn every k steps.

    The regularisation variant (Vlaar & Leimkuhler, ICML 2022): every
    block of k steps draws, for every weight, whether it is slow (probability
    `slow_fraction`), from a stateless seed `(seed, block)`. With momentum
    SGD in PyTorch form, fast step h/k and slow step h::

        fast entries, every step:   p_F = mu * p_F + g;   w -= (h / k) * p_F
        slow entries, block start:  p_S = mu * p_S + g
        slow entries:               w -= (h / k) * p_S every step (linear
                                    drift) or w -= h * p_S at block start

    All weights' gradients are computed every step (the subset changes with
    every block), so this variant regularises rather than saves time; use
    `MultirateModel` for the saving. With `slow_fraction=0` it is momentum SGD.
    """

    def __init__(
        self,
        learning_rate=0.01,
        k=5,
        slow_fraction=0.5,
        momentum=0.9,
        linear_drift=True,
        seed=0,
        name="random_subset_multirate",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}.")
        if not 0 <= slow_fraction <= 1:
            raise ValueError(
                f"slow_fraction must be in [0, 1], got {slow_fraction}."
            )
        self.k = k
        self.slow_fraction = float(slow_fraction)
        self.momentum = float(momentum)
        self.linear_drift = bool(linear_drift)
        self.seed = int(seed)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.fast_momentums, self.slow_momentums = self.add_optimizer_variables(
            variables, ["fast_momentum", "slow_momentum"]
        )

    def slow_mask(self, variable, step):
        """1.0 where `variable` is slow during the block of `step`."""
        index = self._get_variable_index(variable)
        block = ops.cast(step // self.k, "int32")
        draw = tf.random.stateless_uniform(
            variable.shape, seed=tf.stack([self.seed + index, block])
        )
        return ops.cast(draw < self.slow_fraction, variable.dtype)

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        fast_lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        mu = ops.cast(self.momentum, dtype)
        # Not before the gradient exists: TF would draw the mask and form the
        # momentum products at the start of the step and hold them through
        # the backward pass, where the step's memory peaks.
        with tf.control_dependencies([gradient]):
            mask = self.slow_mask(variable, self.iterations)
            block_start = ops.cast(self.iterations % self.k == 0, dtype)
            p_fast = self.fast_momentums[index]
            p_slow = self.slow_momentums[index]
            new_fast = mu * p_fast + gradient
            self.assign(p_fast, mask * p_fast + (1 - mask) * new_fast)
            refresh = mask * block_start
            new_slow = (
                refresh * (mu * p_slow + gradient) + (1 - refresh) * p_slow
            )
            self.assign(p_slow, new_slow)
            slow_step = (
                fast_lr
                if self.linear_drift
                else (fast_lr * self.k * block_start)
            )
            self.assign_sub(
                variable,
                (1 - mask) * fast_lr * new_fast + mask * slow_step * new_slow,
            )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "k": self.k,
                "slow_fraction": self.slow_fraction,
                "momentum": self.momentum,
                "linear_drift": self.linear_drift,
                "seed": self.seed,
            }
        )
        return config
