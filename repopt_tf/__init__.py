"""repopt-tf: RepOptimizers for Keras 3 and int8 TFLite export.

Importing the package registers its Keras objects (layers, optimizers,
models), so `keras.models.load_model` reads every file the library writes;
it changes no environment variable, device setting or TF logging.
"""

from repopt_tf.checkpoints import load_weights
from repopt_tf.models import build_model
from repopt_tf.models import list_models
from repopt_tf.optimizers import RepOptAdamW
from repopt_tf.optimizers import RepOptSGD
from repopt_tf.optimizers import grad_mult
from repopt_tf.optimizers import grad_mults_for_model
from repopt_tf.optimizers import multirate  # noqa: F401  (registers its objects)
from repopt_tf.scales import load_scales

__version__ = "0.1.0"

__all__ = [
    "RepOptAdamW",
    "RepOptSGD",
    "build_model",
    "grad_mult",
    "grad_mults_for_model",
    "list_models",
    "load_scales",
    "load_weights",
]
