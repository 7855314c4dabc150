"""Fault injection for the crash tests: `REPOPT_TF_KILL_AT=POINT` makes the
process SIGKILL itself (as `kill -9` would) when it reaches `POINT`.

`REPOPT_TF_DISK_FULL_AT=FILE_NAME` makes the write of that file (through
`repopt_tf.atomic`) fail as on a full disk (ENOSPC).

Points: `batch:<stage>:<epoch>:<batch>` (after that training batch, epoch
and batch counted from 0), `write:<file name>` (a file fully written to its
temporary name, before the rename that publishes it), `stage:<stage>`
(after a stage is recorded, before the next one starts). Unset, `point()`
does nothing.
"""

import errno
import os
import signal

ENV = "REPOPT_TF_KILL_AT"


def point(name):
    """Kills the process when `name` is the point asked for."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


DISK_FULL_ENV = "REPOPT_TF_DISK_FULL_AT"


def disk_full(name):
    """Raises ENOSPC when `name` is the file asked for."""
    if os.environ.get(DISK_FULL_ENV) == name:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
