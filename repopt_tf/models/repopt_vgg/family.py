"""The RepOpt-VGG family, registered: builder, block handling, the authors'
and timm's checkpoint layouts, scale keys and train.py defaults."""

import keras

from repopt_tf.models.blocks import BLOCK_CONV
from repopt_tf.models.blocks import BLOCK_KINDS
from repopt_tf.models.family import ModelFamily
from repopt_tf.models.registry import register_family
from repopt_tf.models.repopt_vgg.layouts import VGG
from repopt_tf.models.repopt_vgg.model import VARIANTS
from repopt_tf.models.repopt_vgg.model import build_repopt_vgg
from repopt_tf.models.repopt_vgg.timm_layout import TIMM_REPVGG
from repopt_tf.models.scale_keys import ScaleKeys

# The authors' `stageN[.i].scale_{conv,1x1,identity}.weight` (the stem is
# `stage0`, a bare module).
SCALE_KEYS = ScaleKeys(
    pattern=r"stage(\d+)(?:\.(\d+))?\.scale_(?P<branch>conv|1x1|identity)"
    r"\.weight",
    branches={"conv": "conv", "1x1": "1x1", "identity": "identity"},
    required=frozenset({"conv", "1x1"}),
    block_label="stage{0}.{1}",
    example="stageN.i.scale_*.weight",
    branch_labels={"conv": "scale_conv", "1x1": "scale_1x1"},
)


class RepOptVGG(ModelFamily):
    """RepOpt-VGG and RepVGG: 3x3 conv blocks (`ConvBlocks` on `BLOCK_CONV`)."""

    name = "repopt_vgg"
    label = "RepOpt-VGG"
    variants = VARIANTS
    kinds = BLOCK_KINDS
    layouts = (TIMM_REPVGG, VGG)
    scale_keys = SCALE_KEYS
    config_name = "vgg"

    def __init__(self):
        super().__init__(BLOCK_CONV, (keras.layers.Conv2D,))

    def build(self, variant, num_classes, input_shape, kind, **options):
        return build_repopt_vgg(
            variant, num_classes, input_shape, kind, **options
        )

    def configure(self, config):
        """RepOpt-VGG-S, the recipe of `repopt_tf.configs.base`."""
        config.model = "repopt_vgg_s"
        return config


FAMILY = RepOptVGG()
register_family(FAMILY)
