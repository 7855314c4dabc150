"""Kernel gradient of each 3x3 conv: TF's op vs FastGradConv2D's, side by side.

For every conv of a variant at one input size and batch, times TF's CPU
`Conv2DBackpropFilter` (explicit padding) and the swapped kernel
gradient (a forward conv over batch-transposed tensors, see
`repopt_tf/models/fast_conv.py`, which says when `FastGradConv2D` uses
which: the last column) in alternating windows, and measures the
memory each allocates beyond its inputs (TF's BFC allocator, switched on
below before TF starts). Prints one line per conv and the totals.

    python -m benchmarks.kernel_gradient --model=repopt_vgg_s --batch=128
"""

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

flags.DEFINE_string("model", "repopt_vgg_s", "Variant (see list_models()).")
flags.DEFINE_integer("batch", 128, "Batch size.", lower_bound=1)
flags.DEFINE_integer("image_size", 32, "Input height and width.", lower_bound=8)
flags.DEFINE_integer("channels", 3, "Input channels.", lower_bound=1)
flags.DEFINE_integer("repeats", 10, "Calls per timed window.", lower_bound=1)
flags.DEFINE_integer("windows", 5, "Timed windows per method.", lower_bound=1)
FLAGS = flags.FLAGS


def conv_shapes(model):
    """(name, input shape, kernel shape, stride, zero padding) of each conv."""
    from repopt_tf.models.fast_conv import FastGradConv2D

    return [
        (
            layer.name,
            layer.input.shape[1:],
            tuple(layer.kernel.shape),
            layer.strides[0],
            layer.zero_padding,
        )
        for layer in model.layers
        if isinstance(layer, FastGradConv2D)
    ]


def measure(methods, x, dy, device="CPU:0"):
    """`(ms, mb)`: per method, the median ms per call over alternating
    windows and the MB allocated beyond the inputs."""
    import tensorflow as tf

    extra, times = {}, {label: [] for label in methods}
    for label, method in methods.items():
        method(x, dy).numpy()
        base = tf.config.experimental.get_memory_info(device)["current"]
        tf.config.experimental.reset_memory_stats(device)
        method(x, dy).numpy()
        peak = tf.config.experimental.get_memory_info(device)["peak"]
        extra[label] = (peak - base) / 2**20
    for _ in range(FLAGS.windows):
        for label, method in methods.items():
            start = time.perf_counter()
            for _ in range(FLAGS.repeats):
                method(x, dy).numpy()
            times[label].append((time.perf_counter() - start) / FLAGS.repeats)
    return {
        label: 1e3 * statistics.median(t) for label, t in times.items()
    }, extra


def gradient_methods(kernel, stride, padding):
    """TF's kernel gradient and ours, as `tf.function`s of `(x, dy)`."""
    import tensorflow as tf

    from repopt_tf.models.tf_conv_gradients import _swapped_kernel_gradient
    from repopt_tf.models.tf_conv_gradients import _tf_kernel_gradient

    return {
        label: tf.function(lambda x, dy, f=f: f(x, dy, kernel, stride, padding))
        for label, f in (
            ("TF", _tf_kernel_gradient),
            ("ours", _swapped_kernel_gradient),
        )
    }


def main(argv):
    del argv
    import tensorflow as tf

    from repopt_tf.cli.flag_checks import require_models
    from repopt_tf.models import build_model

    require_models("model", FLAGS.model)
    from repopt_tf.models.tf_conv_gradients import _explicit
    from repopt_tf.models.tf_conv_gradients import _native_kernel_gradient

    tf.get_logger().setLevel("ERROR")  # one trace per conv shape is intended
    shape = (FLAGS.image_size, FLAGS.image_size, FLAGS.channels)
    model = build_model(FLAGS.model, 10, shape, kind="plain")
    print(
        f"{FLAGS.model}, batch {FLAGS.batch}, {FLAGS.image_size}x"
        f"{FLAGS.image_size}x{FLAGS.channels}: ms per call (median of "
        f"{FLAGS.windows} windows) and MB allocated beyond the inputs"
    )
    totals = {"TF": [0.0, 0.0], "ours": [0.0, 0.0]}
    for name, in_shape, kernel_shape, stride, padding in conv_shapes(model):
        x = tf.random.normal([FLAGS.batch, *in_shape])
        kernel = tf.random.normal(kernel_shape)
        dy = tf.random.normal(
            tf.nn.conv2d(x, kernel, stride, _explicit(padding)).shape
        )
        ms, extra = measure(gradient_methods(kernel, stride, padding), x, dy)
        for label in totals:
            totals[label][0] += ms[label]
            totals[label][1] = max(totals[label][1], extra[label])
        print(
            f"{name:>20} {str(tuple(in_shape)):>15} -> {kernel_shape[-1]:>4}, "
            f"stride {stride}: TF {ms['TF']:6.2f} ms {extra['TF']:6.1f} MB | "
            f"ours {ms['ours']:6.2f} ms {extra['ours']:6.1f} MB | "
            f"time ratio ours/TF {ms['ours'] / ms['TF']:.2f}; training uses "
            f"{'TF' if _native_kernel_gradient(x) else 'ours'}"
        )
    (tf_ms, tf_mb), (our_ms, our_mb) = totals["TF"], totals["ours"]
    print(
        f"total: TF {tf_ms:.2f} ms, largest {tf_mb:.1f} MB | ours {our_ms:.2f} "
        f"ms, largest {our_mb:.1f} MB | time ratio ours/TF {our_ms / tf_ms:.2f}"
    )


if __name__ == "__main__":
    app.run(main)
