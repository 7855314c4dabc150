"""Multirate training (Vlaar & Leimkuhler, ICML 2022, Algorithm 1).

Parameters are split into a fast set theta_F and a slow set theta_S. With
slow step h, fast step h/k and momentum mu, each block of k training steps
does (PyTorch-style momentum buffers p)::

    step 0 of the block (slow step): p_S = mu * p_S + grad_S(theta)
        without linear drift:        theta_S -= h * p_S
    every step of the block:         theta_F  = base_optimizer(theta_F, grad_F)
        with linear drift:           theta_S -= (h / k) * p_S   (stale p_S)

so theta_S moves by h * p_S per block either way and its gradient is
computed once per block. `MultirateOptimizer` holds the base optimizer (for
theta_F; its learning rate is the fast step h/k), the slow momentum slots and
the schedule; `MultirateModel` makes the saving real by asking the gradient
tape only for theta_F on fast steps, with two compiled step functions chosen
in Python (`k = 1` is the base optimizer on all variables, up to momentum
form).
"""

import re

import keras
import tensorflow as tf
from keras import ops

from repopt_tf.multirate.keras_internals import merge_call
from repopt_tf.multirate.keras_internals import no_automatic_dependency_tracking


@keras.saving.register_keras_serializable(package="repopt_tf")
class MultirateOptimizer(keras.optimizers.Optimizer):
    """Wraps `base_optimizer` (fast set) and updates the slow set every k steps.

    Args:
        base_optimizer: e.g. `keras.optimizers.SGD(h / k, momentum=0.9)` or
            `RepOptSGD`; it updates the fast variables every step, and its
            learning rate is the fast step size h/k.
        k: slow period (int >= 1); the slow step size is h = k * (h/k).
        slow_variables: regex matched (`re.search`) against `variable.path`,
            or a list of variables / paths: the slow set.
        momentum: slow momentum mu; defaults to the base optimizer's.
        linear_drift: spread the slow move over the block (Algorithm 1).
    """

    def __init__(
        self,
        base_optimizer,
        k,
        slow_variables,
        momentum=None,
        linear_drift=True,
        name="multirate",
        **kwargs,
    ):
        super().__init__(learning_rate=0.0, name=name, **kwargs)
        if isinstance(base_optimizer, dict):
            base_optimizer = keras.optimizers.deserialize(base_optimizer)
        if not isinstance(base_optimizer, keras.optimizers.Optimizer):
            raise ValueError(
                "base_optimizer must be a Keras optimizer, got "
                f"{type(base_optimizer).__name__}."
            )
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}.")
        if isinstance(slow_variables, (list, tuple)):
            slow_variables = [getattr(v, "path", v) for v in slow_variables]
        elif not isinstance(slow_variables, str):
            raise ValueError(
                "slow_variables must be a regex or a list of "
                f"variables/paths, got {slow_variables!r}."
            )
        momentum = (
            getattr(base_optimizer, "momentum", 0.9)
            if momentum is None
            else momentum
        )
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
        self.base_optimizer = base_optimizer
        self.k = k
        self.slow_variables_spec = slow_variables
        self.momentum = float(momentum)
        self.linear_drift = bool(linear_drift)

    def _is_slow(self, variable):
        if isinstance(self.slow_variables_spec, str):
            return (
                re.search(self.slow_variables_spec, variable.path) is not None
            )
        return variable.path in self.slow_variables_spec

    @no_automatic_dependency_tracking
    def build(self, variables):
        if self.built:
            return
        self.slow_set = [v for v in variables if self._is_slow(v)]
        self.fast_set = [v for v in variables if not self._is_slow(v)]
        if not self.slow_set or not self.fast_set:
            raise ValueError(
                f"slow_variables {self.slow_variables_spec!r} must select some "
                f"but not all of the {len(variables)} trainable variables "
                f"(selected {len(self.slow_set)})."
            )
        self.base_optimizer.build(self.fast_set)
        super().build(variables)
        self.slow_momentums = [
            self.add_variable_from_reference(v, "slow_momentum")
            for v in self.slow_set
        ]

    @property
    def variables(self):
        return self._variables + self.base_optimizer.variables

    @property
    def fast_learning_rate(self):
        """h / k: the base optimizer's current learning rate."""
        return self.base_optimizer.learning_rate

    @property
    def slow_learning_rate(self):
        """h = k * (h / k)."""
        return self.k * self.fast_learning_rate

    def _get_current_learning_rate(self):
        return self.slow_learning_rate

    def is_slow_step(self):
        """Whether the next step starts a block (read eagerly, in Python)."""
        return int(ops.convert_to_numpy(self.iterations)) % self.k == 0

    def apply_multirate(self, fast_grads, slow_grads=None):
        """One step: `slow_grads` (for `slow_set`) only on slow steps."""
        if slow_grads is not None:
            self._update_slow(
                self._all_reduce(slow_grads), move=not self.linear_drift
            )
        self.base_optimizer.apply(fast_grads, self.fast_set)
        if self.linear_drift:
            self._update_slow(None, move=True)
        self._iterations.assign_add(1)

    def _all_reduce(self, grads):
        context = tf.distribute.get_replica_context()
        if (
            context is None
            or self._distribution_strategy.num_replicas_in_sync == 1
        ):
            return grads
        return context.all_reduce(tf.distribute.ReduceOp.SUM, grads)

    def _update_slow(self, grads, move):
        """Momentum update from `grads` (if given) and/or a move along p_S."""
        step = (
            self.fast_learning_rate
            if grads is None
            else self.slow_learning_rate
        )
        mu = self.momentum

        def update(variable, buffer, grad):
            if grad is not None:
                buffer.assign(mu * buffer + tf.cast(grad, buffer.dtype))
            if move:
                variable.assign_sub(tf.cast(step, variable.dtype) * buffer)

        def merge(distribution, grads):
            for index, variable in enumerate(self.slow_set):
                grad = None if grads is None else grads[index]
                distribution.extended.update(
                    variable.value,
                    update,
                    args=(self.slow_momentums[index].value, grad),
                    group=False,
                )

        merge_call(merge, self._distribution_strategy, grads)

    def get_config(self):
        return {
            "name": self.name,
            "base_optimizer": keras.optimizers.serialize(self.base_optimizer),
            "k": self.k,
            "slow_variables": self.slow_variables_spec,
            "momentum": self.momentum,
            "linear_drift": self.linear_drift,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)
