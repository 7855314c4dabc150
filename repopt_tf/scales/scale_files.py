"""Scale files: the authors' `.pth`, our `.npz`, and the shipped presets.

`load_scales` returns one dict per block, in model order::

    [{"conv": s, "1x1": t, "identity": gamma or None}, ...]

each value a float32 vector of the block's width. Blocks are ordered
stage0 (the stem), stage1.0, stage1.1, ..., as in the model.

Our format is an `.npz` with arrays `block{i}_conv`, `block{i}_1x1`,
optional `block{i}_identity`, and a JSON string `metadata` (variant, data
set, epochs, ...).
"""

import json
import re
from pathlib import Path

import numpy as np

from repopt_tf.checkpoints.torch_file import read_state_dict

PRESET_DIR = Path(__file__).parent / "presets"
_KEY = re.compile(r"stage(\d+)(?:\.(\d+))?\.scale_(conv|1x1|identity)\.weight")


def list_presets():
    """Names of the shipped scale sets (the authors' CIFAR-100 searches)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.npz"))


def load_scales(path_or_preset):
    """Reads scales from a preset name, our `.npz`, or an official `.pth`.

    A `.pth` may be the authors' scales file or a whole hyper-search
    checkpoint (`output/.../latest.pth` of their training script): the
    `stageN[.i].scale_*.weight` tensors are read, everything else ignored.
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
        return _load_npz(path)[0]
    return scales_from_state_dict(read_state_dict(path), source)


def load_scales_metadata(path_or_preset):
    """The metadata dict stored with an `.npz` scales file or preset."""
    source = str(path_or_preset)
    path = PRESET_DIR / f"{source}.npz" if source in list_presets() else source
    return _load_npz(path)[1]


def save_scales(path, blocks, **metadata):
    """Writes `blocks` (load_scales format) and metadata to an `.npz` file."""
    arrays = {"metadata": np.asarray(json.dumps(metadata))}
    for index, block in enumerate(blocks):
        for key in ("conv", "1x1", "identity"):
            if block.get(key) is not None:
                arrays[f"block{index}_{key}"] = np.asarray(
                    block[key], np.float32
                )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:
        np.savez(file, **arrays)
    return path


def scales_from_state_dict(state, source="state dict"):
    """Converts `stageN[.i].scale_*.weight` tensors to the block list."""
    found = {}
    for key, value in state.items():
        match = _KEY.fullmatch(key)
        if match is None:
            continue
        stage, index, branch = match.groups()
        block = (int(stage), int(index or 0))
        found.setdefault(block, {})[branch] = np.asarray(
            value, np.float32
        ).reshape(-1)
    if not found:
        raise ValueError(
            f"{source}: no 'stageN.i.scale_*.weight' entries found."
        )
    blocks = []
    for block_id in sorted(found):
        branches = found[block_id]
        missing = {"conv", "1x1"} - set(branches)
        if missing:
            raise ValueError(
                f"{source}: block stage{block_id[0]}.{block_id[1]} lacks "
                f"scale_{sorted(missing)[0]}."
            )
        blocks.append(
            {
                "conv": branches["conv"],
                "1x1": branches["1x1"],
                "identity": branches.get("identity"),
            }
        )
    return blocks


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
        metadata = json.loads(str(data["metadata"]))
        blocks = []
        index = 0
        while f"block{index}_conv" in data:
            identity_key = f"block{index}_identity"
            blocks.append(
                {
                    "conv": data[f"block{index}_conv"],
                    "1x1": data[f"block{index}_1x1"],
                    "identity": data[identity_key]
                    if identity_key in data
                    else None,
                }
            )
            index += 1
    return blocks, metadata
