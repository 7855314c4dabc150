"""`load_weights`: one entry point for every weights file a user may hold.

- `.pth` / `.pt` / `.pth.tar`: a PyTorch checkpoint in a reference layout
  (see `torch_layouts`), read without torch (see `torch_file`);
- `.keras`: a model saved by this library (`model.keras`), copied layer by
  layer by name;
- `.weights.h5`: Keras weights of the same architecture.
"""

from pathlib import Path

import keras

from repopt_tf.checkpoints.torch_file import read_state_dict
from repopt_tf.checkpoints.torch_layouts import LoadReport
from repopt_tf.checkpoints.torch_layouts import load_state_dict
from repopt_tf.checkpoints.torch_layouts import model_kind

TORCH_SUFFIXES = (".pth", ".pt", ".pth.tar", ".ckpt")


def is_torch_checkpoint(path):
    return str(path).lower().endswith(TORCH_SUFFIXES)


def load_weights(model, path, ema=False, skip_head=False):
    """Loads `path` into `model` and returns a `LoadReport`.

    Args:
        model: a model from `build_model` (for `.pth`: of the file's kind).
        path: a `.pth`, `.keras` or `.weights.h5` file.
        ema: read the checkpoint's `ema` weights instead of `model` (`.pth`).
        skip_head: keep the model's classifier as built (other classes).

    Raises:
        FileNotFoundError, ValueError: with a message naming what does not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Weights file {path} not found.")
    if is_torch_checkpoint(path):
        state = read_state_dict(path, ema=ema)
        return load_state_dict(model, state, skip_head=skip_head,
                               source=str(path))
    if ema:
        raise ValueError(f"ema applies to PyTorch checkpoints, not {path}.")
    if path.name.endswith(".weights.h5"):
        model.load_weights(path)
        return LoadReport(str(path), "Keras weights", len(model.weights),
                          model.count_params(), False)
    if path.suffix == ".keras":
        return _copy_from_saved_model(model, path, skip_head)
    raise ValueError(
        f"Unknown weights format {path.name}: expected a PyTorch checkpoint "
        f"({', '.join(TORCH_SUFFIXES)}), a .keras model or .weights.h5."
    )


def _copy_from_saved_model(model, path, skip_head):
    try:
        saved = keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for bad files
        raise ValueError(f"Cannot read {path} as a Keras model: {error}") from error
    if model_kind(saved) != model_kind(model):
        raise ValueError(
            f"{path} holds a kind={model_kind(saved)!r} model, the model to "
            f"load into has kind={model_kind(model)!r}."
        )
    source = {layer.name: layer for layer in saved.layers if layer.weights}
    target = [layer for layer in model.layers if layer.weights
              and not (skip_head and layer.name == "classifier")]
    missing = sorted({layer.name for layer in target} - set(source))
    if missing:
        raise ValueError(f"{path} lacks layers {', '.join(missing[:5])} of "
                         f"{model.name}.")
    tensors = values = 0
    for layer in target:
        weights = source[layer.name].get_weights()
        shapes = [tuple(w.shape) for w in weights]
        if shapes != [tuple(w.shape) for w in layer.weights]:
            hint = (" (other classes: skip the head)"
                    if layer.name == "classifier" else "")
            raise ValueError(
                f"{path}: layer {layer.name} has weights of shapes {shapes}, "
                f"{model.name} needs {[tuple(w.shape) for w in layer.weights]}"
                f"{hint}."
            )
        layer.set_weights(weights)
        tensors += len(weights)
        values += sum(w.size for w in weights)
    return LoadReport(str(path), "Keras model", tensors, values, skip_head)
