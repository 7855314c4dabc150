"""One writer per run folder: `run_lock(folder)` holds an exclusive
`flock` on `folder/.repopt.lock` while train.py or export_tflite.py writes
there.

The lock belongs to the open file, so the operating system releases it on
any exit, kill -9 included: a lock file left behind by a killed run is
simply taken over by the next one (its content, the holder's PID, tool and
start time, only names the holder in the message a second run gets). POSIX
only (`fcntl`); elsewhere the folder is not locked.
"""

import contextlib
import json
import os
import time
from pathlib import Path

LOCK_NAME = ".repopt.lock"


class RunLockedError(RuntimeError):
    """Another live process holds the folder's lock."""


@contextlib.contextmanager
def run_lock(folder, tool, wait=False, log=print):
    """Holds `folder`'s lock for the `with` block.

    Args:
        folder: the run's workdir or output folder (created if missing).
        tool: what holds it, for the message a second run gets.
        wait: wait for the holder to finish instead of failing.
        log: where the wait is announced.

    Raises:
        RunLockedError: another process holds the lock and `wait` is False.

    Examples:
        >>> import tempfile
        >>> with run_lock(tempfile.mkdtemp(), "doc"):
        ...     pass
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    with open(path, "a+") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(path)
            if not wait:
                raise RunLockedError(
                    f"{folder} is in use by another run ({holder}); wait "
                    "for it to finish (or pass --wait_for_lock), or use "
                    "another folder."
                ) from None
            log(f"waiting for the other run in {folder} ({holder})")
            fcntl.flock(file, fcntl.LOCK_EX)
        _write_holder(file, tool)
        try:
            yield
        finally:
            file.truncate(0)
            fcntl.flock(file, fcntl.LOCK_UN)


def _write_holder(file, tool):
    file.seek(0)
    file.truncate(0)
    holder = {"pid": os.getpid(), "tool": tool, "since": time.time()}
    file.write(json.dumps(holder))
    file.flush()


def _holder(path):
    """`PID 123, train.py, since 12:00:01` from the lock file."""
    try:
        holder = json.loads(Path(path).read_text())
        since = time.strftime("%H:%M:%S", time.localtime(holder["since"]))
        return f"PID {holder['pid']}, {holder['tool']}, since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "PID unknown"
