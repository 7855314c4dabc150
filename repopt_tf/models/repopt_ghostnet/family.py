"""The RepOpt-GhostNet family, registered: builder, block handling, the
authors' and timm's checkpoint layouts, scale keys and train.py defaults."""

import keras

from repopt_tf.models.family import ModelFamily
from repopt_tf.models.registry import register_family
from repopt_tf.models.repopt_ghostnet.layouts import GHOSTNET
from repopt_tf.models.repopt_ghostnet.model import GHOST_CONV
from repopt_tf.models.repopt_ghostnet.model import KINDS
from repopt_tf.models.repopt_ghostnet.model import VARIANTS
from repopt_tf.models.repopt_ghostnet.model import build_repopt_ghostnet
from repopt_tf.models.repopt_ghostnet.timm_layout import TIMM_REPGHOSTNET
from repopt_tf.models.scale_keys import ScaleKeys

# One block per ghost module `blocks.i.j.ghostK`: "conv" is the cheap
# operation's scale t, "identity" the fusion scale s; no 1x1 branch.
SCALE_KEYS = ScaleKeys(
    pattern=r"blocks\.(\d+)\.(\d+)\.ghost(\d)\."
    r"(?P<branch>cheap_operation\.1|fusion_scale)\.weight",
    branches={"cheap_operation.1": "conv", "fusion_scale": "identity"},
    required=frozenset({"conv", "identity"}),
    block_label="blocks.{0}.{1}.ghost{2}",
    example="blocks.i.j.ghostK.fusion_scale.weight",
    branch_labels={"conv": "the cheap scale"},
)


class RepOptGhostNet(ModelFamily):
    """RepOpt-GhostNet and RepGhostNet: `ConvBlocks` on the ghost modules'
    depthwise convs (`GHOST_CONV`)."""

    name = "repopt_ghostnet"
    label = "RepOpt-GhostNet"
    variants = VARIANTS
    kinds = KINDS
    branch_kind = "repghost"
    layouts = (TIMM_REPGHOSTNET, GHOSTNET)
    scale_keys = SCALE_KEYS
    config_name = "ghostnet"
    mode_prefix = "ghost_"
    # The family's multi-branch baseline is the runner's baseline_repvgg.
    mode_aliases = {"baseline_repghost": "baseline_repvgg"}

    def __init__(self):
        super().__init__(GHOST_CONV, (keras.layers.DepthwiseConv2D,))

    def build(self, variant, num_classes, input_shape, kind, **options):
        if any(key.startswith("rpg_") for key in options):
            raise ValueError(
                "RPG rings (rpg_dof) are built for RepOpt-VGG's 3x3 convs, "
                f"not {variant}."
            )
        return build_repopt_ghostnet(
            variant, num_classes, input_shape, kind, **options
        )

    def configure(self, config):
        """RepOpt-GhostNet 0.5x with the reference's weight decay (1e-5; its
        ImageNet recipe: LR 0.6 at batch 1024, i.e. 0.075 at 128)."""
        config.model = "repopt_ghostnet_0_5x"
        config.train.weight_decay = 1e-5
        return config


FAMILY = RepOptGhostNet()
register_family(FAMILY)
