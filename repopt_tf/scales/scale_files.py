"""Scale files: the authors' `.pth`, our `.npz`, and the shipped presets.

`load_scales` returns one dict per block, in model order::

    [{"conv": s, "1x1": t or None, "identity": gamma or None}, ...]

each value a float32 vector of the block's width. In the authors' `.pth`
files each family names its scales its own way, read by the family's
`ScaleKeys` (`repopt_tf.models.scale_keys`; each family's folder says how
its blocks are named and ordered, e.g. RepOpt-VGG's
`stageN[.i].scale_{conv,1x1,identity}.weight`).

Our format is an `.npz` with arrays `block{i}_conv`, optional
`block{i}_1x1` and `block{i}_identity`, and a JSON string `metadata`
(variant, data set, epochs, ...).
"""

import json
from pathlib import Path

import numpy as np

from repopt_tf.atomic import atomic_path
from repopt_tf.checkpoints.state_files import read_state_dict
from repopt_tf.finite import check_finite
from repopt_tf.models.registry import FAMILIES

PRESET_DIR = Path(__file__).parent / "presets"


def list_presets():
    """Names of the shipped scale sets (the authors' CIFAR-100 searches)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.npz"))


def load_scales(path_or_preset):
    """Reads hyper-search scales from a preset name, our `.npz`, or a `.pth`.

    The scales are the per-channel constants of each block's CSLA form
    `s * conv3x3(x) + t * conv1x1(x) (+ gamma * x)`, found by a hyper-search
    (or released by the authors: the presets, their CIFAR-100 searches). A
    `.pth` may be the authors' scales file or a whole hyper-search checkpoint
    (`output/.../latest.pth` of their training script), read without torch:
    the scale tensors of any registered family are read (`ScaleKeys`),
    everything else ignored.

    Args:
        path_or_preset: a preset name (`repopt_tf.scales.list_presets()`:
            `repopt_vgg_b1`, ..., `repopt_ghostnet_0_5x`), or a path to an
            `.npz` written by `save_scales` or to an authors' `.pth`.

    Returns:
        `[{"conv": s, "1x1": t or None, "identity": gamma or None}, ...]`, one
        dict of float32 vectors per block, in model order.

    Raises:
        FileNotFoundError: neither a file nor a preset.
        ValueError: an unreadable file, scale keys of no family, a block
            lacking a branch, or NaN/inf values (named).

    Examples:
        >>> from repopt_tf import load_scales
        >>> blocks = load_scales("repopt_vgg_b1")
        >>> len(blocks), blocks[0]["conv"].shape, blocks[0]["identity"] is None
        (28, (64,), True)

    References:
        Ding et al., 2023, Sec. 3.3, https://arxiv.org/abs/2205.15242; the
        released scales: https://github.com/DingXiaoH/RepOptimizers.
    """
    source = str(path_or_preset)
    if source in list_presets():
        return load_scales(PRESET_DIR / f"{source}.npz")
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f"Scales file {source!r} not found (and not a preset; presets: "
            f"{', '.join(list_presets())})."
        )
    if path.suffix == ".npz":
        return checked_blocks(_load_npz(path)[0], source)
    return checked_blocks(
        scales_from_state_dict(read_state_dict(path), source), source
    )


def checked_blocks(blocks, source):
    """`blocks`, once every block's branch scales are checked: vectors of
    one length, finite (a `NonFiniteError` names the block).

    Raises:
        ValueError: naming the block and what is wrong.
    """
    for index, block in enumerate(blocks):
        present = {k: v for k, v in block.items() if v is not None}
        check_finite(
            {f"block {index} {k}": v for k, v in present.items()}, source
        )
        lengths = {k: np.asarray(v).size for k, v in present.items()}
        if len(set(lengths.values())) > 1:
            said = ", ".join(f"{k} {n}" for k, n in lengths.items())
            raise ValueError(
                f"{source}: block {index}'s scales differ in length ({said}): "
                "each branch has one scale per output channel."
            )
    return blocks


def load_scales_metadata(path_or_preset):
    """The metadata dict stored with an `.npz` scales file or preset."""
    source = str(path_or_preset)
    path = PRESET_DIR / f"{source}.npz" if source in list_presets() else source
    return _load_npz(path)[1]


def save_scales(path, blocks, **metadata):
    """Writes scales and their metadata to an `.npz` file, atomically.

    The file holds arrays `block{i}_conv`, optional `block{i}_1x1` and
    `block{i}_identity`, and a JSON string `metadata`; `load_scales` reads it
    back, `load_scales_metadata` its metadata.

    Args:
        path: the `.npz` file to write (its folder must exist).
        blocks: scales in `load_scales` format.
        **metadata: JSON-serialisable facts to keep with them (variant, data
            set, epochs, accuracy, ...).

    Returns:
        The path written, as a `pathlib.Path`.

    Raises:
        WriteError: the file cannot be written whole (e.g. a full disk); no
            partial file is left.

    Examples:
        >>> import tempfile, pathlib
        >>> from repopt_tf import load_scales, save_scales
        >>> from repopt_tf.scales import load_scales_metadata
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "scales.npz"
        >>> _ = save_scales(path, load_scales("repopt_vgg_b1"), variant="repopt_vgg_b1")
        >>> len(load_scales(path)), load_scales_metadata(path)["variant"]
        (28, 'repopt_vgg_b1')

    References:
        Ding et al., 2023, Sec. 3.3, https://arxiv.org/abs/2205.15242.
    """
    arrays = {"metadata": np.asarray(json.dumps(metadata))}
    for index, block in enumerate(blocks):
        for key in ("conv", "1x1", "identity"):
            if block.get(key) is not None:
                arrays[f"block{index}_{key}"] = np.asarray(
                    block[key], np.float32
                )
    path = Path(path)
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        np.savez(file, **arrays)
    return path


def scales_from_state_dict(state, source="state dict"):
    """Converts the scale tensors of a hyper-search state dict of any
    registered family (its `ScaleKeys`; module docstring) to the block
    list."""
    found = {}  # family name -> {block id: {branch: vector}}
    for key, value in state.items():
        for family in FAMILIES.values():
            parsed = family.scale_keys and family.scale_keys.parse(key)
            if parsed:
                block, branch = parsed
                vector = np.asarray(value, np.float32).reshape(-1)
                found.setdefault(family.name, {}).setdefault(block, {})
                found[family.name][block][branch] = vector
    if not found:
        raise ValueError(
            f"{source}: no "
            + " or ".join(
                f"{family.scale_keys.example!r} ({family.label})"
                for family in FAMILIES.values()
                if family.scale_keys
            )
            + " entries found."
        )
    if len(found) > 1:
        raise ValueError(
            f"{source} mixes "
            + " and ".join(FAMILIES[name].label for name in sorted(found))
            + " scale keys."
        )
    ((name, blocks),) = found.items()
    keys = FAMILIES[name].scale_keys
    for block_id in sorted(blocks):
        problem = keys.missing_branch(block_id, blocks[block_id])
        if problem:
            raise ValueError(f"{source}: {problem}.")
    return [
        {
            part: blocks[block_id].get(part)
            for part in ("conv", "1x1", "identity")
        }
        for block_id in sorted(blocks)
    ]


def _load_npz(path):
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{path} is not a readable .npz scales file."
        ) from error
    with data:
        if "metadata" not in data or "block0_conv" not in data:
            raise ValueError(f"{path} is not a repopt_tf scales file.")
        try:  # arrays are read here: object arrays fail (allow_pickle off)
            metadata = json.loads(str(data["metadata"]))
            blocks = []
            index = 0
            while f"block{index}_conv" in data:
                blocks.append(
                    {
                        key: np.asarray(data[name], np.float32)
                        if (name := f"block{index}_{key}") in data
                        else None
                        for key in ("conv", "1x1", "identity")
                    }
                )
                index += 1
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"{path} is not a readable .npz scales file ({error})."
            ) from error
    return blocks, metadata
