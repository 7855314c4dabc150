"""Data parallelism with Keras's own engine on the JAX backend.

`tf.distribute` (`repopt_tf.training.strategy`) places a TensorFlow model's
replicas; on JAX, Keras distributes training itself through
`keras.distribution.DataParallel`: the variables are replicated over the
device mesh, every global batch is split along its first axis, and XLA
all-reduces the gradients, so a step equals the same step on one device
(`tests/test_backend_matrix.py` checks 2 host devices against 1).
`KerasDataParallel` gives it the two things train.py's runner asks of a
strategy, `scope()` and `num_replicas_in_sync`.
"""

import keras

from repopt_tf.backend import backend


class KerasDataParallel:
    """`keras.distribution.DataParallel` over `devices`, set for the process.

    Args:
        devices: Keras device names (`keras.distribution.list_devices()`,
            e.g. `["gpu:0", "gpu:1"]`); default every device of the
            default platform.

    Raises:
        ValueError: on another backend than JAX (TensorFlow has
            `tf.distribute`), or with fewer than one device.

    Examples:

    ```python
    strategy = KerasDataParallel()  # every GPU, or every host CPU device
    model = build_model("repopt_vgg_s", 10, (32, 32, 3))
    model.compile(optimizer=RepOptSGD(0.1, momentum=0.9), loss=...)
    model.fit(x, y, batch_size=128 * strategy.num_replicas_in_sync)
    ```
    """

    def __init__(self, devices=None):
        if backend() != "jax":
            raise ValueError(
                "KerasDataParallel runs on Keras's JAX backend; on "
                f"{backend()} use --strategy=mirrored's tf.distribute "
                "(TensorFlow) or one device."
            )
        devices = list(devices or keras.distribution.list_devices())
        if not devices:
            raise ValueError("KerasDataParallel needs at least one device.")
        self.devices = devices
        self.num_replicas_in_sync = len(devices)
        self.distribution = keras.distribution.DataParallel(devices=devices)
        # fit() reads the global distribution; the runner trains outside
        # the scope in which it builds the model, as tf.distribute allows.
        keras.distribution.set_distribution(self.distribution)

    def scope(self):
        """The distribution's scope (model and optimizer variables)."""
        return self.distribution.scope()


def split_host_cpu(count):
    """Makes JAX show the host CPU as `count` devices, for data parallelism
    on a CPU-only machine (before JAX starts its runtime).

    Raises:
        ValueError: when JAX has already started (the count is fixed then).
    """
    import jax

    try:
        jax.config.update("jax_num_cpu_devices", int(count))
    except RuntimeError as error:
        raise ValueError(
            f"cannot split the CPU into {count} JAX devices now: {error}"
        ) from None
