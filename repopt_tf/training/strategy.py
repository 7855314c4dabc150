"""Strategy selection for train.py: tf.distribute on the TensorFlow
backend, Keras's own `DataParallel` on JAX (`repopt_tf.distribution`)."""

import tensorflow as tf

from repopt_tf.backend import backend
from repopt_tf.distribution import KerasDataParallel
from repopt_tf.distribution import split_host_cpu

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def split_cpu(count):
    """Splits the host CPU into `count` logical devices (call before any op).

    Lets `mirrored` run with several replicas on a CPU-only machine, e.g. to
    check a distributed run before paying for accelerators. On JAX: `count`
    JAX CPU devices (`split_host_cpu`).
    """
    if backend() == "jax":
        split_host_cpu(count)
        return
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * count
    )


class _MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy that Keras 3's `fit` can drive.

    `fit` reduces a whole `(x, y)` batch in one `strategy.reduce` call and
    reduces scalar logs along `axis=0`; the collective implementation rejects
    both (keras-team/keras#20585). This `reduce` goes leaf by leaf and reduces
    scalars across replicas only, as MirroredStrategy does.
    """

    def reduce(self, reduce_op, value, axis):
        parent = super()

        def reduce_leaf(leaf):
            rank = self.experimental_local_results(leaf)[0].shape.rank
            return parent.reduce(reduce_op, leaf, axis if rank else None)

        return tf.nest.map_structure(reduce_leaf, value)


def get_strategy(name="default", tpu=""):
    """Returns the strategy; build model, optimizer and compile in its scope.

    - `default`: one device.
    - `mirrored`: all local GPUs, else all logical CPUs; on the JAX backend
      `keras.distribution.DataParallel` over every device
      (`KerasDataParallel`).
    - `multi_worker`: MultiWorkerMirroredStrategy; needs `TF_CONFIG`.
    - `tpu`: TPUStrategy on `tpu` (address or name; "" for the local TPU).
    On the PyTorch backend only `default` runs.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}.")
    if name == "default":
        return tf.distribute.get_strategy()
    if backend() != "tensorflow":
        if backend() == "jax" and name == "mirrored":
            return KerasDataParallel()
        raise ValueError(
            f"--strategy={name} is tf.distribute's, for the TensorFlow "
            f"backend; on {backend()} use "
            + (
                "--strategy=mirrored or default."
                if backend() == "jax"
                else "--strategy=default."
            )
        )
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy([d.name for d in gpus])
        # Collective all-reduce between logical CPUs breaks when a process
        # creates more than one strategy; reducing on one device is exact.
        cpus = tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy(
            [d.name for d in cpus],
            cross_device_ops=tf.distribute.ReductionToOneDevice(),
        )
    if name == "multi_worker":
        return _MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
                tpu=tpu
            )
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as error:
            raise ValueError(f"No TPU found at {tpu!r}: {error}") from error
        return tf.distribute.TPUStrategy(resolver)
