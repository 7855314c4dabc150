"""Training pieces shared by train.py: strategy, callbacks, recipe, runner
(tf.data and tf.distribute: needs TensorFlow)."""

from repopt_tf.backend import require_tensorflow

require_tensorflow("repopt_tf.training (tf.data, tf.distribute)")

from repopt_tf.training.callbacks import TrainingDiverged
from repopt_tf.training.runner import Experiment
from repopt_tf.training.runner import results_table
from repopt_tf.training.strategy import STRATEGIES
from repopt_tf.training.strategy import get_strategy
from repopt_tf.training.strategy import split_cpu
from repopt_tf.training.validation import MODES

__all__ = [
    "MODES",
    "STRATEGIES",
    "Experiment",
    "TrainingDiverged",
    "get_strategy",
    "results_table",
    "split_cpu",
]
