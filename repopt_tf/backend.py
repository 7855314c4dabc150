"""Which Keras backend runs, and what the TensorFlow-only parts need.

The training core (optimizers, Grad Mults, CSLA maths, model builders,
re-initialisation, fusion, scale files, checkpoint readers, RPG) is written
in `keras.ops` and numpy and runs on every Keras 3 backend without
TensorFlow installed. TensorFlow serves tf.data (`repopt_tf.data`), the fast
CPU gradients (on the TF backend), `tf.distribute` and the training runner
(`repopt_tf.training`), the TFLite export and deploy check
(`repopt_tf.export`), QAT (`repopt_tf.qat`) and multirate training
(`repopt_tf.multirate`); those packages call `require_tensorflow` when
imported, so a missing TensorFlow is one line naming the fix.
"""

import importlib
import warnings

import keras

INSTALL_HINT = "pip install tensorflow-cpu (or tensorflow, for a GPU)"


class MissingTensorFlowError(ImportError):
    """A TensorFlow-only part was asked for where TF cannot serve it."""


def backend():
    """The Keras backend's name: "tensorflow", "jax", "torch" or "numpy"."""
    return keras.backend.backend()


def require_tensorflow(feature, backend_too=False):
    """Imports and returns `tensorflow` for `feature` (e.g. "the TFLite
    export"), or raises `MissingTensorFlowError` in one line when it is not
    installed or, with `backend_too`, when Keras runs another backend."""
    if backend_too and backend() != "tensorflow":
        raise MissingTensorFlowError(
            f"{feature} runs on Keras's TensorFlow backend only, this process "
            f"runs {backend()}: set KERAS_BACKEND=tensorflow."
        )
    try:
        return importlib.import_module("tensorflow")
    except ImportError:
        raise MissingTensorFlowError(
            f"{feature} needs TensorFlow, which is not installed: "
            f"{INSTALL_HINT}."
        ) from None


def to_numpy(value, dtype=None):
    """A numpy copy of a tensor or `keras.Variable` of any backend. On
    PyTorch, Keras 3.15's conversion (and `np.asarray(variable)`) warns
    that `__array__` takes no `copy` keyword (NumPy 2): harmless, and
    silenced here so that the library's own calls do not warn."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "__array__", DeprecationWarning)
        array = keras.ops.convert_to_numpy(value)
    return array if dtype is None else array.astype(dtype)


def gpu_visible():
    """Whether the running backend sees a GPU (or another accelerator)."""
    name = backend()
    if name == "jax":
        import jax

        return jax.default_backend() != "cpu"
    if name == "torch":
        import torch

        return torch.cuda.is_available()
    if name == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_logical_devices("GPU"))
    return False
