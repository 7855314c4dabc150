"""Test set-up: quiet TF logs and two logical CPUs for tf.distribute tests.

The logical devices must be configured before TensorFlow initialises its
runtime, so this happens at import time of the test session.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0],
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
