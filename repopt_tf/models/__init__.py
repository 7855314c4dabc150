"""Model families (RepOpt-VGG / RepVGG), their forms and block handlers."""

from repopt_tf.models.csla_form import csla_form
from repopt_tf.models.registry import block_convs
from repopt_tf.models.registry import build_model
from repopt_tf.models.registry import extract_scales
from repopt_tf.models.registry import fuse_repvgg
from repopt_tf.models.registry import list_models
from repopt_tf.models.registry import reinitialize
from repopt_tf.models.repopt_vgg import VARIANTS
from repopt_tf.models.repopt_vgg import block_names

__all__ = [
    "VARIANTS",
    "block_convs",
    "block_names",
    "build_model",
    "csla_form",
    "extract_scales",
    "fuse_repvgg",
    "list_models",
    "reinitialize",
]
