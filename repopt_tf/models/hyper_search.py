"""Hyper-search model -> scales, and the Rule of Initialization.

`extract_scales(hs_model)` reads the trained CSLA scales of a `kind="hs"`
model (or of `csla_form(model, layer_pattern)`) into the list format of
`repopt_tf.scales.load_scales`.

`reinitialize(model, blocks)` applies Ding et al. Eq. 4 to a plain target::

    W'(0) = s * W3 + t * pad(W1) (+ diag(identity scale or 1))

with W3 (3x3) and W1 (1x1) drawn like PyTorch's default conv init,
U(+-1/sqrt(fan_in)), i.e. `VarianceScaling(1/3, "fan_in", "uniform")`.
"""

import warnings

import keras
import numpy as np

from repopt_tf.models.blocks import csla_layer_name
from repopt_tf.optimizers.grad_mult import grad_mults_for_model
from repopt_tf.optimizers.grad_mult import is_3x3_conv

# RepOpt-VGG's block convs; any other model passes its own `layer_pattern`.
BLOCK_CONV = r"stage\d+_block\d+_conv"


def block_convs(model, layer_pattern=BLOCK_CONV):
    """The 3x3 convs whose name fully matches `layer_pattern`, in model order."""
    return [layer for layer in model.layers if is_3x3_conv(layer, layer_pattern)]


def extract_scales(hs_model, layer_pattern=BLOCK_CONV):
    """Returns `[{"conv": s, "1x1": t, "identity": gamma or None}, ...]`."""
    layers = {layer.name: layer for layer in hs_model.layers}
    blocks = []
    for conv in block_convs(hs_model, layer_pattern):
        names = {part: csla_layer_name(conv.name, f"scale_{part}")
                 for part in ("conv", "1x1", "identity")}
        if names["conv"] not in layers or names["1x1"] not in layers:
            raise ValueError(
                f"{hs_model.name} is not a hyper-search model: conv {conv.name} "
                f"has no trainable scales ({names['conv']}; build it with "
                "kind='hs', or with csla_form for your own model)."
            )
        s, t = layers[names["conv"]].scale, layers[names["1x1"]].scale
        identity = layers.get(names["identity"])
        if identity is not None:
            identity = np.asarray(identity.scale).reshape(-1)
        blocks.append({
            "conv": np.asarray(s, np.float32),
            "1x1": np.asarray(t, np.float32),
            "identity": identity,
        })
    return blocks


def reinitialize(model, blocks, use_identity_scales=True, seed=None,
                 layer_pattern=BLOCK_CONV):
    """Sets every block kernel of a plain model by the Rule of Initialization.

    Args:
        model: a `kind="plain"` RepOpt-VGG, or any model whose 3x3 convs
            matching `layer_pattern` are its RepOpt blocks.
        blocks: scales in `load_scales` format, one per block.
        use_identity_scales: add the searched identity scale on the diagonal
            (the official code's default) instead of 1.
        seed: for the draws of W3 and W1.
        layer_pattern: regex (full match) of the block convs' names.

    Warns when the model's BN gammas are not all 1: reinitialising a trained
    model throws its training away (fine-tuning should skip this).
    """
    convs = block_convs(model, layer_pattern)
    grad_mults_for_model(model, blocks, layer_pattern)  # validates
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
