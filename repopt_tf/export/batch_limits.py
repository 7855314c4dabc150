"""What a fixed input batch of an export may be: no larger than the
representative images that calibrate it, and small enough that the
converter's calibration (every activation of one batch, float32, kept at
once) fits in the memory this machine has free."""

import os

import numpy as np


def activation_bytes_per_image(model):
    """float32 bytes of all of one image's layer outputs (an upper bound
    for what calibration keeps per image)."""
    total = 0
    for layer in model.layers:
        try:
            outputs = layer.output
        except (AttributeError, ValueError):  # a layer called twice
            continue
        for tensor in outputs if isinstance(outputs, list) else [outputs]:
            total += int(np.prod([d or 1 for d in tensor.shape[1:]]))
    return 4 * total


def available_memory_bytes():
    """Free physical memory (POSIX), or None where it cannot be read."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fixed_batch(model, batch_size, representative):
    """Raises ValueError naming the limit a fixed `batch_size` breaks.

    Args:
        model: the Keras model to export.
        batch_size: the fixed input batch, or None/0 (dynamic: no limit).
        representative: how many representative images calibrate it.

    Examples:
        >>> import keras
        >>> inputs = keras.Input((8, 8, 1))
        >>> model = keras.Model(inputs, keras.layers.Flatten()(inputs))
        >>> check_fixed_batch(model, 4, representative=300)
    """
    if not batch_size:
        return
    if batch_size > representative:
        raise ValueError(
            f"--batch_size={batch_size} is larger than the {representative} "
            "representative images that calibrate it; pass a smaller batch "
            "or more --representative images."
        )
    needed = batch_size * activation_bytes_per_image(model)
    free = available_memory_bytes()
    if free is not None and needed > free // 2:
        raise ValueError(
            f"--batch_size={batch_size} needs about {needed / 2**30:.1f} GiB "
            f"for calibration, more than half the {free / 2**30:.1f} GiB free "
            "here; pass a smaller batch."
        )
