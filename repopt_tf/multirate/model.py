"""`MultirateModel`: the fit loop that skips the slow part's backward pass."""

import functools

import keras
import tensorflow as tf

from repopt_tf.multirate.keras_internals import track_loss
from repopt_tf.multirate.keras_internals import unpack_x_y_sample_weight
from repopt_tf.multirate.optimizer import MultirateOptimizer


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
            raise ValueError(
                "MultirateModel must be compiled with a MultirateOptimizer."
            )
        if self.steps_per_execution != 1:
            raise ValueError("MultirateModel needs steps_per_execution=1.")
        if not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)
        slow = self._make_function(
            functools.partial(self.multirate_step, slow=True)
        )
        fast = self._make_function(
            functools.partial(self.multirate_step, slow=False)
        )

        def function(iterator):
            return (slow if self.optimizer.is_slow_step() else fast)(iterator)

        self.train_function = function
        return function

    def multirate_step(self, data, slow):
        """`train_step` that differentiates only what this step updates."""
        x, y, sample_weight = unpack_x_y_sample_weight(data)
        optimizer = self.optimizer
        targets = optimizer.fast_set + (optimizer.slow_set if slow else [])
        # Watch only what this step updates: a tape that watched every
        # variable it saw would record, and backprop through, the slow part.
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch([v.value for v in targets])
            y_pred = self(x, training=True)
            loss = self._compute_loss(
                x=x,
                y=y,
                y_pred=y_pred,
                sample_weight=sample_weight,
                training=True,
            )
            track_loss(self, loss, x)
            loss = optimizer.scale_loss(loss)
        grads = tape.gradient(loss, targets)
        count = len(optimizer.fast_set)
        optimizer.apply_multirate(
            grads[:count], grads[count:] if slow else None
        )
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
