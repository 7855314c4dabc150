"""Default run of train.py: HS -> scales -> RepOpt target -> baselines.

Fashion-MNIST (embedded), RepOpt-VGG-S at 28x28, the 60,000 training
images (5 % held out for per-epoch validation) and 3 epochs per stage, so the
four stages finish in about 4 minutes on 2 CPU cores (docs/results.md). `fashion_mnist.py` has
the longer single-stage runs. `--config=configs/quickstart.py:ghostnet` runs
the same stages on RepOpt-GhostNet 0.5x (baseline: RepGhostNet), about 9
minutes here.
"""

from repopt_tf.configs import base

FAMILIES = ("vgg", "ghostnet")


def get_config(family="vgg"):
    if family not in FAMILIES:
        raise ValueError(
            f"quickstart.py takes one of {FAMILIES}, got {family!r}."
        )
    config = base.get_config()
    if family == "ghostnet":
        base.ghostnet(config)
    config.hs.epochs = 3
    config.train.epochs = 3
    return config
