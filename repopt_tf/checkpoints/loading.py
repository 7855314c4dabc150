"""`load_weights`: one entry point for every weights file a user may hold.

- `.pth` / `.pt` / `.pth.tar` / `.safetensors`: a state dict in a
  reference layout of a registered family (`ModelFamily.layouts`: the
  authors' and timm's, in each family's folder), read without torch
  (`state_files`);
- `.keras`: a model saved by this library (`model.keras`), copied layer by
  layer by name;
- `.weights.h5`: Keras weights of the same architecture.
"""

import zipfile
from pathlib import Path

import keras

from repopt_tf.checkpoints import layout
from repopt_tf.checkpoints.layout import LoadReport
from repopt_tf.checkpoints.layout import model_kind
from repopt_tf.checkpoints.state_files import STATE_DICT_SUFFIXES
from repopt_tf.checkpoints.state_files import TORCH_SUFFIXES
from repopt_tf.checkpoints.state_files import is_state_dict_file
from repopt_tf.checkpoints.state_files import read_state_dict
from repopt_tf.finite import check_model_finite
from repopt_tf.models.api import build_model
from repopt_tf.models.api import fuse_repvgg
from repopt_tf.models.registry import FAMILIES
from repopt_tf.models.registry import family_of
from repopt_tf.models.registry import registered_layouts


def layout_of(state, source="state dict"):
    """The `Layout` a reference state dict is in: the first of the
    registered families' layouts that recognizes it."""
    for candidate in registered_layouts():
        if candidate.recognizes(state):
            return candidate
    families = ", ".join(f.label or f.name for f in FAMILIES.values())
    raise ValueError(
        f"{source} is in none of the registered families' state-dict "
        f"layouts ({families}; the authors' and timm's); its first keys: "
        f"{', '.join(list(state)[:5])}."
    )


def detect_form(state, source="state dict"):
    """The `Form` (name, kind, ...) of a reference state dict."""
    return layout_of(state, source).detect_form(state, source)


def matching_variants(state):
    """Variant names whose table entry has the state dict's shape."""
    return layout_of(state).matching_variants(state)


def load_state_dict(model, state, skip_head=False, source="state dict"):
    """Copies a reference state dict into a `build_model` model of its
    form; see `repopt_tf.checkpoints.layout.load_state_dict`."""
    return layout.load_state_dict(
        model, state, layout_of(state, source), skip_head, source
    )


def is_torch_checkpoint(path):
    """Whether `path` is named like a `torch.save` file (`is_state_dict_file`
    also takes `.safetensors`)."""
    return str(path).lower().endswith(TORCH_SUFFIXES)


