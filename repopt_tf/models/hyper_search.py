"""Hyper-search model -> scales, and the Rule of Initialization.

`extract_scales(hs_model)` reads the trained CSLA scales of a `kind="hs"`
model into the list format of `repopt_tf.scales.load_scales`.

`reinitialize(model, blocks)` applies Ding et al. Eq. 4 to a plain target::

    W'(0) = s * W3 + t * pad(W1) (+ diag(identity scale or 1))

with W3 (3x3) and W1 (1x1) drawn like PyTorch's default conv init,
U(+-1/sqrt(fan_in)), i.e. `VarianceScaling(1/3, "fan_in", "uniform")`.
"""

import re
import warnings

import keras
import numpy as np

from repopt_tf.optimizers.grad_mult import grad_mults_for_model

BLOCK_CONV = re.compile(r"stage\d+_block\d+_conv")


def block_convs(model):
    """The 3x3 conv of every block, in model order."""
    return [layer for layer in model.layers if BLOCK_CONV.fullmatch(layer.name)]


def extract_scales(hs_model):
    """Returns `[{"conv": s, "1x1": t, "identity": gamma or None}, ...]`."""
    layers = {layer.name: layer for layer in hs_model.layers}
    blocks = []
    for conv in block_convs(hs_model):
        prefix = conv.name[: -len("_conv")]
        try:
            s = hs_model.get_layer(f"{prefix}_scale_conv").scale
            t = hs_model.get_layer(f"{prefix}_scale_1x1").scale
        except ValueError as error:
            raise ValueError(
                f"{hs_model.name} is not a hyper-search model: block {prefix} "
                "has no trainable scales (build it with kind='hs')."
            ) from error
        identity = layers.get(f"{prefix}_scale_identity")
        if identity is not None:
            identity = np.asarray(identity.scale).reshape(-1)
        blocks.append({
            "conv": np.asarray(s, np.float32),
            "1x1": np.asarray(t, np.float32),
            "identity": identity,
        })
    return blocks


def reinitialize(model, blocks, use_identity_scales=True, seed=None):
    """Sets every block kernel of a plain model by the Rule of Initialization.

    Args:
        model: a `kind="plain"` RepOpt-VGG (or any model whose 3x3 block
            convs are named `stageI_blockJ_conv`).
        blocks: scales in `load_scales` format, one per block.
        use_identity_scales: add the searched identity scale on the diagonal
            (the official code's default) instead of 1.
        seed: for the draws of W3 and W1.

    Warns when the model's BN gammas are not all 1: reinitialising a trained
    model throws its training away (fine-tuning should skip this).
    """
    convs = block_convs(model)
    grad_mults_for_model(model, blocks, BLOCK_CONV.pattern)  # validates
    gammas = [
        np.asarray(layer.gamma) for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    if gammas and not all(np.all(g == 1.0) for g in gammas):
        warnings.warn(
            "reinitialize(): BatchNorm gammas are not all 1, so this model "
            "looks trained; the Rule of Initialization overwrites its kernels. "
            "Skip reinitialisation when fine-tuning.",
            stacklevel=2,
        )
    init = keras.initializers.VarianceScaling(
        1.0 / 3.0, "fan_in", "uniform", seed=seed
    )
    for conv, scales in zip(convs, blocks):
        _, _, cin, cout = conv.kernel.shape
        w3 = np.asarray(init((3, 3, cin, cout)))
        w1 = np.asarray(init((1, 1, cin, cout)))
        kernel = scales["conv"] * w3
        kernel[1, 1] += scales["1x1"] * w1[0, 0]
        if scales.get("identity") is not None:
            diagonal = np.arange(cout)
            extra = scales["identity"] if use_identity_scales else 1.0
            kernel[1, 1, diagonal, diagonal] += extra
        conv.kernel.assign(kernel.astype(np.float32))
