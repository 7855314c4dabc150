"""Multirate training (Vlaar & Leimkuhler, ICML 2022): fast and slow
parameter groups on two time scales (`optimizer.py` has the update rule).
Its step differentiates only the fast set with a TF gradient tape: it runs on
Keras's TensorFlow backend."""

from repopt_tf.backend import require_tensorflow

require_tensorflow("Multirate training (repopt_tf.multirate)", backend_too=True)

from repopt_tf.multirate.model import MultirateModel
from repopt_tf.multirate.optimizer import MultirateOptimizer
from repopt_tf.multirate.random_subset import RandomSubsetMultirate

__all__ = ["MultirateModel", "MultirateOptimizer", "RandomSubsetMultirate"]
