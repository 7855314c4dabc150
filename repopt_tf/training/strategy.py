"""tf.distribute strategy selection for train.py."""

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def split_cpu(count):
    """Splits the host CPU into `count` logical devices (call before any op).

    Lets `mirrored` run with several replicas on a CPU-only machine, e.g. to
    check a distributed run before paying for accelerators.
    """
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * count
    )


def get_strategy(name="default", tpu=""):
    """Returns the strategy; build model, optimizer and compile in its scope.

    - `default`: one device.
    - `mirrored`: all local GPUs, else all logical CPUs.
    - `multi_worker`: MultiWorkerMirroredStrategy; needs `TF_CONFIG`.
    - `tpu`: TPUStrategy on `tpu` (address or name; "" for the local TPU).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as error:
            raise ValueError(f"No TPU found at {tpu!r}: {error}") from error
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}.")
