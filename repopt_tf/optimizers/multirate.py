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

import functools
import re

import keras
import tensorflow as tf
from keras import ops
from keras.src.trainers.data_adapters import data_adapter_utils


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

    def __init__(self, base_optimizer, k, slow_variables, momentum=None,
                 linear_drift=True, name="multirate", **kwargs):
        super().__init__(learning_rate=0.0, name=name, **kwargs)
        if isinstance(base_optimizer, dict):
            base_optimizer = keras.optimizers.deserialize(base_optimizer)
        if not isinstance(base_optimizer, keras.optimizers.Optimizer):
            raise ValueError("base_optimizer must be a Keras optimizer, got "
                             f"{type(base_optimizer).__name__}.")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}.")
        if isinstance(slow_variables, (list, tuple)):
            slow_variables = [getattr(v, "path", v) for v in slow_variables]
        elif not isinstance(slow_variables, str):
            raise ValueError("slow_variables must be a regex or a list of "
                             f"variables/paths, got {slow_variables!r}.")
        momentum = getattr(base_optimizer, "momentum", 0.9) if momentum is None \
            else momentum
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
        self.base_optimizer = base_optimizer
        self.k = k
        self.slow_variables_spec = slow_variables
        self.momentum = float(momentum)
        self.linear_drift = bool(linear_drift)

    def _is_slow(self, variable):
        if isinstance(self.slow_variables_spec, str):
            return re.search(self.slow_variables_spec, variable.path) is not None
        return variable.path in self.slow_variables_spec

    @keras.src.utils.tracking.no_automatic_dependency_tracking
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
            self._update_slow(self._all_reduce(slow_grads), move=not self.linear_drift)
        self.base_optimizer.apply(fast_grads, self.fast_set)
        if self.linear_drift:
            self._update_slow(None, move=True)
        self._iterations.assign_add(1)

    def _all_reduce(self, grads):
        context = tf.distribute.get_replica_context()
        if context is None or self._distribution_strategy.num_replicas_in_sync == 1:
            return grads
        return context.all_reduce(tf.distribute.ReduceOp.SUM, grads)

    def _update_slow(self, grads, move):
        """Momentum update from `grads` (if given) and/or a move along p_S."""
        step = self.fast_learning_rate if grads is None else self.slow_learning_rate
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
                    variable.value, update,
                    args=(self.slow_momentums[index].value, grad), group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(
            merge, self._distribution_strategy, grads)

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


@keras.saving.register_keras_serializable(package="repopt_tf")
class MultirateModel(keras.Model):
    """A functional model trained by `MultirateOptimizer` with real savings.

    `MultirateModel(model.inputs, model.outputs)` wraps any functional model
    (sharing its layers). Compile it with a `MultirateOptimizer`; `fit` then
    runs a compiled *slow* step (gradients for all variables) at the start of
    each block of k steps and a compiled *fast* step (gradients for the fast
    set only, so the slow part's backward pass is not computed) otherwise.
    `steps_per_execution` must be 1.
    """

    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function
        if not isinstance(self.optimizer, MultirateOptimizer):
            raise ValueError("MultirateModel must be compiled with a "
                             "MultirateOptimizer.")
        if self.steps_per_execution != 1:
            raise ValueError("MultirateModel needs steps_per_execution=1.")
        if not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)
        slow = self._make_function(functools.partial(self.multirate_step, slow=True))
        fast = self._make_function(functools.partial(self.multirate_step, slow=False))

        def function(iterator):
            return (slow if self.optimizer.is_slow_step() else fast)(iterator)

        self.train_function = function
        return function

    def multirate_step(self, data, slow):
        """`train_step` that differentiates only what this step updates."""
        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        optimizer = self.optimizer
        targets = optimizer.fast_set + (optimizer.slow_set if slow else [])
        # Watch only what this step updates: a tape that watched every
        # variable it saw would record, and backprop through, the slow part.
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch([v.value for v in targets])
            y_pred = self(x, training=True)
            loss = self._compute_loss(x=x, y=y, y_pred=y_pred,
                                      sample_weight=sample_weight, training=True)
            self._loss_tracker.update_state(
                keras.src.losses.loss.unscale_loss_for_distribution(loss),
                sample_weight=tf.shape(tf.nest.flatten(x)[0])[0],
            )
            loss = optimizer.scale_loss(loss)
        grads = tape.gradient(loss, targets)
        count = len(optimizer.fast_set)
        optimizer.apply_multirate(grads[:count], grads[count:] if slow else None)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


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

    def __init__(self, learning_rate=0.01, k=5, slow_fraction=0.5, momentum=0.9,
                 linear_drift=True, seed=0, name="random_subset_multirate",
                 **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}.")
        if not 0 <= slow_fraction <= 1:
            raise ValueError(f"slow_fraction must be in [0, 1], got {slow_fraction}.")
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
            variables, ["fast_momentum", "slow_momentum"])

    def slow_mask(self, variable, step):
        """1.0 where `variable` is slow during the block of `step`."""
        index = self._get_variable_index(variable)
        block = ops.cast(step // self.k, "int32")
        draw = tf.random.stateless_uniform(
            variable.shape, seed=tf.stack([self.seed + index, block]))
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
            new_slow = refresh * (mu * p_slow + gradient) + (1 - refresh) * p_slow
            self.assign(p_slow, new_slow)
            slow_step = fast_lr if self.linear_drift else (
                fast_lr * self.k * block_start)
            self.assign_sub(variable, (1 - mask) * fast_lr * new_fast
                            + mask * slow_step * new_slow)

    def get_config(self):
        config = super().get_config()
        config.update({"k": self.k, "slow_fraction": self.slow_fraction,
                       "momentum": self.momentum, "linear_drift": self.linear_drift,
                       "seed": self.seed})
        return config
