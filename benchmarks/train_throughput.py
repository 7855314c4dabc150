"""Training throughput and memory: RepOpt-VGG vs RepVGG vs plain VGG.

The three training-time forms of one variant are trained in one process on
the same synthetic batch, alternating timed windows after a warm-up:

- RepOpt-VGG: the plain model with RepOptSGD (Grad Mults from the HS-init
  scales; the mults' values do not change the cost),
- RepVGG: the multi-branch training form (3x3 + 1x1 + identity, each with BN)
  with the same SGD rule and no mults,
- plain VGG: the plain model with the same SGD rule and no mults.

Prints img/s per form (median, min, max over windows), the RepOpt/RepVGG
ratio per window (min/median/max), the share of step time spent waiting on
the real tf.data input pipeline, and the peak training memory of each form,
measured in a fresh child process per form from TF's own allocator
statistics (CPU: the BFC allocator, switched on for the child; GPU: the GPU
allocator), in total and above the resting weights and optimizer state,
and as the peak of live tensor bytes above resting, summed from the
allocation events of TF's profiler (without the allocator's rounding).

    python -m benchmarks.train_throughput --model=repopt_vgg_s --batch=128
    python -m benchmarks.train_throughput --model=repopt_vgg_b1 --image_size=224 \\
        --batch=64 --strategy=mirrored          # GPU machines
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app
from absl import flags

from benchmarks.step_timing import alternating_step_times
from benchmarks.step_timing import compiled_form

flags.DEFINE_string("model", "repopt_vgg_s", "Variant (see list_models()).")
flags.DEFINE_integer("batch", 128, "Global batch size.", lower_bound=1)
flags.DEFINE_integer("image_size", 32, "Input height and width.", lower_bound=8)
flags.DEFINE_integer("channels", 3, "Input channels.", lower_bound=1)
flags.DEFINE_integer(
    "steps", 10, "Training steps per timed window.", lower_bound=1
)
flags.DEFINE_integer("windows", 5, "Timed windows per form.", lower_bound=1)
flags.DEFINE_integer("warmup", 3, "Untimed steps per form.", lower_bound=1)
flags.DEFINE_enum(
    "strategy", "default", ["default", "mirrored"], "tf.distribute strategy."
)
flags.DEFINE_integer(
    "threads",
    0,
    "TF intra- and inter-op threads (0: TF default).",
    lower_bound=0,
)
flags.DEFINE_enum(
    "precision",
    "float32",
    ["float32", "mixed_bfloat16", "mixed_float16"],
    "Keras dtype policy (variables and optimizer state stay float32).",
)
flags.DEFINE_bool("jit_compile", False, "Compile the train steps with XLA.")
flags.DEFINE_enum(
    "onednn",
    "tf_default",
    ["tf_default", "on", "off"],
    "TF_ENABLE_ONEDNN_OPTS (TF's default is off on AVX2 CPUs).",
)
flags.DEFINE_bool(
    "memory", True, "Measure peak memory (one child process per form)."
)
flags.DEFINE_bool(
    "input_wait", True, "Measure waiting on the Fashion-MNIST tf.data pipeline."
)
flags.DEFINE_string(
    "form", None, "Internal: measure memory of one form and exit."
)
FLAGS = flags.FLAGS

FORMS = ("repopt", "repvgg", "plain")
LABELS = {"repopt": "RepOpt-VGG", "repvgg": "RepVGG", "plain": "plain VGG"}


def setup_tensorflow():
    """Applies --onednn and --threads; must run before TF is imported."""
    if FLAGS.onednn != "tf_default":
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = (
            "1" if FLAGS.onednn == "on" else "0"
        )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    return tf


def build_form(form, strategy):
    import keras

    shape = (FLAGS.image_size, FLAGS.image_size, FLAGS.channels)
    keras.mixed_precision.set_global_policy(FLAGS.precision)
    with strategy.scope():
        return compiled_form(FLAGS.model, form, shape, FLAGS.jit_compile)


def synthetic_batch(tf):
    images = tf.random.stateless_uniform(
        (FLAGS.batch, FLAGS.image_size, FLAGS.image_size, FLAGS.channels),
        seed=(0, 1),
        maxval=255.0,
    )
    labels = tf.one_hot(tf.range(FLAGS.batch) % 10, 10)
    return images, labels


def peak_memory_mb(tf, run_steps):
    """(peak, resting) MB of TF's allocator while `run_steps()` trains.

    Resting memory is what is allocated before the steps (weights, optimizer
    state, the batch); the peak adds activations and op workspaces. GPU: TF's
    GPU allocator; CPU: TF's BFC allocator, which the parent turns on (with
    its statistics) through TF_CPU_ALLOCATOR_USE_BFC for the child.
    """
    device = "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"
    resting = tf.config.experimental.get_memory_info(device)["current"]
    tf.config.experimental.reset_memory_stats(device)
    run_steps()
    peak = tf.config.experimental.get_memory_info(device)["peak"]
    return peak / 2**20, resting / 2**20


def live_tensor_peak_mb(tf, run_steps):
    """Peak MB of tensors allocated during `run_steps()` and live at once.

    Summed from the allocation events that TF's profiler records: the bytes
    the ops asked for, without the allocator's rounding and the unsplit
    chunks that its peak also counts; relative to the start (resting).
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        run_steps()
        tf.profiler.experimental.stop()
        trace = next(Path(logdir).rglob("*.xplane.pb")).read_bytes()
    events = []
    for plane in xplane_pb2.XSpace.FromString(trace).planes:
        for line in plane.lines:
            for event in line.events:
                kind = plane.event_metadata[event.metadata_id].name
                if kind in ("MemoryAllocation", "MemoryDeallocation"):
                    stats = {
                        plane.stat_metadata[s.metadata_id].name: s.int64_value
                        or s.uint64_value
                        for s in event.stats
                    }
                    sign = 1 if kind == "MemoryAllocation" else -1
                    events.append(
                        (
                            line.timestamp_ns * 1000 + event.offset_ps,
                            sign * stats["requested_bytes"],
                        )
                    )
    in_use = peak = 0  # relative to the start, which holds the resting memory
    for _, change in sorted(events):
        in_use += change
        peak = max(peak, in_use)
    return peak / 2**20


