"""Training speed, best setting against best setting: this library vs PyTorch.

The same RepOpt-VGG variant, batch and input, with alternating timed
windows after a warm-up (Keras in this process, each PyTorch setting in a
child process of its own, `torch_side.TorchRunner`), every framework at
each of its settings:

- Keras RepOpt-VGG: `build_model(kind="plain")` + RepOptSGD with Grad Mults,
  and Keras RepVGG: `build_model(kind="repvgg")` + the same SGD rule, each
  at every `--precisions` (float32; `bfloat16` = Keras's `mixed_bfloat16`),
  TF at `--tf_threads` (a process setting: run once per value);
- PyTorch RepOpt-VGG and RepVGG: with `--reference=CHECKOUT` the authors'
  own code (DingXiaoH/RepOptimizers: `RepOptVGG` in modes target and repvgg,
  `RepOptimizerSGD` with the same Grad Mults), else nets written here with
  `torch.optim.SGD` and the mults applied to the gradients (the same rule),
  at every precision (`bfloat16`: `torch.autocast("cpu", torch.bfloat16)`),
  `--torch_threads` count and `--torch_formats` memory format (`nchw`,
  `channels_last`).

Prints img/s for every setting (median, min, max over windows), the best
setting of each framework and form, and the ratios best Keras / best
PyTorch per form, float32 against float32, and RepOpt / RepVGG per
framework at its best, with the CPU model and flags. Needs torch
(`pip install '.[bench]'`); never needed by the tests.

    python -m benchmarks.vs_pytorch --model=repopt_vgg_s --batch=128
    python -m benchmarks.vs_pytorch --model=repopt_vgg_a0 --image_size=224 --batch=32 \
        --reference=/path/to/RepOptimizers --steps=2 --windows=3
"""

import importlib.util
import itertools
import os
import statistics
import sys

from absl import app
from absl import flags

from benchmarks.step_timing import alternating_step_times
from benchmarks.step_timing import compiled_form
from benchmarks.step_timing import define_choice_list
from benchmarks.step_timing import synthetic_batch
from benchmarks.torch_side import TorchRunner
from benchmarks.torch_side import check_reference
from benchmarks.torch_side import start_runner

flags.DEFINE_string("model", "repopt_vgg_s", "Variant (see list_models()).")
flags.DEFINE_integer("batch", 128, "Batch size.", lower_bound=1)
flags.DEFINE_integer("image_size", 32, "Input height and width.", lower_bound=8)
flags.DEFINE_integer(
    "steps", 10, "Training steps per timed window.", lower_bound=1
)
flags.DEFINE_integer("windows", 5, "Timed windows per form.", lower_bound=1)
flags.DEFINE_integer("warmup", 3, "Untimed steps per form.", lower_bound=1)
flags.DEFINE_integer(
    "tf_threads", 0, "TensorFlow's threads (0: its default).", lower_bound=0
)
flags.DEFINE_list(
    "torch_threads", ["0"], "PyTorch thread counts to race (0: its default)."
)
define_choice_list(
    "precisions",
    ["float32", "bfloat16"],
    ["float32", "bfloat16"],
    "Precisions to race",
)
flags.DEFINE_float(
    "torch_timeout",
    300,
    "Seconds a PyTorch setting may take to answer one call (start-up, "
    "warm-up, one window) before it is killed as hung and named so.",
    lower_bound=1,
)
flags.DEFINE_string(
    "reference",
    None,
    "A DingXiaoH/RepOptimizers checkout: race its model and optimizer code.",
)
define_choice_list(
    "torch_formats",
    ["nchw", "channels_last"],
    ["nchw", "channels_last"],
    "PyTorch memory formats to race",
)
FLAGS = flags.FLAGS


def main(argv):
    del argv
    problem = check_reference(FLAGS.reference)
    if problem:
        sys.exit(f"error: {problem}")
    if importlib.util.find_spec("torch") is None:
        sys.exit(
            "error: needs torch: pip install '.[bench]' (CPU wheel is enough)"
        )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    if FLAGS.tf_threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.tf_threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.tf_threads)
    from repopt_tf.models import VARIANTS

    if FLAGS.model not in VARIANTS:
        raise app.UsageError(
            f"--model: {FLAGS.model!r} is not a RepOpt-VGG variant: "
            f"{', '.join(sorted(VARIANTS))}."
        )
    shape = (FLAGS.image_size, FLAGS.image_size, 3)
    images, labels = synthetic_batch(FLAGS.batch, shape)
    keras_batch = (tf.constant(images), tf.one_hot(labels, 10))

    runners, died, torch_version = start_runners(shape, images, labels)
    try:
        seconds = alternating_step_times(
            runners, keras_batch, FLAGS.warmup, FLAGS.windows, FLAGS.steps, died
        )
    finally:
        for runner in runners.values():
            if isinstance(runner, TorchRunner):
                runner.close()
    report(seconds, died, tf, keras, torch_version)


