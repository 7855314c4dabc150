"""Top-1 accuracy of a Keras model on `(images, one-hot labels)` batches."""

import keras


def keras_accuracy(model, dataset):
    """Compiles `model` for evaluation (its optimizer is dropped) and
    returns its top-1 accuracy on `dataset`."""
    model.compile(
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    return float(
        model.evaluate(dataset, verbose=0, return_dict=True)["accuracy"]
    )
