"""Reads `torch.save` zip files into numpy, without torch and without running code.

A `torch.save` file is a zip archive holding `<name>/data.pkl` (a pickle
whose tensors point at raw storages) and `<name>/data/<key>` (the storages'
bytes, little-endian). `read_torch_file` unpickles it with an allow-list:

- tensors (`torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`) become
  `np.ndarray` (bfloat16 is widened to float32);
- containers (`collections.OrderedDict`, `builtins.set`/`frozenset`) are
  themselves;
- configs saved by training scripts (`yacs.config.CfgNode`,
  `argparse.Namespace`) become an inert `SavedObject` that records its class
  name and the state the pickle gives it;
- anything else (a function, `os.system`, a model class) raises
  `UnsafeCheckpointError` before it is touched: nothing is imported or called
  but the names above, which build data only.

`state_dict_from_checkpoint` then picks the model's tensors out of the layouts
the reference training scripts write (a bare state dict, `{"model": ...}`,
`{"state_dict": ...}`, `{"ema": ...}`) and drops `module.` prefixes
(DistributedDataParallel).
"""

import pickle
import zipfile

import numpy as np

from repopt_tf.finite import check_finite

# torch storage class -> numpy dtype of its bytes. BFloat16 is read as uint16
# and widened (see bfloat16_to_float32).
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafeCheckpointError(ValueError):
    """The pickle names a class or function outside the allow-list."""


class SavedObject(dict):
    """An allow-listed non-tensor object (e.g. a yacs config), kept as data.

    Holds the dict items the pickle set, `class_name` and `state` (what the
    pickle's BUILD gave it). None of the original class's code runs.
    """

    class_name = ""

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"SavedObject({self.class_name}, {dict.__repr__(self)})"


def _saved_object_type(module, name):
    return type(name, (SavedObject,), {"class_name": f"{module}.{name}"})


_SAVED_OBJECTS = {
    ("yacs.config", "CfgNode"),
    ("argparse", "Namespace"),
}


class _Storage:
    def __init__(self, name):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


def bfloat16_to_float32(bits):
    """bfloat16 bit patterns (uint16) -> float32 (the high half)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _rebuild_tensor(storage, offset, size, stride, *unused):
    """`torch._utils._rebuild_tensor_v2` -> a contiguous numpy array; the
    tensor's extent is checked against its storage first."""
    del unused
    values, name = storage
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if (
        len(size) != len(stride)
        or offset < 0
        or min(size + stride, default=0) < 0
    ):
        raise ValueError(f"a tensor with a bad layout {size} / {stride}")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if 0 not in size and last >= len(values):
        raise ValueError(
            f"a {list(size)} tensor reads element {last} of a "
            f"{len(values)}-element storage (truncated or corrupt)"
        )
    array = np.lib.stride_tricks.as_strided(
        values[offset:],
        shape=size,
        strides=tuple(s * values.itemsize for s in stride),
    ).copy()
    return bfloat16_to_float32(array) if name == "BFloat16Storage" else array


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
    del requires_grad, backward_hooks, unused
    return data


def _allowed(module, name):
    """The object a pickle global may resolve to, or None."""
    if (module, name) == ("collections", "OrderedDict"):
        from collections import OrderedDict

        return OrderedDict
    if (module, name) in (("builtins", "set"), ("builtins", "frozenset")):
        return set if name == "set" else frozenset
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
        return _rebuild_tensor
    if (module, name) == ("torch._utils", "_rebuild_parameter"):
        return _rebuild_parameter
    if module == "torch" and name in _STORAGE_DTYPES:
        return _Storage(name)
    if (module, name) in _SAVED_OBJECTS:
        return _saved_object_type(module, name)
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, archive, prefix, source):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._source = source

    def find_class(self, module, name):
        module = {"__builtin__": "builtins"}.get(module, module)  # protocol 2
        found = _allowed(module, name)
        if found is None:
            raise UnsafeCheckpointError(
                f"Refusing to load {module}.{name} from {self._source}: a "
                "checkpoint may hold only tensors, containers and configs "
                "(nothing else is imported or run)."
            )
        return found

    def persistent_load(self, pid):
        if not (
            isinstance(pid, tuple)
            and len(pid) >= 3
            and pid[0] == "storage"
            and isinstance(pid[1], _Storage)
        ):
            raise UnsafeCheckpointError(
                f"{self._source}: unsupported storage reference {pid!r}."
            )
        storage, key = pid[1], pid[2]
        try:
            raw = self._archive.read(f"{self._prefix}/data/{key}")
        except KeyError as error:
            raise ValueError(
                f"{self._source}: storage {key} is missing from the archive "
                "(truncated or corrupt file)."
            ) from error
        return np.frombuffer(
            raw, dtype=storage.dtype.newbyteorder("<")
        ), storage.name


def read_torch_file(path):
    """Unpickles a `torch.save` zip file (see module docstring).

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the pickle names something not allow-listed.
        ValueError: not a torch zip file, or truncated/corrupt.
    """
    source = str(path)
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"Checkpoint {source} not found.") from None
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(
            f"{source} is not a PyTorch zip checkpoint (torch>=1.6 format) or is "
            f"truncated ({error})."
        ) from error
    with archive:
        pickles = [
            n
            for n in archive.namelist()
            if n == "data.pkl" or n.endswith("/data.pkl")
        ]
        if len(pickles) != 1:
            raise ValueError(f"{source} has no single data.pkl entry.")
        prefix = pickles[0][: -len("data.pkl")].rstrip("/")
        try:
            with archive.open(pickles[0]) as file:
                return _RestrictedUnpickler(
                    file, archive, prefix, source
                ).load()
        except UnsafeCheckpointError:
            raise
        except (
            pickle.UnpicklingError,
            EOFError,
            KeyError,
            TypeError,
            AttributeError,
            IndexError,
            zipfile.BadZipFile,
            ValueError,
        ) as error:
            raise ValueError(
                f"{source}: corrupt checkpoint ({error})."
            ) from error


def state_dict_from_checkpoint(checkpoint, ema=False, source="checkpoint"):
    """`{key: np.ndarray}` of the model (or its EMA) in a loaded checkpoint.

    Accepts a bare state dict, or a training-script dict with `model`,
    `state_dict` or `ema` entries (`optimizer`, `config`, `epoch` ... are
    ignored). Keys lose a leading `module.`. Keys must be strings, tensors
    of a weight's dtype (float, integer counters) and finite.
    """
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{source} does not hold a state dict.")
    if ema:
        if "ema" not in checkpoint:
            raise ValueError(
                f"{source} has no 'ema' weights (entries: "
                f"{', '.join(sorted(map(str, checkpoint)))}); drop the ema flag."
            )
        state = checkpoint["ema"]
        if not isinstance(state, dict):
            raise ValueError(
                f"{source}: its 'ema' entry is {type(state).__name__}, not "
                "a state dict; drop the ema flag."
            )
    else:
        state = checkpoint
        for entry in ("model", "state_dict"):
            if isinstance(checkpoint.get(entry), dict):
                state = checkpoint[entry]
                break
    tensors = {}
    for key, value in state.items():
        if not isinstance(value, np.ndarray):
            continue
        if not isinstance(key, str):
            raise ValueError(
                f"{source}: a tensor is stored under the key {key!r} "
                f"({type(key).__name__}), not a parameter name."
            )
        if value.dtype.kind not in "fiu":
            raise ValueError(
                f"{source}: tensor {key!r} has dtype {value.dtype}, which no "
                "weight has (float, or an integer counter)."
            )
        tensors[key.removeprefix("module.")] = value
    check_finite(tensors, source)
    return tensors
