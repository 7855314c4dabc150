"""Files written whole or not at all: a temporary file in the same folder,
renamed over the target (`os.replace` is atomic on POSIX and Windows), so a
kill at any moment leaves either the old file or the new one, never half of
one that a rerun would trust.

The temporary name keeps the target's name as its tail
(`.tmp-<pid>-model.keras`), so Keras's suffix checks (`.keras`,
`.weights.h5`) accept it.
"""

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np

from repopt_tf import faults


class WriteError(OSError):
    """A file could not be written (full disk, no permission, ...); the
    message names the file and the space left on its disk."""

    def __init__(self, path, reason):
        path = Path(path)
        super().__init__(
            f"cannot write {path}: {reason}; {free_space(path.parent)} free "
            "on its disk. Nothing half-written was left."
        )


def free_space(folder):
    """`1.2 GiB`: the space left where `folder` is (`?` if unknown)."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if free < 1024 or unit == "GiB":
            return f"{free:.1f} {unit}" if unit != "B" else f"{free} B"
        free /= 1024
    return "?"


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path to write; it replaces `path` on success and
    is removed on failure. A failed write (an `OSError`, or h5py's
    `RuntimeError` for one) becomes a one-line `WriteError`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        yield temporary
        faults.disk_full(path.name)
        faults.point(f"write:{path.name}")
        os.replace(temporary, path)
    except OSError as error:
        if isinstance(error, WriteError):
            raise
        raise WriteError(path, error.strerror or error) from error
    except RuntimeError as error:
        if "write failed" not in str(error):
            raise
        raise WriteError(path, str(error).splitlines()[0]) from error
    finally:
        if temporary.exists():
            temporary.unlink()


def write_text(path, text):
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def write_bytes(path, data):
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def save_model(model, path):
    """`model.save(path)` (a `.keras` file), atomically; refused up front
    when its disk has clearly too little space for it (h5py may crash
    rather than fail on a full disk)."""
    path = Path(path)
    needed = 65536 + sum(
        int(np.prod(v.shape)) * 4
        for v in list(model.variables)
        + list(
            getattr(getattr(model, "optimizer", None), "variables", None) or []
        )
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(path.parent).free < needed:
        raise WriteError(path, f"about {needed:,} bytes are needed")
    with atomic_path(path) as temporary:
        model.save(temporary)
