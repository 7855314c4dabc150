"""Where a training step goes: conv forward, input gradient, kernel gradient,
BatchNorm, activations, optimizer, casts, the rest, in Keras and PyTorch.

Keras: the step (`compiled_form`, the benchmarks' SGD rule) traced by TF's
profiler; every op's time on TF's compute threads, grouped by its name
(`FastGradConv2D` names its halves `input_gradient` and `kernel_gradient`)
and type. PyTorch (with torch installed; `--reference` as in
`vs_pytorch.py`): the same step under `torch.profiler`, every op's self
time grouped by its nearest named ancestor (`aten::convolution_backward`
computes the input and kernel gradients together). Op times are summed over
threads, so a category's share is of the summed op time; the wall time per
step is printed beside it. No input pipeline: the batch is resident
(`train_throughput.py --input_wait` measures the wait for tf.data).

    python -m benchmarks.step_profile --precisions=float32,bfloat16
"""

import collections
import importlib.util
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from absl import app
from absl import flags

from benchmarks.step_timing import RunnerDied
from benchmarks.step_timing import compiled_form
from benchmarks.step_timing import define_choice_list
from benchmarks.step_timing import synthetic_batch
from benchmarks.torch_side import check_reference
from benchmarks.torch_side import start_runner

flags.DEFINE_string("model", "repopt_vgg_s", "Variant (see list_models()).")
flags.DEFINE_integer("batch", 128, "Batch size.", lower_bound=1)
flags.DEFINE_integer("image_size", 32, "Input height and width.", lower_bound=8)
flags.DEFINE_integer("steps", 5, "Profiled steps.", lower_bound=1)
flags.DEFINE_integer("warmup", 3, "Untimed steps first.", lower_bound=1)
define_choice_list(
    "forms", ["repopt", "repvgg"], ["repopt", "repvgg"], "Training forms"
)
define_choice_list(
    "precisions", ["float32", "bfloat16"], ["float32", "bfloat16"], "Precisions"
)
define_choice_list(
    "frameworks", ["keras", "torch"], ["keras", "torch"], "torch needs torch"
)
flags.DEFINE_string(
    "reference", None, "A DingXiaoH/RepOptimizers checkout (torch side)."
)
flags.DEFINE_enum(
    "torch_format", "channels_last", ["nchw", "channels_last"], "PyTorch."
)
FLAGS = flags.FLAGS

CATEGORIES = (
    "conv forward",
    "input gradient",
    "kernel gradient",
    "conv backward (input + kernel)",
    "BatchNorm forward",
    "BatchNorm backward",
    "ReLU forward + backward",
    "optimizer",
    "casts (bf16)",
    "preprocessing",
    "other",
)


def keras_category(name, op_type, optimizer):
    """The category of one TF op `name:op_type` of a Keras train step."""
    backward = "gradient_tape/" in name
    if "input_gradient" in name or "BackpropInput" in op_type:
        return "input gradient"
    if "kernel_gradient" in name or "BackpropFilter" in op_type:
        return "kernel gradient"
    if name.startswith(optimizer + "/"):
        return "optimizer"
    if op_type == "Cast":
        return "casts (bf16)"
    if "BatchNorm" in op_type or re.search(r"_bn(_\d+)?/", name):
        return "BatchNorm backward" if backward else "BatchNorm forward"
    if "Relu" in op_type:
        return "ReLU forward + backward"
    if "preprocessing" in name:
        return "preprocessing"
    if "Conv2D" in op_type and not backward:
        return "conv forward"
    return "other"


def keras_profile(model, batch):
    """({category: ms per step}, wall ms per step) of `model`'s train step."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    for _ in range(FLAGS.warmup):
        model.train_on_batch(*batch)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(FLAGS.steps):
            model.train_on_batch(*batch)
        wall = time.perf_counter() - start
        tf.profiler.experimental.stop()
        trace = next(Path(logdir).rglob("*.xplane.pb")).read_bytes()
    totals = collections.Counter()
    for plane in xplane_pb2.XSpace.FromString(trace).planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if "::" in name or ":" not in name:  # executor bookkeeping
                    continue
                op_name, op_type = name.rsplit(":", 1)
                category = keras_category(
                    op_name, op_type, model.optimizer.name
                )
                totals[category] += event.duration_ps / 1e9
    return _per_step(totals, wall)


def torch_profile(runner):
    """({category: ms per step}, wall ms per step) of a torch trainer
    (`torch_side.TorchRunner`), profiled in its process."""
    for _ in range(FLAGS.warmup):
        runner.train_on_batch()
    totals, wall = runner.profile(FLAGS.steps)
    return _per_step(totals, wall)


def _per_step(totals, wall):
    return (
        {k: v / FLAGS.steps for k, v in totals.items()},
        1e3 * wall / FLAGS.steps,
    )


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    shape = (FLAGS.image_size, FLAGS.image_size, 3)
    images, labels = synthetic_batch(FLAGS.batch, shape)
    problem = check_reference(FLAGS.reference)
    if problem:
        sys.exit(f"error: {problem}")
    if "torch" in FLAGS.frameworks and not importlib.util.find_spec("torch"):
        sys.exit("error: the torch side needs torch: pip install '.[bench]'")
    profiles = {}
    for precision in FLAGS.precisions:
        for form in FLAGS.forms:
            model = compiled_form(FLAGS.model, form, shape, precision=precision)
            if "keras" in FLAGS.frameworks:
                batch = (tf.constant(images), tf.one_hot(labels, 10))
                profiles[f"Keras {form} {precision}"] = keras_profile(
                    model, batch
                )
            if "torch" in FLAGS.frameworks:
                name = f"PyTorch {form} {precision}"
                failed = {}
                runner = start_runner(
                    failed,
                    name,
                    FLAGS.model,
                    form,
                    model,
                    images,
                    labels,
                    precision=precision,
                    threads=0,
                    layout=FLAGS.torch_format,
                    reference=FLAGS.reference,
                )
                if runner is not None:
                    try:
                        profiles[name] = torch_profile(runner)
                    except RunnerDied as error:
                        failed[name] = str(error)
                    runner.close()
                for why in failed.values():
                    print(f"{name}: not profiled: {why}", file=sys.stderr)
    print(markdown(profiles))


def markdown(profiles):
    """One column per profile: ms per step and share of the summed op time."""
    from repopt_tf.markdown import table

    names = list(profiles)
    totals = {name: profiles[name][0] for name in names}
    summed = {name: sum(totals[name].values()) for name in names}

    def share(name, category):
        ms = totals[name].get(category, 0.0)
        return f"{ms:.2f} ({100 * ms / summed[name]:.0f} %)"

    rows = [
        [category, *(share(name, category) for name in names)]
        for category in CATEGORIES
        if any(category in totals[name] for name in names)
    ]
    rows.append(["summed op time", *(f"{summed[n]:.2f}" for n in names)])
    rows.append(
        ["wall time per step", *(f"{profiles[n][1]:.2f}" for n in names)]
    )
    return "\n".join(table(["category", *names], rows))


if __name__ == "__main__":
    app.run(main)
