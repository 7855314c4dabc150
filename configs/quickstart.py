"""Default run of train.py: HS -> scales -> RepOpt target -> baselines.

Fashion-MNIST (embedded), RepOpt-VGG-S at 28x28, 2 CPU cores: about 10 min.
"""

from configs import base


def get_config():
    return base.get_config()
