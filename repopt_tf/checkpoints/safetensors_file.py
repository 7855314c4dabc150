"""Reads `.safetensors` files (timm, the Hugging Face hub) into numpy.

The format is 8 bytes of little-endian header length `N`, a JSON header of
`N` bytes (`{name: {"dtype", "shape", "data_offsets": [begin, end]}}`,
plus an optional `"__metadata__"` of strings), then the tensors' raw
little-endian bytes, offsets counted from the end of the header. Nothing is
executed; the header is checked against the file (offsets inside the data,
sizes that fit dtype and shape, byte ranges that tile the data without
overlap or hole) before the tensors are used. BF16 is widened to float32.
"""

import json
from pathlib import Path

import numpy as np

from repopt_tf.checkpoints.torch_file import bfloat16_to_float32

_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,  # widened below
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_MAX_HEADER = 100 * 1024 * 1024


def read_safetensors(path):
    """`{name: np.ndarray}` of a `.safetensors` file (module docstring).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a safetensors file, or truncated / inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} not found.")
    data = path.read_bytes()
    if len(data) < 8:
        raise ValueError(f"{path} is not a safetensors file (too short).")
    length = int.from_bytes(data[:8], "little")
    if not 2 <= length <= min(_MAX_HEADER, len(data) - 8):
        raise ValueError(
            f"{path} is not a safetensors file (header length {length} for "
            f"a {len(data)}-byte file)."
        )
    try:
        header = json.loads(data[8 : 8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{path}: unreadable safetensors header ({error})."
        ) from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the safetensors header is not a table.")
    body = memoryview(data)[8 + length :]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        tensors[name] = _tensor(body, name, entry, path)
    _check_coverage(header, len(body), path)
    return tensors


def _check_coverage(header, size, path):
    """The tensors' byte ranges tile the data exactly, as the format
    requires: no overlap (two tensors sharing bytes), no hole, no tail."""
    spans = sorted(
        (tuple(int(o) for o in entry["data_offsets"]), name)
        for name, entry in header.items()
        if name != "__metadata__"
    )
    end, previous = 0, None
    for (begin, stop), name in spans:
        if begin != end:
            what = "overlaps" if begin < end else "leaves a gap after"
            raise ValueError(
                f"{path}: tensor {name!r} (bytes {begin}-{stop}) {what} "
                f"{previous!r} (ends at {end}); the file is corrupt."
            )
        end, previous = stop, name
    if end != size:
        raise ValueError(
            f"{path}: the tensors cover {end} of the {size} data bytes; "
            "the file is corrupt."
        )


def _tensor(body, name, entry, path):
    try:
        dtype = _DTYPES[entry["dtype"]]
        shape = tuple(int(d) for d in entry["shape"])
        begin, end = (int(o) for o in entry["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f"{path}: tensor {name!r} has a bad header entry {entry!r} "
            f"(dtypes: {', '.join(_DTYPES)})."
        ) from None
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if not 0 <= begin <= end <= len(body) or end - begin != size:
        raise ValueError(
            f"{path}: tensor {name!r} ({entry['dtype']} {list(shape)}) "
            f"points at bytes {begin}-{end} of {len(body)}; the file is "
            "truncated or corrupt."
        )
    value = np.frombuffer(
        body[begin:end], dtype=np.dtype(dtype).newbyteorder("<")
    )
    value = value.reshape(shape)
    value = value.astype(value.dtype.newbyteorder("="))
    return bfloat16_to_float32(value) if entry["dtype"] == "BF16" else value
