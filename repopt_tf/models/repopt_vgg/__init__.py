"""RepOpt-VGG and RepVGG, in one folder (Ding et al., ICLR 2023).

- `model`: the variant table and the builder (every form: plain, hs,
  repvgg, deploy; RPG rings);
- `layouts`, `timm_layout`: the authors' and timm's state-dict layouts;
- `fixtures`: synthetic state dicts in the authors' layouts, for tests;
- `scale_transfer`: searched scales of one variant mapped onto another;
- `family`: the registered `ModelFamily` (block handling, scale keys,
  train.py defaults).
"""

from repopt_tf.models.repopt_vgg.family import FAMILY
from repopt_tf.models.repopt_vgg.model import GROUPED_BLOCKS
from repopt_tf.models.repopt_vgg.model import VARIANTS
from repopt_tf.models.repopt_vgg.model import block_groups
from repopt_tf.models.repopt_vgg.model import block_names
from repopt_tf.models.repopt_vgg.model import block_plan
from repopt_tf.models.repopt_vgg.model import build_repopt_vgg
from repopt_tf.models.repopt_vgg.model import hs_scale_init

__all__ = [
    "FAMILY",
    "GROUPED_BLOCKS",
    "VARIANTS",
    "block_groups",
    "block_names",
    "block_plan",
    "build_repopt_vgg",
    "hs_scale_init",
]
