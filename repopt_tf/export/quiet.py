"""Silencing of native libraries' console chatter (converter, LiteRT)."""

import contextlib
import os
import sys
import warnings


@contextlib.contextmanager
def quiet(verbose=False):
    """Sends fd 1 and 2 to /dev/null and ignores Python warnings, unless
    `verbose` (C++ prints are silenced too)."""
    if verbose:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "wb") as devnull, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(devnull.fileno(), 1)
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
