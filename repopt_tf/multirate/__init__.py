"""Multirate training (Vlaar & Leimkuhler, ICML 2022): fast and slow
parameter groups on two time scales (`optimizer.py` has the update rule)."""

from repopt_tf.multirate.model import MultirateModel
from repopt_tf.multirate.optimizer import MultirateOptimizer
from repopt_tf.multirate.random_subset import RandomSubsetMultirate

__all__ = ["MultirateModel", "MultirateOptimizer", "RandomSubsetMultirate"]
