"""Data pipelines: the embedded Fashion-MNIST set."""

from repopt_tf.data.fashion_mnist import load_fashion_mnist

__all__ = ["load_fashion_mnist"]
