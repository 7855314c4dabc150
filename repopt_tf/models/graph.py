"""Who feeds whom in a functional Keras model."""

import keras


def producers(layer):
    """The layers whose outputs `layer` takes as inputs."""
    inputs = (
        layer.input if isinstance(layer.input, list | tuple) else [layer.input]
    )
    return [tensor._keras_history.operation for tensor in inputs]


def consumers(model):
    """`{layer name: [layers that take its output]}` of a functional model."""
    found = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        for producer in producers(layer):
            found.setdefault(producer.name, []).append(layer)
    return found
