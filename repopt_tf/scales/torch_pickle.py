"""Reads a PyTorch state-dict zip file of float tensors without torch.

A restricted `pickle.Unpickler` resolves only `collections.OrderedDict`,
`torch._utils._rebuild_tensor_v2` and the float storage types; anything else
in the pickle (code, other classes) raises `ValueError` instead of running.
"""

import pickle
import zipfile
from collections import OrderedDict

import numpy as np

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
}


def _rebuild_tensor(storage, offset, size, stride, *unused):
    del unused
    itemsize = storage.itemsize
    return np.lib.stride_tricks.as_strided(
        storage[offset:],
        shape=tuple(size),
        strides=tuple(s * itemsize for s in stride),
    ).copy()


class _StorageType:
    def __init__(self, dtype):
        self.dtype = dtype


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, archive, prefix):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise ValueError(
            f"Refusing to load {module}.{name}: only tensors and OrderedDict "
            "are allowed in a scales file."
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise ValueError(f"Unsupported persistent id {pid!r}.")
        storage_type, key = pid[1], pid[2]
        if not isinstance(storage_type, _StorageType):
            raise ValueError(f"Unsupported storage type {storage_type!r}.")
        raw = self._archive.read(f"{self._prefix}/data/{key}")
        return np.frombuffer(raw, dtype=storage_type.dtype)


def read_torch_state_dict(path):
    """Returns `OrderedDict[str, np.ndarray]` from a `torch.save` zip file."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise ValueError(
            f"{path} is not a PyTorch zip checkpoint (torch>=1.6 format)."
        ) from error
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ValueError(f"{path} has no single data.pkl entry.")
        prefix = pickles[0][: -len("/data.pkl")]
        with archive.open(pickles[0]) as file:
            try:
                state = _RestrictedUnpickler(file, archive, prefix).load()
            except (pickle.UnpicklingError, KeyError, EOFError) as error:
                raise ValueError(f"{path}: corrupt checkpoint ({error}).") from error
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict.")
    return state
