"""Grad Mults (Ding et al., ICLR 2023, §3.2 and Eq. 3) for the optimizers.

For a block whose imaginary CSLA form is ``s*conv3x3(x) + t*conv1x1(x) (+ x)``
with per-output-channel constants ``s`` and ``t``, the Grad Mult of the one
equivalent 3x3 kernel is ``M = merge(s**p, t**p, 1)`` (`repopt_tf.csla`), with
``p = 2`` for SGD and ``p = 1`` for AdamW.
"""

import base64

import numpy as np

from repopt_tf.csla import CompactMult
from repopt_tf.csla import csla_grad_mult
from repopt_tf.models.family import ConvBlocks
from repopt_tf.models.registry import variant_of


def grad_mult(scale_conv, scale_1x1, has_identity, in_channels, power=2):
    """Returns the Grad Mult of one RepOpt block as a `(3, 3, Cin, Cout)` array.

    The rule (Ding et al., Eq. 3): a block whose imaginary CSLA form is
    `s * conv3x3(x) + t * conv1x1(x) (+ x)` with per-output-channel constants
    `s`, `t` trains exactly like one 3x3 conv whose gradient is multiplied by

        M[:, :, i, j] = s_j**p                         off the centre tap,
        M[1, 1, i, j] = s_j**p + t_j**p (+ 1 if i == j, with identity),

    `p = 2` for SGD (`RepOptSGD`) and `p = 1` for AdamW (`RepOptAdamW`).

    Args:
        scale_conv: vector `s` of length Cout (3x3 branch scales).
        scale_1x1: vector `t` of length Cout (1x1 branch scales), or None for a
            block without a 1x1 branch.
        has_identity: whether the block has an identity branch (requires
            `in_channels == Cout` and stride 1).
        in_channels: number of input channels Cin.
        power: 2 for SGD-type rules, 1 for AdamW.

    Returns:
        A float32 numpy array of shape `(3, 3, in_channels, Cout)`.

    Raises:
        ValueError: lengths that differ, `has_identity` with Cin != Cout, or a
            power other than 1 or 2.

    Examples:
        >>> import numpy as np
        >>> from repopt_tf import grad_mult
        >>> M = grad_mult(np.array([2.0, 3.0]), np.array([1.0, 1.0]), True, 2)
        >>> M.shape
        (3, 3, 2, 2)
        >>> float(M[0, 0, 0, 1]), float(M[1, 1, 0, 0]), float(M[1, 1, 0, 1])
        (9.0, 6.0, 10.0)

    References:
        Ding et al., 2023, "Re-parameterizing Your Optimizers rather than
        Architectures", ICLR, https://arxiv.org/abs/2205.15242 (Sec. 3.2,
        Eq. 3).
    """
    return csla_grad_mult(
        scale_conv, scale_1x1, has_identity, in_channels, power
    )


def grad_mults_for_model(model, blocks, layer_pattern=None, power=2):
    """Builds `{variable.path: M}` for the re-parameterised convs of a model.

    The block convs are the family's for a `build_model` model (its
    `ModelFamily.block_convs`: 3x3 convs, depthwise convs, ...), else the
    `Conv2D` and `DepthwiseConv2D` layers with a 3x3 kernel whose name
    fully matches `layer_pattern` (default: every one; none is an error).
    They are taken in model order and paired with `blocks`, a
    list in the format of `load_scales`: one dict per block with keys
    `"conv"`, `"1x1"` and `"identity"` (a vector, or None when the block has
    no such branch). Each `M` is `grad_mult` of its block, in the variable's
    own layout.

    Args:
        model: a Keras model.
        blocks: the scales, one dict per block (`load_scales` format).
        layer_pattern: regex (full match) naming the block convs of a model of
            no registered family; None: the family's, else every 3x3 conv.
        power: 2 for `RepOptSGD`, 1 for `RepOptAdamW`.

    Returns:
        A dict `{kernel variable path: array}` for `RepOptSGD(grad_mults=...)`.

    Raises:
        ValueError: naming the block, when the number of matched layers, a
            width, or the presence of an identity branch does not fit.

    Examples:
        >>> from repopt_tf import build_model, extract_scales, grad_mults_for_model
        >>> hs = build_model("repopt_vgg_tiny", 10, (32, 32, 3), kind="hs")
        >>> blocks = extract_scales(hs)  # the scales of a hyper-search model
        >>> plain = build_model("repopt_vgg_tiny", 10, (32, 32, 3))
        >>> mults = grad_mults_for_model(plain, blocks)
        >>> len(mults), mults["stage2_block1_conv/kernel"].shape
        (6, (3, 3, 16, 16))

    References:
        Ding et al., 2023, https://arxiv.org/abs/2205.15242 (Sec. 3.2).
    """
    handler = ConvBlocks(layer_pattern or r".*")
    if layer_pattern is None:
        handler = variant_of(model)[0] or handler
    return handler.grad_mults(model, blocks, power)


def encode_grad_mult(mult):
    """Encodes a mult array for an optimizer config (JSON-safe, lossless):
    its `CompactMult` form when it has one, else base64 float32 bytes."""
    mult = np.asarray(mult, dtype=np.float32)
    compact = CompactMult.of(mult)
    if compact is not None:
        return compact.to_config()
    return {
        "shape": list(mult.shape),
        "float32_base64": base64.b64encode(mult.tobytes()).decode("ascii"),
    }


def decode_grad_mult(encoded):
    """Inverse of `encode_grad_mult` (also reads the `diagonal` form that
    files saved before `CompactMult` hold)."""
    shape = tuple(encoded["shape"])
    if "float32_base64" in encoded:
        raw = base64.b64decode(encoded["float32_base64"])
        return np.frombuffer(raw, dtype=np.float32).reshape(shape).copy()
    if "diagonal" in encoded:
        mult = CompactMult(
            shape,
            np.asarray(encoded["surround"], np.float32),
            np.asarray(encoded["centre"], np.float32),
        ).expand()
        diagonal = np.arange(min(shape[2:]))
        mult[1, 1, diagonal, diagonal] = encoded["diagonal"]
        return mult
    return CompactMult.from_config(encoded).expand()


def saved_grad_mults(path):
    """`(optimizer class name, {variable path: M})` of the RepOpt optimizer
    a `.keras` file was compiled with (its config holds the mults), read
    from the archive's `config.json` without building the model; None for
    another file or an optimizer without Grad Mults."""
    import json
    import zipfile

    if not str(path).endswith(".keras"):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    optimizer = (config.get("compile_config") or {}).get("optimizer") or {}
    mults = (optimizer.get("config") or {}).get("grad_mults")
    if not mults:
        return None
    return optimizer.get("class_name"), {
        key: decode_grad_mult(value) for key, value in mults.items()
    }
