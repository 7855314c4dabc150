"""Silencing of native libraries' console chatter (TF, converter, LiteRT).

The command-line tools run quietly unless `--verbose`: they set
`REPOPT_TF_QUIET=1` before importing `repopt_tf`, whose import of TensorFlow
then hides the C++ start-up banners (oneDNN, absl), and call
`quiet_logs()` to keep TF's and absl's Python INFO lines (e.g.
MirroredStrategy's device list) out of the console.
"""

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


QUIET_ENV = "REPOPT_TF_QUIET"


def import_tensorflow():
    """Imports TensorFlow, without its start-up banners under `QUIET_ENV=1`."""
    with quiet(verbose=os.environ.get(QUIET_ENV) != "1"):
        import tensorflow  # noqa: F401


def quiet_logs(verbose=False):
    """TF and absl Python logging to WARNING (ERROR for TF), unless verbose."""
    if verbose:
        return
    import tensorflow as tf
    from absl import logging

    tf.get_logger().setLevel("ERROR")
    logging.set_verbosity(logging.WARNING)
