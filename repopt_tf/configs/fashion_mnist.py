"""One stage on Fashion-MNIST: `--config=configs/fashion_mnist.py:MODE`.

MODE is hs, target, baseline_sgd or baseline_repvgg (RepOpt-VGG-S), or the
same with a family's `mode_prefix` for another registered family's
default variant (docs/training.md lists the prefixes and their mode aliases).
For target pass
`--config.scales=WORKDIR/hs/scales.npz` (from an hs run).
"""

from repopt_tf.configs import base
from repopt_tf.models.registry import FAMILIES


def get_config(mode="target"):
    config = base.get_config()
    for family in FAMILIES.values():
        if family.mode_prefix and mode.startswith(family.mode_prefix):
            family.configure(config)
            mode = mode.removeprefix(family.mode_prefix)
            mode = family.mode_aliases.get(mode, mode)
            break
    config.mode = mode
    config.train.epochs = 10
    config.hs.epochs = 10
    return config
