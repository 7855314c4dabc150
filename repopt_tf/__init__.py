"""repopt-tf: RepOptimizers for Keras 3 and int8 TFLite export.

Importing the package has no side effects (no environment variables, no
device configuration, no TF logging changes).
"""

from repopt_tf.optimizers import RepOptAdamW
from repopt_tf.optimizers import RepOptSGD
from repopt_tf.optimizers import grad_mult
from repopt_tf.optimizers import grad_mults_for_model

__version__ = "0.1.0"

__all__ = [
    "RepOptAdamW",
    "RepOptSGD",
    "grad_mult",
    "grad_mults_for_model",
]
