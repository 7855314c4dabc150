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
from pathlib import Path

from repopt_tf import faults


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path to write; it replaces `path` on success and
    is removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        yield temporary
        faults.point(f"write:{path.name}")
        os.replace(temporary, path)
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
    """`model.save(path)` (a `.keras` file), atomically."""
    with atomic_path(path) as temporary:
        model.save(temporary)
