"""train.py's progress lines: `[repopt] message`, flushed, and Keras's
verbosity for the same console."""

import sys


def log(message):
    print(f"[repopt] {message}", flush=True)


def verbosity():
    """Keras's progress bar in a terminal, one line per epoch otherwise."""
    return 1 if sys.stdout.isatty() else 2
