"""Weights in: the authors' PyTorch checkpoints and timm's (.pth or
.safetensors; no torch needed) and .keras files."""

from repopt_tf.checkpoints.layout import LoadReport
from repopt_tf.checkpoints.loading import detect_form
from repopt_tf.checkpoints.loading import is_torch_checkpoint
from repopt_tf.checkpoints.loading import layout_of
from repopt_tf.checkpoints.loading import load_state_dict
from repopt_tf.checkpoints.loading import load_weights
from repopt_tf.checkpoints.loading import matching_variants
from repopt_tf.checkpoints.loading import model_from_checkpoint
from repopt_tf.checkpoints.loading import model_from_state_dict
from repopt_tf.checkpoints.loading import read_keras_model
from repopt_tf.checkpoints.safetensors_file import read_safetensors
from repopt_tf.checkpoints.state_files import is_state_dict_file
from repopt_tf.checkpoints.state_files import read_state_dict
from repopt_tf.checkpoints.torch_file import UnsafeCheckpointError
from repopt_tf.checkpoints.torch_file import read_torch_file
from repopt_tf.models.api import set_weights_loader

set_weights_loader(load_weights)  # build_model(weights=...) reads files

__all__ = [
    "LoadReport",
    "UnsafeCheckpointError",
    "detect_form",
    "is_state_dict_file",
    "is_torch_checkpoint",
    "layout_of",
    "load_state_dict",
    "load_weights",
    "matching_variants",
    "model_from_checkpoint",
    "model_from_state_dict",
    "read_keras_model",
    "read_safetensors",
    "read_state_dict",
    "read_torch_file",
]
