"""The first layer of every model: raw 0-255 pixels -> normalised inputs, so
exported int8 models take raw pixels."""

import keras
import numpy as np

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)


def preprocessing(channels, mean=None, std=None):
    """`Rescaling` layer `preprocessing`: `(x / 255 - mean) / std`.

    `mean`, `std`: per-channel, in [0, 1] pixel units; default ImageNet's
    for 3 channels, Fashion-MNIST's otherwise.
    """
    if mean is None or std is None:
        if channels == 3:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            mean = FASHION_MNIST_MEAN * channels
            std = FASHION_MNIST_STD * channels
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    if mean.shape != (channels,) or std.shape != (channels,):
        raise ValueError(
            f"mean and std need {channels} values, got {mean.tolist()} and "
            f"{std.tolist()}."
        )
    return keras.layers.Rescaling(
        scale=(1.0 / (255.0 * std)).tolist(),
        offset=(-mean / std).tolist(),
        name="preprocessing",
    )


def preprocessing_options(model):
    """`build_model` arguments that rebuild `model`'s preprocessing."""
    try:
        layer = model.get_layer("preprocessing")
    except ValueError:
        return {"include_preprocessing": False}
    std = 1.0 / (255.0 * np.asarray(layer.scale))
    return {"mean": -np.asarray(layer.offset) * std, "std": std}
