"""RepOpt-GhostNet and RepGhostNet, in one folder (Ding et al., ICLR 2023,
App. D; RepGhost: Chen et al., 2022).

- `model`: the variant table and the builder (plain, hs, repghost, deploy);
- `layouts`, `timm_layout`: the authors' and timm's state-dict layouts;
- `family`: the registered `ModelFamily` (block handling, scale keys,
  train.py defaults).
"""

from repopt_tf.models.repopt_ghostnet.family import FAMILY
from repopt_tf.models.repopt_ghostnet.model import GHOST_CONV
from repopt_tf.models.repopt_ghostnet.model import KINDS
from repopt_tf.models.repopt_ghostnet.model import VARIANTS
from repopt_tf.models.repopt_ghostnet.model import bottleneck_plan
from repopt_tf.models.repopt_ghostnet.model import build_repopt_ghostnet
from repopt_tf.models.repopt_ghostnet.model import ghost_module
from repopt_tf.models.repopt_ghostnet.model import hs_scale_init

__all__ = [
    "FAMILY",
    "GHOST_CONV",
    "KINDS",
    "VARIANTS",
    "bottleneck_plan",
    "build_repopt_ghostnet",
    "ghost_module",
    "hs_scale_init",
]
