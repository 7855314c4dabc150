"""Test set-up: quiet TF logs and two logical CPUs for tf.distribute tests.

The logical devices must be configured before TensorFlow initialises its
runtime, so this happens at import time of the test session. Under another
Keras backend (`KERAS_BACKEND=jax` or `torch`: `test_backend_matrix.py` runs
the tests marked `backends` so, without TensorFlow) nothing imports TF here.
"""

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
    import tensorflow as tf

    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration()] * 2,
    )


def _waits_for(op, tensor):
    """Whether graph op `op` runs only after `tensor` (data or control path)."""
    seen, stack = set(), [op]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if any(t is tensor for t in node.outputs):
            return True
        stack.extend(t.op for t in node.inputs)
        stack.extend(node.control_inputs)
    return False


@pytest.fixture
def waits_for():
    return _waits_for


ROOT = Path(__file__).resolve().parents[1]
# Small settings for export runs that check behaviour, not numbers.
QUICK_EXPORT = (
    "--representative=16",
    "--eval_limit=32",
    "--latency_runs=2",
    "--threads=1",
)


def _export_cli(*args):
    """`export_tflite.py` with `QUICK_EXPORT` settings and then `args` (a
    later flag wins), as a finished process."""
    return subprocess.run(
        [sys.executable, str(ROOT / "export_tflite.py"), *QUICK_EXPORT, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def export_cli():
    return _export_cli


WITHOUT_TENSORFLOW = ROOT / "tests/without_tensorflow"


def run_without_tensorflow(backend, args, timeout=900, env=None):
    """`python ARGS` from the repository root under Keras `backend`, in a
    process where TensorFlow cannot be imported (tests/without_tensorflow),
    as a finished process."""
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "PYTHONPATH": os.pathsep.join(
            [str(WITHOUT_TENSORFLOW), os.environ.get("PYTHONPATH", "")]
        ),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


@pytest.fixture
def third_family():
    """tests/third_family.py, registered for one test (importing it
    registers it), then taken out so that other tests see the built-in
    families only."""
    import third_family as module

    from repopt_tf.models.registry import FAMILIES
    from repopt_tf.models.registry import register_family

    register_family(module.FAMILY)  # again after an earlier teardown
    yield module
    FAMILIES.pop(module.FAMILY.name)