def memory_child(form):
    tf = setup_tensorflow()
    from repopt_tf.training import get_strategy

    images, labels = synthetic_batch(tf)
    model = build_form(form, get_strategy(FLAGS.strategy))
    model.train_on_batch(images, labels)  # trace and allocate once

    def run_steps():  # the peak varies with the op schedule: take many steps
        for _ in range(FLAGS.warmup + 2 * FLAGS.steps):
            model.train_on_batch(images, labels)

    peak, resting = peak_memory_mb(tf, run_steps)
    live = live_tensor_peak_mb(
        tf, lambda: [model.train_on_batch(images, labels) for _ in range(3)]
    )
    print(
        json.dumps(
            {
                "form": form,
                "peak_mb": peak,
                "resting_mb": resting,
                "live_mb": live,
            }
        )
    )


def measure_memory():
    """{form: (peak, resting, live-tensor peak) MB}, each in a fresh child."""
    memory = {}
    args = [a for a in sys.argv[1:] if not a.startswith("--form")]
    env = dict(os.environ, TF_CPU_ALLOCATOR_USE_BFC="true")
    for form in FORMS:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.train_throughput", *args]
            + [f"--form={form}"],
            stdout=subprocess.PIPE,
            text=True,
            check=True,
            env=env,
        ).stdout
        result = json.loads(out.strip().splitlines()[-1])
        memory[form] = (
            result["peak_mb"],
            result["resting_mb"],
            result["live_mb"],
        )
    return memory