def load_weights(model, path, ema=False, skip_head=False):
    """Loads a weights file into a model and says what it loaded.

    A state dict (`.pth`, `.pt`, `.pth.tar` or `.safetensors`, read without
    torch) is mapped onto the model by its family's layouts (the authors' and
    timm's names, `ModelFamily.layouts`) strictly: every key must map, shapes
    must fit, conv weights `(Cout, Cin, kh, kw)` become `(kh, kw, Cin, Cout)`.
    A `.keras` model is copied layer by layer by name; `.weights.h5` are Keras
    weights of the same architecture. Non-finite values are refused.

    Args:
        model: a model from `build_model` (for a state dict: of the file's
            kind).
        path: a `.pth`, `.safetensors`, `.keras` or `.weights.h5` file.
        ema: read the checkpoint's `ema` weights instead of `model` (`.pth`).
        skip_head: keep the model's classifier as built (other classes).

    Returns:
        A `LoadReport`: source, form, tensors and values loaded, whether the
        head was skipped.

    Raises:
        FileNotFoundError: no such file.
        ValueError: with a message naming what does not fit (missing or
            unexpected keys, a shape, the form, NaN/inf).

    Examples:
        >>> import tempfile, pathlib
        >>> from repopt_tf import build_model, load_weights
        >>> source = build_model("repopt_vgg_tiny", 10, (32, 32, 3))
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.weights.h5"
        >>> source.save_weights(path)
        >>> report = load_weights(build_model("repopt_vgg_tiny", 10, (32, 32, 3)), path)
        >>> report.form, report.tensors
        ('Keras weights', 32)

    References:
        The authors' checkpoints: https://github.com/DingXiaoH/RepOptimizers
        (Ding et al., 2023, https://arxiv.org/abs/2205.15242); timm's RepVGG
        and RepGhostNet: https://github.com/huggingface/pytorch-image-models.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Weights file {path} not found.")
    if is_state_dict_file(path):
        state = read_state_dict(path, ema=ema)
        return load_state_dict(
            model, state, skip_head=skip_head, source=str(path)
        )
    if ema:
        raise ValueError(f"ema applies to PyTorch checkpoints, not {path}.")
    if path.name.endswith(".weights.h5"):
        model.load_weights(path)
        check_model_finite(model, str(path))
        return LoadReport(
            str(path),
            "Keras weights",
            len(model.weights),
            model.count_params(),
            False,
        )
    if path.suffix == ".keras":
        return _copy_from_saved_model(model, path, skip_head)
    raise ValueError(
        f"Unknown weights format {path.name}: expected a PyTorch or "
        f"safetensors state dict ({', '.join(STATE_DICT_SUFFIXES)}), a "
        ".keras model or .weights.h5."
    )


def model_from_checkpoint(
    path, variant=None, image_size=224, ema=False, fuse=True
):
    """Builds the model a reference PyTorch checkpoint holds and loads it.

    The form (target, RepVGG train/deploy, ...) and the number of classes and
    input channels come from the file; `variant` is inferred from its shapes
    when None (a `repvgg_*` name for RepVGG layouts, else `repopt_vgg_*`).
    With `fuse`, a RepVGG training-form model is returned fused
    (`fuse_repvgg`), ready for export. Returns `(model, LoadReport)`.
    """
    return model_from_state_dict(
        read_state_dict(path, ema=ema),
        variant,
        image_size,
        fuse,
        source=str(path),
    )


def model_from_state_dict(
    state, variant=None, image_size=224, fuse=True, source="state dict"
):
    """`model_from_checkpoint` for a state dict already in memory."""
    state_layout = layout_of(state, source)
    form = state_layout.detect_form(state, source)
    if form.kind == "hs":
        raise ValueError(
            f"{source} is a hyper-search model: what it holds for deployment is "
            "its scales (load_scales / --config.scales), not a network to "
            "export. Train a target model from them."
        )
    if variant is None:
        candidates = state_layout.matching_variants(state)
        family = state_layout.variant_prefix(form)
        preferred = [
            n for n in candidates if n.startswith(family)
        ] or candidates
        if not preferred:
            raise ValueError(
                f"{source} matches no variant in the table: it looks like "
                f"{state_layout.looks_like(state)}. Pass the variant "
                "explicitly."
            )
        variant = preferred[0]
    model = build_model(
        variant,
        state_layout.num_classes(state) or 1000,
        (image_size, image_size, state_layout.channels(state) or 3),
        kind=form.kind,
    )
    report = load_state_dict(model, state, source=source)
    if fuse and form.kind == family_of(variant).branch_kind:
        model = fuse_repvgg(model)
    return model, report


def read_keras_model(path, compile=False):
    """`keras.models.load_model(path)`, with one clear error for a missing,
    truncated or foreign file (Keras says "File not found" for all of them).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable `.keras` model, or a weight
            holds NaN/inf (`NonFiniteError`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Keras model {path} not found.")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a .keras model: not a zip archive (truncated or "
            "another format)."
        )
    try:
        model = keras.models.load_model(path, compile=compile)
    except Exception as error:  # Keras raises many types for bad files
        raise ValueError(
            f"Cannot read {path} as a Keras model: "
            f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
        ) from error
    check_model_finite(model, str(path))
    return model


def _copy_from_saved_model(model, path, skip_head):
    saved = read_keras_model(path)
    if model_kind(saved) != model_kind(model):
        raise ValueError(
            f"{path} holds a kind={model_kind(saved)!r} model, the model to "
            f"load into has kind={model_kind(model)!r}."
        )
    source = {layer.name: layer for layer in saved.layers if layer.weights}
    target = [
        layer
        for layer in model.layers
        if layer.weights and not (skip_head and layer.name == "classifier")
    ]
    missing = sorted({layer.name for layer in target} - set(source))
    if missing:
        raise ValueError(
            f"{path} lacks layers {', '.join(missing[:5])} of {model.name}."
        )
    tensors = values = 0
    for layer in target:
        weights = source[layer.name].get_weights()
        shapes = [tuple(w.shape) for w in weights]
        if shapes != [tuple(w.shape) for w in layer.weights]:
            hint = (
                " (other classes: skip the head)"
                if layer.name == "classifier"
                else ""
            )
            raise ValueError(
                f"{path}: layer {layer.name} has weights of shapes {shapes}, "
                f"{model.name} needs {[tuple(w.shape) for w in layer.weights]}"
                f"{hint}."
            )
        layer.set_weights(weights)
        tensors += len(weights)
        values += sum(w.size for w in weights)
    return LoadReport(str(path), "Keras model", tensors, values, skip_head)
