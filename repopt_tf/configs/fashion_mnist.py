"""One stage on Fashion-MNIST: `--config=configs/fashion_mnist.py:MODE`.

MODE is hs, target, baseline_sgd or baseline_repvgg. For target pass
`--config.scales=WORKDIR/hs/scales.npz` (from an hs run).
"""

from repopt_tf.configs import base


def get_config(mode="target"):
    config = base.get_config()
    config.mode = mode
    config.train.epochs = 10
    config.hs.epochs = 10
    return config
