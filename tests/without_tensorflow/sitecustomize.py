"""Makes this process one without TensorFlow: with this folder on
PYTHONPATH, Python imports this module at start-up, and every import of
TensorFlow or a package built on it fails as if it were not installed
(`ModuleNotFoundError: No module named 'tensorflow'`)."""

import importlib.machinery
import sys

TENSORFLOW_PACKAGES = {
    "tensorflow",
    "tensorflow_datasets",
    "tensorflow_model_optimization",
    "tf_keras",
    "tensorboard",
    "ai_edge_litert",
    "tflite_micro",
}


class _NotInstalled:
    """Meta path finder and loader: a spec without origin for each of
    `TENSORFLOW_PACKAGES` (PyTorch's start-up then skips it, as a missing
    one), whose loading fails as a missing module's import does."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] not in TENSORFLOW_PACKAGES:
            return None
        return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec):
        raise ModuleNotFoundError(
            f"No module named {spec.name!r}", name=spec.name
        )

    def exec_module(self, module):
        raise AssertionError("unreachable: create_module raises")


sys.meta_path.insert(0, _NotInstalled())
