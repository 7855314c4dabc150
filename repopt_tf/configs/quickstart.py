"""Default run of train.py: HS -> scales -> RepOpt target -> baselines.

Fashion-MNIST (embedded), RepOpt-VGG-S at 28x28, the 60,000 training
images (5 % held out for per-epoch validation) and 3 epochs per stage, so the
four stages finish in about 4 minutes on 2 CPU cores (docs/results.md). `fashion_mnist.py` has
the longer single-stage runs. `--config=configs/quickstart.py:FAMILY` runs
the same stages on any registered family's default variant (its
`config_name`; docs/training.md lists them).
"""

from repopt_tf.configs import base
from repopt_tf.models.registry import FAMILIES
from repopt_tf.models.registry import family_named


def get_config(family="vgg"):
    try:
        chosen = family_named(family)
    except ValueError:
        names = tuple(f.config_name for f in FAMILIES.values() if f.config_name)
        raise ValueError(
            f"quickstart.py takes one of {names}, got {family!r}."
        ) from None
    config = chosen.configure(base.get_config())
    config.hs.epochs = 3
    config.train.epochs = 3
    return config
