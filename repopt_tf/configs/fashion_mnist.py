"""One stage on Fashion-MNIST: `--config=configs/fashion_mnist.py:MODE`.

MODE is hs, target, baseline_sgd or baseline_repvgg (RepOpt-VGG-S), or the
same with a `ghost_` prefix for RepOpt-GhostNet 0.5x: ghost_hs, ghost_target,
ghost_baseline_sgd, ghost_baseline_repghost (the RepGhostNet baseline). For
target pass `--config.scales=WORKDIR/hs/scales.npz` (from an hs run).
"""

from repopt_tf.configs import base

GHOST_PREFIX = "ghost_"


def get_config(mode="target"):
    config = base.get_config()
    if mode.startswith(GHOST_PREFIX):
        base.ghostnet(config)
        mode = mode.removeprefix(GHOST_PREFIX)
        # The family's multi-branch baseline is the runner's baseline_repvgg.
        mode = {"baseline_repghost": "baseline_repvgg"}.get(mode, mode)
    config.mode = mode
    config.train.epochs = 10
    config.hs.epochs = 10
    return config
