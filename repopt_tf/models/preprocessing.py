"""The first layer of every model: raw 0-255 pixels -> normalised inputs, so
exported int8 models take raw pixels."""

import keras
import numpy as np

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)


def preprocessing_stats(channels, mean=None, std=None):
    """`{"mean": [...], "std": [...]}` of `preprocessing`, defaults filled in
    (what a model's identity records).

    `mean`, `std`: per-channel, in [0, 1] pixel units; default ImageNet's
    for 3 channels, Fashion-MNIST's otherwise.

    Raises:
        ValueError: `mean` or `std` does not have `channels` values.
    """
    if mean is None or std is None:
        if channels == 3:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            mean = FASHION_MNIST_MEAN * channels
            std = FASHION_MNIST_STD * channels
    mean = np.asarray(mean, np.float32).reshape(-1)
    std = np.asarray(std, np.float32).reshape(-1)
    if mean.shape != (channels,) or std.shape != (channels,):
        raise ValueError(
            f"mean and std need {channels} values, got {mean.tolist()} and "
            f"{std.tolist()}."
        )
    return {"mean": mean.tolist(), "std": std.tolist()}


def preprocessing(channels, mean=None, std=None):
    """`Rescaling` layer `preprocessing`: `(x / 255 - mean) / std`, with
    the statistics of `preprocessing_stats`."""
    stats = preprocessing_stats(channels, mean, std)
    mean = np.asarray(stats["mean"], np.float32)
    std = np.asarray(stats["std"], np.float32)
    return keras.layers.Rescaling(
        scale=(1.0 / (255.0 * std)).tolist(),
        offset=(-mean / std).tolist(),
        name="preprocessing",
    )


def image_input(input_shape, include_preprocessing=True, mean=None, std=None):
    """The start of every model: its `image` input, then `preprocessing`.

    Args:
        input_shape: `(height, width, channels)` of the raw 0-255 images.
        include_preprocessing: False for a model that takes inputs already
            normalised (no `preprocessing` layer, statistics None).
        mean, std: per-channel statistics for `preprocessing_stats`.

    Returns:
        `(inputs, x, stats)`: the `keras.Input` named `image`, the tensor the
        first block takes, and the statistics that the model's identity
        records (`preprocessing_stats`, or None without preprocessing).

    Example:
        >>> inputs, x, stats = image_input((28, 28, 1))
        >>> x.shape, stats["mean"]
        ((None, 28, 28, 1), [0.28600001335144043])
    """
    inputs = keras.Input(input_shape, name="image")
    if not include_preprocessing:
        return inputs, inputs, None
    stats = preprocessing_stats(input_shape[-1], mean, std)
    return inputs, preprocessing(input_shape[-1], **stats)(inputs), stats


def preprocessing_options(model):
    """`build_model` arguments that rebuild `model`'s preprocessing: from
    its identity (`repopt_tf.models.identity`), or, for a model saved
    before identities recorded it, from its `preprocessing` layer."""
    identity = getattr(model, "identity", None) or {}
    if "preprocessing" in identity:
        stats = identity["preprocessing"]
        return dict(stats) if stats else {"include_preprocessing": False}
    try:
        layer = model.get_layer("preprocessing")
    except ValueError:
        return {"include_preprocessing": False}
    std = 1.0 / (255.0 * np.asarray(layer.scale))
    return {"mean": -np.asarray(layer.offset) * std, "std": std}
