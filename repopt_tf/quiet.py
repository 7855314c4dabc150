"""Silencing of native libraries' console chatter (TF, converter, LiteRT).

The command-line tools (`TOOLS`) run quietly unless `--verbose`: when the
process is one of them (or `REPOPT_TF_QUIET=1`), `import repopt_tf` imports
TensorFlow and lists its devices with its C++ start-up banners (oneDNN,
absl, CUDA's cuInit on a machine without a GPU driver) hidden and
`TF_CPP_MIN_LOG_LEVEL=2` by default, and the tools call `quiet_logs()` to
keep TF's and absl's Python INFO lines (e.g. MirroredStrategy's device list)
out of the console. `REPOPT_TF_QUIET=0` shows everything. A library import
in any other program changes nothing.
"""

import contextlib
import os
import sys
import warnings


@contextlib.contextmanager
def quiet(verbose=False):
    """Sends fd 1 and 2 and Python's `sys.stdout` / `sys.stderr` to
    /dev/null and ignores Python warnings, unless `verbose` (C++ prints are
    silenced too, and so are Python prints where stdout is not fd 1)."""
    if verbose:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with (
        open(os.devnull, "w") as devnull,
        contextlib.redirect_stdout(devnull),
        contextlib.redirect_stderr(devnull),
        warnings.catch_warnings(),
    ):
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
TOOLS = ("repopt-train", "repopt-export", "train.py", "export_tflite.py")


def quiet_start(argv=None, environ=None):
    """Whether this process starts quietly (see the module docstring)."""
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    if environ.get(QUIET_ENV) in ("0", "1"):
        return environ[QUIET_ENV] == "1"
    tool = os.path.basename(argv[0]) if argv else ""
    verbose = any(
        a in ("--verbose", "--verbose=true", "--verbose=True") for a in argv[1:]
    )
    return tool in TOOLS and not verbose


def import_tensorflow():
    """Imports TensorFlow without its start-up chatter in a quiet start
    (`quiet_start()`; the tools use it whatever the Keras backend, for
    tf.data and the export), where it is installed; else leaves it to Keras
    (which imports it on its TensorFlow backend only)."""
    if "tensorflow" in sys.modules or not quiet_start():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet():
        try:
            import tensorflow
        except ImportError:  # what needs it says so (repopt_tf.backend)
            return
        # The first device query initialises CUDA; on a machine without a
        # GPU driver the full `tensorflow` wheel logs a `failed call to
        # cuInit ... (303)` error there, whatever the log level.
        tensorflow.config.list_physical_devices()


def quiet_logs(verbose=False):
    """TF and absl Python logging to WARNING (ERROR for TF), unless verbose."""
    if verbose:
        return
    import tensorflow as tf
    from absl import logging

    tf.get_logger().setLevel("ERROR")
    logging.set_verbosity(logging.WARNING)
