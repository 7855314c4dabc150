"""One stage on Fashion-MNIST: `--config=configs/fashion_mnist.py:MODE`
(lives in `repopt_tf/configs/fashion_mnist.py`)."""

from repopt_tf.configs.fashion_mnist import get_config  # noqa: F401
