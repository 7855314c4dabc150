"""Data pipelines: embedded Fashion-MNIST, tensorflow-datasets, image folders
(tf.data: needs TensorFlow, on any Keras backend)."""

from repopt_tf.backend import require_tensorflow

require_tensorflow("repopt_tf.data (tf.data pipelines)")

from repopt_tf.data.fashion_mnist import load_fashion_mnist
from repopt_tf.data.pipeline import Source
from repopt_tf.data.pipeline import align_classes
from repopt_tf.data.pipeline import check_classes
from repopt_tf.data.pipeline import load_source
from repopt_tf.data.pipeline import make_dataset
from repopt_tf.data.pipeline import representative_images
from repopt_tf.data.pipeline import split_holdout
from repopt_tf.data.pipeline import steps_per_epoch
from repopt_tf.data.pipeline import take

__all__ = [
    "Source",
    "align_classes",
    "check_classes",
    "load_fashion_mnist",
    "load_source",
    "make_dataset",
    "steps_per_epoch",
    "representative_images",
    "split_holdout",
    "take",
]
