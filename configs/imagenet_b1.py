"""The paper's ImageNet recipe for RepOpt-VGG-B1 (lives in `repopt_tf/configs/imagenet_b1.py`)."""

from repopt_tf.configs.imagenet_b1 import get_config  # noqa: F401