def start_runners(shape, images, labels):
    """`(runners, died, torch version)`: per precision and form the Keras
    model and the PyTorch children (one per thread count and memory format);
    `died` names the children that did not start."""
    runners, died, torch_version = {}, {}, None
    for precision in FLAGS.precisions:
        for form in ("repopt", "repvgg"):
            model = compiled_form(FLAGS.model, form, shape, precision=precision)
            runners[f"keras_{form}_{precision}"] = model
            for threads, layout in itertools.product(
                FLAGS.torch_threads, FLAGS.torch_formats
            ):
                runner = start_runner(
                    died,
                    f"torch_{form}_{precision}_t{threads}_{layout}",
                    FLAGS.model,
                    form,
                    model,
                    images,
                    labels,
                    timeout=FLAGS.torch_timeout,
                    precision=precision,
                    threads=int(threads),
                    layout=layout,
                    reference=FLAGS.reference,
                )
                if runner is None:
                    continue
                torch_version = runner.version
                name = f"torch_{form}_{precision}_t{runner.threads}_{layout}"
                runners[name] = runner
    return runners, died, torch_version


def report(seconds, died, tf, keras, torch_version):
    from repopt_tf.cpu import cpu_flags
    from repopt_tf.cpu import cpu_name
    from repopt_tf.markdown import table

    print(
        f"{FLAGS.model}, batch {FLAGS.batch}, {FLAGS.image_size}x"
        f"{FLAGS.image_size}x3, {FLAGS.windows} windows x {FLAGS.steps} steps; "
        f"{cpu_name()} ({cpu_flags()}); TF {tf.__version__} ({FLAGS.tf_threads or 'default'} "
        f"threads), Keras {keras.__version__}, torch {torch_version}; "
        "PyTorch side: "
        f"{'the authors code' if FLAGS.reference else 'written here'}"
    )
    rows = []
    for name in seconds:
        rates = sorted(FLAGS.batch / s for s in seconds[name])
        median = statistics.median(rates)
        rows.append(
            [name, f"{median:.1f}", f"{rates[0]:.1f}", f"{rates[-1]:.1f}"]
        )
    rows += [[name, why, "", ""] for name, why in died.items()]
    print("\n".join(table(["setting", "img/s median", "min", "max"], rows)))

    print_ratios(seconds)


def print_ratios(seconds):
    """Keras/PyTorch per form and RepOpt/RepVGG per framework, each at its
    best setting (and in float32), as medians of per-window ratios."""

    def best(prefix):
        return min(
            (n for n in seconds if n.startswith(prefix)),
            key=lambda n: statistics.median(seconds[n]),
            default=None,
        )

    def ratio(label, faster, slower):
        if faster is None or slower is None:
            print(f"ratio {label}: not measured (a side crashed or hung)")
            return
        values = sorted(b / a for a, b in zip(seconds[faster], seconds[slower]))
        print(
            f"ratio {label} ({faster} vs {slower}): median "
            f"{statistics.median(values):.2f} (min {values[0]:.2f}, max "
            f"{values[-1]:.2f})"
        )

    for form, label in (("repopt", "RepOpt-VGG"), ("repvgg", "RepVGG")):
        ratio(
            f"Keras/PyTorch, {label}, best",
            best(f"keras_{form}"),
            best(f"torch_{form}"),
        )
        if "float32" in FLAGS.precisions:
            ratio(
                f"Keras/PyTorch, {label}, float32",
                best(f"keras_{form}_float32"),
                best(f"torch_{form}_float32"),
            )
    for framework, label in (("keras", "Keras"), ("torch", "PyTorch")):
        ratio(
            f"RepOpt/RepVGG, {label}, best",
            best(f"{framework}_repopt"),
            best(f"{framework}_repvgg"),
        )


if __name__ == "__main__":
    app.run(main)
