"""Grad Mult construction (Ding et al., ICLR 2023, §3.2 and Eq. 3).

For a block whose imaginary CSLA form is ``s*conv3x3(x) + t*conv1x1(x) (+ x)``
with per-output-channel constants ``s`` and ``t``, the Grad Mult ``M`` of the
single equivalent 3x3 kernel (Keras layout ``(3, 3, Cin, Cout)``) is::

    M[:, :, :, c]  = s_c**p          every tap (the 3x3 branch)
    M[1, 1, :, c] += t_c**p          centre tap (the 1x1 branch)
    M[1, 1, c, c] += 1               only with an identity branch

with ``p = 2`` for SGD and ``p = 1`` for AdamW.
"""

import base64
import re

import keras
import numpy as np


def grad_mult(scale_conv, scale_1x1, has_identity, in_channels, power=2):
    """Returns the Grad Mult of one RepOpt block as a `(3, 3, Cin, Cout)` array.

    Args:
        scale_conv: vector `s` of length Cout (3x3 branch scales).
        scale_1x1: vector `t` of length Cout (1x1 branch scales).
        has_identity: whether the block has an identity branch (requires
            `in_channels == Cout`).
        in_channels: number of input channels Cin.
        power: 2 for SGD-type rules, 1 for AdamW.
    """
    s = np.asarray(scale_conv, dtype=np.float32).reshape(-1)
    t = np.asarray(scale_1x1, dtype=np.float32).reshape(-1)
    if s.shape != t.shape:
        raise ValueError(
            f"scale_conv and scale_1x1 must have the same length, got "
            f"{s.shape[0]} and {t.shape[0]}."
        )
    if power not in (1, 2):
        raise ValueError(f"power must be 1 (AdamW) or 2 (SGD), got {power}.")
    in_channels = int(in_channels)
    out_channels = s.shape[0]
    if has_identity and in_channels != out_channels:
        raise ValueError(
            "An identity branch needs in_channels == out_channels, got "
            f"in_channels={in_channels}, out_channels={out_channels}."
        )
    mult = np.broadcast_to(s**power, (3, 3, in_channels, out_channels)).copy()
    mult[1, 1] += t**power
    if has_identity:
        diagonal = np.arange(out_channels)
        mult[1, 1, diagonal, diagonal] += 1.0
    return mult


def is_3x3_conv(layer, regex):
    """Whether `layer` is a 3x3 `Conv2D` whose name fully matches `regex`:
    the layers that Grad Mults, scales and CSLA forms attach to."""
    return (isinstance(layer, keras.layers.Conv2D)
            and tuple(layer.kernel_size) == (3, 3)
            and re.fullmatch(regex, layer.name) is not None)


def identity_fits(in_channels, out_channels, strides):
    """Whether a 3x3 conv can have a CSLA identity branch: C -> C at stride 1
    (the branch reads each window's centre pixel, whatever the padding)."""
    return (in_channels == out_channels
            and tuple(np.broadcast_to(strides, 2).tolist()) == (1, 1))


def can_carry_identity(layer):
    """`identity_fits` for a built conv layer."""
    return identity_fits(layer.kernel.shape[2], layer.kernel.shape[3],
                         layer.strides)


def grad_mults_for_model(model, blocks, layer_pattern=r".*", power=2):
    """Builds `{variable.path: M}` for the 3x3 convs of any Keras model.

    The `Conv2D` layers with a 3x3 kernel whose name fully matches
    `layer_pattern` are taken in model order and paired with `blocks`, a list
    in the format of `repopt_tf.scales.load_scales`: one dict per block with
    keys `"conv"`, `"1x1"` and `"identity"` (a vector, or None when the block
    has no identity branch). The result feeds `RepOptSGD(grad_mults=...)`.

    Raises:
        ValueError: naming the block, when the number of matched layers,
            a width, or the presence of an identity branch does not fit.
    """
    convs = [layer for layer in _iter_layers(model)
             if is_3x3_conv(layer, layer_pattern)]
    if len(convs) != len(blocks):
        raise ValueError(
            f"The scales describe {len(blocks)} blocks but the model has "
            f"{len(convs)} 3x3 Conv2D layers matching {layer_pattern!r}."
        )
    mults = {}
    for index, (layer, block) in enumerate(zip(convs, blocks)):
        where = f"Block {index} (layer {layer.name!r})"
        in_channels, out_channels = layer.kernel.shape[2], layer.kernel.shape[3]
        for key in ("conv", "1x1"):
            width = np.asarray(block[key]).size
            if width != out_channels:
                raise ValueError(
                    f"{where}: scale {key!r} has {width} channels, the layer "
                    f"has {out_channels} output channels."
                )
        has_identity = block.get("identity") is not None
        can_have_identity = can_carry_identity(layer)
        if has_identity and not can_have_identity:
            raise ValueError(
                f"{where}: the scales have an identity branch but the layer "
                f"maps {in_channels}->{out_channels} channels with strides "
                f"{tuple(layer.strides)}."
            )
        if can_have_identity and not has_identity:
            raise ValueError(
                f"{where}: the layer can carry an identity branch "
                f"({in_channels}->{out_channels}, stride 1) but its scales "
                "have none; the scales were searched for another topology."
            )
        mults[layer.kernel.path] = grad_mult(
            block["conv"], block["1x1"], has_identity, in_channels, power
        )
    return mults


def _iter_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _iter_layers(layer)
        else:
            yield layer


def encode_grad_mult(mult):
    """Encodes a mult array for an optimizer config (JSON-safe, lossless).

    A `(3, 3, Cin, Cout)` mult with the block structure of `grad_mult` is
    stored as three per-channel vectors (surround, centre, diagonal); any
    other array is stored densely as base64 float32 bytes.
    """
    mult = np.asarray(mult, dtype=np.float32)
    if mult.ndim == 4 and mult.shape[:2] == (3, 3):
        compact = _encode_block_structure(mult)
        if compact is not None:
            return compact
    return {
        "shape": list(mult.shape),
        "float32_base64": base64.b64encode(mult.tobytes()).decode("ascii"),
    }


def _encode_block_structure(mult):
    _, _, in_channels, out_channels = mult.shape
    surround = mult[0, 0, 0]
    diagonal_size = min(in_channels, out_channels)
    diagonal = mult[1, 1, np.arange(diagonal_size), np.arange(diagonal_size)]
    # Off-diagonal centre value of channel c: row 0, or row 1 for c == 0.
    rows = np.where(np.arange(out_channels) == 0, 1, 0)
    if in_channels < 2:
        rows[:] = 0
    centre = mult[1, 1, rows, np.arange(out_channels)]
    encoded = {
        "shape": list(mult.shape),
        "surround": surround.tolist(),
        "centre": centre.tolist(),
        "diagonal": diagonal.tolist(),
    }
    if not np.array_equal(decode_grad_mult(encoded), mult):
        return None
    return encoded


def decode_grad_mult(encoded):
    """Inverse of `encode_grad_mult`."""
    shape = tuple(encoded["shape"])
    if "float32_base64" in encoded:
        raw = base64.b64decode(encoded["float32_base64"])
        return np.frombuffer(raw, dtype=np.float32).reshape(shape).copy()
    _, _, in_channels, out_channels = shape
    mult = np.broadcast_to(
        np.asarray(encoded["surround"], np.float32), shape
    ).copy()
    mult[1, 1] = np.asarray(encoded["centre"], np.float32)
    diagonal = np.arange(min(in_channels, out_channels))
    mult[1, 1, diagonal, diagonal] = np.asarray(encoded["diagonal"], np.float32)
    return mult
