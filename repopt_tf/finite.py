"""Non-finite numbers refused where they come in: a weights file, a saved
model, a scales file or a model about to be exported holding NaN or inf is
named with the tensor, instead of training or exporting into NaN outputs."""

import numpy as np

from repopt_tf.backend import to_numpy


class NonFiniteError(ValueError):
    """A tensor holds NaN or inf."""


def check_finite(tensors, source):
    """Raises `NonFiniteError` naming the first tensor with NaN or inf.

    Args:
        tensors: `{name: array}` (non-float arrays are skipped).
        source: what holds them (a file name), for the message.

    Examples:
        >>> check_finite({"conv.weight": np.ones(3)}, "model.pth")
    """
    for name, value in tensors.items():
        value = np.asarray(value)
        if value.dtype.kind not in "fc":
            continue
        bad = ~np.isfinite(value)
        if bad.any():
            raise NonFiniteError(
                f"{source}: tensor {name!r} holds {int(bad.sum())} NaN/inf "
                f"value(s) of {value.size}; the file is corrupt or comes "
                "from a run that diverged."
            )


def check_model_finite(model, source):
    """`check_finite` over a Keras model's weights, named by path."""
    check_finite(
        {variable.path: to_numpy(variable) for variable in model.weights},
        source,
    )
