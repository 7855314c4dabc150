"""Weights in: the authors' PyTorch checkpoints (no torch needed) and .keras files."""

from repopt_tf.checkpoints.loading import is_torch_checkpoint
from repopt_tf.checkpoints.loading import load_weights
from repopt_tf.checkpoints.loading import model_from_checkpoint
from repopt_tf.checkpoints.loading import model_from_state_dict
from repopt_tf.checkpoints.torch_file import UnsafeCheckpointError
from repopt_tf.checkpoints.torch_file import read_state_dict
from repopt_tf.checkpoints.torch_file import read_torch_file
from repopt_tf.checkpoints.torch_layouts import FORMS
from repopt_tf.checkpoints.torch_layouts import LoadReport
from repopt_tf.checkpoints.torch_layouts import describe_state
from repopt_tf.checkpoints.torch_layouts import detect_form
from repopt_tf.checkpoints.torch_layouts import load_state_dict
from repopt_tf.checkpoints.torch_layouts import matching_variants

__all__ = [
    "FORMS",
    "LoadReport",
    "UnsafeCheckpointError",
    "describe_state",
    "detect_form",
    "is_torch_checkpoint",
    "load_state_dict",
    "load_weights",
    "matching_variants",
    "model_from_checkpoint",
    "model_from_state_dict",
    "read_state_dict",
    "read_torch_file",
]
