"""Hyper-search for RepOpt-VGG-B1 on CIFAR-100 (lives in `repopt_tf/configs/cifar100_hs_b1.py`)."""

from repopt_tf.configs.cifar100_hs_b1 import get_config  # noqa: F401
