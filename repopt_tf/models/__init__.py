"""Model families, their forms and block handlers.

Each family is a folder that registers itself (`repopt_tf.models.registry`):
importing `repopt_vgg` (RepOpt-VGG and RepVGG) and `repopt_ghostnet`
(RepOpt-GhostNet and RepGhostNet) here registers the built-in families.
"""

from repopt_tf.models import repopt_ghostnet
from repopt_tf.models import repopt_vgg
from repopt_tf.models.api import block_convs
from repopt_tf.models.api import build_model
from repopt_tf.models.api import extract_scales
from repopt_tf.models.api import fuse_repvgg
from repopt_tf.models.api import reinitialize
from repopt_tf.models.csla_form import csla_form
from repopt_tf.models.registry import list_models
from repopt_tf.models.registry import register_family
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
    "register_family",
    "reinitialize",
    "repopt_ghostnet",
    "repopt_vgg",
]