def input_wait_share(model):
    """Share of training time spent waiting for the next real input batch.

    Feeds `--steps` batches of the Fashion-MNIST tf.data pipeline (shuffle,
    crop + flip, prefetch) after one warm batch, timing `next()` apart from
    the training step.
    """
    from repopt_tf.data import load_source
    from repopt_tf.data import make_dataset

    source = load_source(
        "fashion_mnist", "train", limit=FLAGS.batch * (FLAGS.steps + 2)
    )
    batches = iter(
        make_dataset(
            source,
            FLAGS.image_size,
            FLAGS.batch,
            training=True,
            channels=FLAGS.channels,
        )
    )
    model.train_on_batch(*next(batches))
    waiting = training = 0.0
    for _ in range(FLAGS.steps):
        start = time.perf_counter()
        images, labels = next(batches)
        middle = time.perf_counter()
        model.train_on_batch(images, labels)
        waiting += middle - start
        training += time.perf_counter() - middle
    return waiting / (waiting + training)


def main(argv):
    del argv
    if FLAGS.form:
        memory_child(FLAGS.form)
        return
    tf = setup_tensorflow()
    from repopt_tf.cli.flag_checks import require_models
    from repopt_tf.training import get_strategy

    require_models("model", FLAGS.model)
    strategy = get_strategy(FLAGS.strategy)
    images, labels = synthetic_batch(tf)
    models = {form: build_form(form, strategy) for form in FORMS}
    seconds = alternating_step_times(
        models, (images, labels), FLAGS.warmup, FLAGS.windows, FLAGS.steps
    )
    print(setting_line(tf, strategy))
    memory = measure_memory() if FLAGS.memory else {}
    print_rates(seconds, memory)
    print_ratios(seconds, memory)
    if FLAGS.input_wait:
        share = input_wait_share(models["repopt"])
        print(
            f"RepOpt-VGG step time waiting on the Fashion-MNIST tf.data "
            f"pipeline: {100 * share:.0f}%"
        )


def setting_line(tf, strategy):
    """What was measured, and on what."""
    device = tf.config.list_logical_devices(
        "GPU"
    ) or tf.config.list_logical_devices("CPU")
    return (
        f"{FLAGS.model}, batch {FLAGS.batch}, {FLAGS.image_size}x"
        f"{FLAGS.image_size}x{FLAGS.channels}, {FLAGS.windows} windows x "
        f"{FLAGS.steps} steps, strategy {FLAGS.strategy} "
        f"({strategy.num_replicas_in_sync} replicas on {device[0].device_type}), "
        f"onednn {FLAGS.onednn}, threads {FLAGS.threads or 'default'}, "
        f"precision {FLAGS.precision}, XLA {'on' if FLAGS.jit_compile else 'off'}"
    )


def print_rates(seconds, memory):
    """Each form's img/s over the windows, and its memory when measured."""
    for form in FORMS:
        rates = sorted(FLAGS.batch / s for s in seconds[form])
        note = ""
        if memory:
            peak, resting, live = memory[form]
            note = (
                f", peak train memory {peak:.1f} MB "
                f"({peak - resting:.1f} MB above resting; live tensors "
                f"{live:.1f} MB)"
            )
        print(
            f"{LABELS[form]:>11}: {statistics.median(rates):8.1f} img/s "
            f"(min {rates[0]:.1f}, max {rates[-1]:.1f}){note}"
        )


def print_ratios(seconds, memory):
    """RepOpt-VGG over RepVGG: img/s window by window, and peak memory."""
    ratios = sorted(b / a for a, b in zip(seconds["repopt"], seconds["repvgg"]))
    print(
        f"ratio RepOpt/RepVGG img/s: median {statistics.median(ratios):.2f} "
        f"(min {ratios[0]:.2f}, max {ratios[-1]:.2f})"
    )
    if memory:
        (ours, our_rest, our_live) = memory["repopt"]
        (theirs, their_rest, their_live) = memory["repvgg"]
        print(
            f"ratio RepOpt/RepVGG peak memory: {ours / theirs:.2f} "
            f"(above resting: {(ours - our_rest) / (theirs - their_rest):.2f}; "
            f"live tensors: {our_live / their_live:.2f})"
        )


if __name__ == "__main__":
    app.run(main)
