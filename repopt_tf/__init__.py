"""repopt-tf: RepOptimizers for Keras 3 and int8 TFLite export.

Importing the package registers its Keras objects (layers, optimizers,
models), so `keras.models.load_model` reads every file the library writes;
it changes no environment variable, device setting or TF logging (the
command-line tools alone start TF quietly: `repopt_tf.quiet`). It runs on
every Keras 3 backend (`KERAS_BACKEND=jax`, `torch`, `tensorflow`) and
needs TensorFlow only on the TF backend (`repopt_tf.backend`).
"""

from repopt_tf.quiet import import_tensorflow

import_tensorflow()  # quiet only for the command-line tools (repopt_tf.quiet)

import keras  # noqa: E402

if keras.backend.backend() == "tensorflow":
    from repopt_tf import multirate  # noqa: F401  (registers its objects)

from repopt_tf.checkpoints import load_weights  # noqa: E402
from repopt_tf.models import build_model  # noqa: E402
from repopt_tf.models import csla_form  # noqa: E402
from repopt_tf.models import extract_scales  # noqa: E402
from repopt_tf.models import fuse_repvgg  # noqa: E402
from repopt_tf.models import list_models  # noqa: E402
from repopt_tf.models import register_family  # noqa: E402
from repopt_tf.models import reinitialize  # noqa: E402
from repopt_tf.optimizers import RepOptAdamW  # noqa: E402
from repopt_tf.optimizers import RepOptSGD  # noqa: E402
from repopt_tf.optimizers import grad_mult  # noqa: E402
from repopt_tf.optimizers import grad_mults_for_model  # noqa: E402
from repopt_tf.scales import load_scales  # noqa: E402
from repopt_tf.scales import save_scales  # noqa: E402

__version__ = "0.1.0"

# The top tier: what a user needs (docs/api.md). `export_model` and
# `deploy_check` need TensorFlow and load on first use.
__all__ = [
    "RepOptAdamW",
    "RepOptSGD",
    "build_model",
    "csla_form",
    "deploy_check",
    "export_model",
    "extract_scales",
    "fuse_repvgg",
    "grad_mult",
    "grad_mults_for_model",
    "list_models",
    "load_scales",
    "load_weights",
    "register_family",
    "reinitialize",
    "save_scales",
]
_ON_FIRST_USE = ("deploy_check", "export_model")


def __getattr__(name):
    """`export_model` and `deploy_check` from `repopt_tf.export`, imported
    when first asked for (they need TensorFlow)."""
    if name not in _ON_FIRST_USE:
        raise AttributeError(f"module 'repopt_tf' has no attribute {name!r}")
    from repopt_tf import export

    return getattr(export, name)
