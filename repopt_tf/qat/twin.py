"""A tf_keras copy of a plain Keras 3 model, for tensorflow-model-optimization.

TFMOT's QAT only wraps legacy `tf_keras` models, so the plain (chain-shaped)
RepOpt-VGG / fused RepVGG is rebuilt layer by layer in `tf_keras` with the same
names and configs, and its weights are copied by layer name.
"""

import keras
import numpy as np
import tf_keras


def _twin_layer(layer):
    config = layer.get_config()
    name = layer.name
    kind = type(layer).__name__
    if isinstance(layer, keras.layers.Conv2D):
        kind = "Conv2D"  # e.g. FastGradConv2D: same forward
    if isinstance(layer, keras.layers.BatchNormalization):
        kind = "BatchNormalization"  # e.g. FastBatchNorm: same maths
    if kind == "Rescaling":
        return tf_keras.layers.Rescaling(
            config["scale"], config["offset"], name=name
        )
    if kind == "ZeroPadding2D":
        return tf_keras.layers.ZeroPadding2D(config["padding"], name=name)
    if kind == "Conv2D":
        return tf_keras.layers.Conv2D(
            config["filters"],
            config["kernel_size"],
            strides=config["strides"],
            padding=config["padding"],
            use_bias=config["use_bias"],
            activation=config["activation"],
            name=name,
        )
    if kind == "BatchNormalization":
        return tf_keras.layers.BatchNormalization(
            epsilon=config["epsilon"], momentum=config["momentum"], name=name
        )
    if kind == "ReLU":
        return tf_keras.layers.ReLU(name=name)
    if kind == "GlobalAveragePooling2D":
        return tf_keras.layers.GlobalAveragePooling2D(
            keepdims=config["keepdims"], name=name
        )
    if kind == "Dense":
        return tf_keras.layers.Dense(
            config["units"], activation=config["activation"], name=name
        )
    raise ValueError(
        f"QAT supports plain chain models (RepOpt-VGG, fused RepVGG); layer "
        f"{name!r} is a {kind}."
    )


def tf_keras_twin(model):
    """Returns the tf_keras twin of a chain-shaped Keras 3 model.

    Raises:
        ValueError: for layers with more than one input (branches) or types
            the twin does not know.
    """
    layers = [
        layer for layer in model.layers if type(layer).__name__ != "InputLayer"
    ]
    for layer in layers:
        if isinstance(layer.input, (list, tuple)):
            raise ValueError(
                f"QAT supports plain chain models; layer {layer.name!r} has "
                f"{len(layer.input)} inputs (fuse RepVGG models first)."
            )
    inputs = tf_keras.Input(model.input_shape[1:], name=model.inputs[0].name)
    x = inputs
    for layer in layers:
        padding = getattr(layer, "zero_padding", 0)
        if padding:  # FastGradConv2D pads inside its op; tf_keras needs a layer
            x = tf_keras.layers.ZeroPadding2D(
                padding, name=f"{layer.name}_pad"
            )(x)
        x = _twin_layer(layer)(x)
    twin = tf_keras.Model(inputs, x, name=model.name)
    for layer in layers:
        twin.get_layer(layer.name).set_weights(layer.get_weights())
    return twin


def weights_equal(model, twin):
    """True when every weight of `model` equals its twin's, by layer name."""
    for layer in model.layers:
        for ours, theirs in zip(
            layer.get_weights(), twin.get_layer(layer.name).get_weights()
        ):
            if not np.array_equal(ours, theirs):
                return False
    return True
