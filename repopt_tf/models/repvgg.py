"""RepVGG baseline: fold the training-time branches into one 3x3 conv.

For a block `BN(conv3x3) + BN(conv1x1) (+ BN(x))`, each BN with
`gamma, beta, mean, var, eps` folds into its branch as
`K * gamma / sqrt(var + eps)` and bias `beta - mean * gamma / sqrt(var + eps)`;
the 1x1 kernel is padded to the 3x3 centre and the identity is the 3x3
kernel with 1 at `[1, 1, c, c]`. The branch sums give the deploy conv.
"""

import numpy as np

from repopt_tf.models.hyper_search import block_convs
from repopt_tf.models.repopt_vgg import build_model


def fold_batch_norm(kernel, bn):
    """Returns `(kernel, bias)` of `bn(conv(x, kernel))` as one conv."""
    gamma, beta, mean, var = (np.asarray(w) for w in bn.weights)
    std = np.sqrt(var + bn.epsilon)
    return kernel * (gamma / std), beta - mean * gamma / std


def fused_block_kernel(model, prefix):
    """`(kernel, bias)` of block `prefix` of a `kind="repvgg"` model."""
    names = {layer.name for layer in model.layers}
    conv = model.get_layer(f"{prefix}_conv")
    kernel, bias = fold_batch_norm(
        np.asarray(conv.kernel), model.get_layer(f"{prefix}_bn")
    )
    k1, b1 = fold_batch_norm(
        np.asarray(model.get_layer(f"{prefix}_conv1x1").kernel),
        model.get_layer(f"{prefix}_bn1x1"),
    )
    kernel[1, 1] += k1[0, 0]
    bias = bias + b1
    if f"{prefix}_bn_identity" in names:
        # Output c reads input c, which is input c % (C / groups) of its group.
        group_inputs, channels = kernel.shape[2:]
        eye = np.zeros_like(kernel)
        eye[1, 1, np.arange(channels) % group_inputs, np.arange(channels)] = 1.0
        ki, bi = fold_batch_norm(eye, model.get_layer(f"{prefix}_bn_identity"))
        kernel = kernel + ki
        bias = bias + bi
    return kernel.astype(np.float32), bias.astype(np.float32)


def fuse_repvgg(model):
    """Returns the deploy (`kind="deploy"`) twin of a `kind="repvgg"` model."""
    if not model.name.endswith("_repvgg"):
        raise ValueError(
            f"fuse_repvgg expects a model built with kind='repvgg', got "
            f"{model.name!r}."
        )
    preprocessing = {}
    try:
        layer = model.get_layer("preprocessing")
        std = 1.0 / (255.0 * np.asarray(layer.scale))
        preprocessing = {"mean": -np.asarray(layer.offset) * std, "std": std}
    except ValueError:
        preprocessing = {"include_preprocessing": False}
    deploy = build_model(
        model.name[: -len("_repvgg")],
        num_classes=model.get_layer("classifier").units,
        input_shape=model.input_shape[1:],
        kind="deploy",
        **preprocessing,
    )
    for conv in block_convs(deploy):
        conv.set_weights(fused_block_kernel(model, conv.name[: -len("_conv")]))
    fused = {conv.name for conv in block_convs(deploy)}
    for layer in deploy.layers:
        if layer.weights and layer.name not in fused:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return deploy
