"""Every private Keras / TensorFlow API that multirate training uses.

Multirate needs three things the public APIs do not offer; each is wrapped
here, with why, so that a Keras or TF upgrade is checked in one place
(tests/test_multirate.py exercises all of them, also under MirroredStrategy).
"""

import tensorflow as tf
from keras.src.losses.loss import unscale_loss_for_distribution
from keras.src.trainers.data_adapters.data_adapter_utils import (
    unpack_x_y_sample_weight,
)
from keras.src.utils.tracking import no_automatic_dependency_tracking

__all__ = [
    "merge_call",
    "no_automatic_dependency_tracking",
    "track_loss",
    "unpack_x_y_sample_weight",
]

# `no_automatic_dependency_tracking`: `MultirateOptimizer.build` keeps the
# slow and fast variable lists as plain Python lists; Keras's tracking
# would otherwise wrap them and treat the model's variables as the
# optimizer's own.
#
# `unpack_x_y_sample_weight`: `MultirateModel.multirate_step` replaces
# `train_step` and unpacks batches exactly as Keras's own step does.


def track_loss(model, loss, x):
    """Updates `model`'s loss metric as Keras's `train_step` does: the loss
    unscaled for the distribution strategy, weighted by the batch size
    (`keras.src.losses.loss.unscale_loss_for_distribution`)."""
    model._loss_tracker.update_state(
        unscale_loss_for_distribution(loss),
        sample_weight=tf.shape(tf.nest.flatten(x)[0])[0],
    )


def merge_call(function, strategy, *args):
    """Runs `function(distribution, *args)` in cross-replica context: the
    slow variables' update, like Keras's own optimizer update under
    `tf.distribute` (`tf.__internal__.distribute.interim.maybe_merge_call`)."""
    return tf.__internal__.distribute.interim.maybe_merge_call(
        function, strategy, *args
    )
