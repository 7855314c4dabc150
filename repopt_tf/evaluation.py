"""Top-1 accuracy of a Keras model on `(images, one-hot labels)` batches."""

import numpy as np


def keras_accuracy(model, dataset):
    """Top-1 accuracy of `model` on `dataset`, by `predict_on_batch`: the
    model is not compiled here, so whatever it was compiled with (or not)
    is what it keeps, and saves."""
    correct = total = 0
    for images, onehot in dataset:
        logits = np.asarray(model.predict_on_batch(images))
        labels = np.asarray(onehot).argmax(-1)
        correct += int((logits.argmax(-1) == labels).sum())
        total += len(labels)
    return correct / max(total, 1)
