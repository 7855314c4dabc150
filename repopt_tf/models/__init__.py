"""RepOpt-VGG family, hyper-search model, RepVGG and plain VGG baselines."""

from repopt_tf.models.csla_form import csla_form
from repopt_tf.models.hyper_search import extract_scales
from repopt_tf.models.hyper_search import reinitialize
from repopt_tf.models.repopt_vgg import VARIANTS
from repopt_tf.models.repopt_vgg import block_names
from repopt_tf.models.repopt_vgg import build_model
from repopt_tf.models.repopt_vgg import list_models
from repopt_tf.models.repvgg import fuse_repvgg

__all__ = [
    "VARIANTS",
    "block_names",
    "build_model",
    "csla_form",
    "extract_scales",
    "fuse_repvgg",
    "list_models",
    "reinitialize",
]
