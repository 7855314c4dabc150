"""The GPU proof: RepOpt-VGG against RepVGG training on one GPU (paper Table 2),
Keras on JAX beside the authors' PyTorch code, in one run.

Paper Table 2: RepOpt-VGG-B1 trains at 1.83x the img/s of RepVGG-B1 (its
multi-branch training form) and fits 31 % more images per GPU. Here, on
synthetic 224x224 images of 10 classes, in one process:

- Keras on JAX (XLA), `build_model(kind="plain")` + RepOptSGD with Grad
  Mults, and `kind="repvgg"` + the same SGD rule, each in float32 and in
  Keras's `mixed_bfloat16`: img/s at `--batch` (median, min, max over
  timed windows after a warm-up) and, in float32, the largest batch that
  trains (doubling, then bisecting);
- PyTorch, each setting in a child process of its own (`torch_side`): the
  authors' `RepOptVGG` (modes target and repvgg) with their
  `RepOptimizerSGD` when `--reference=CHECKOUT` names a
  DingXiaoH/RepOptimizers checkout, else the nets written in torch_side,
  in float32 and bf16 autocast, NCHW and channels_last; the same batch
  and the same search.

PyTorch runs first and its processes end before Keras allocates GPU memory
(JAX keeps what it took), so each framework has the whole GPU when its
largest batch is sought (PyTorch's in its first `--torch_formats` only);
JAX may take 95 % of it (`XLA_PYTHON_CLIENT_MEM_FRACTION`, set here unless
given). PyTorch gets at most 45 % of `--deadline_s`, Keras the rest; what
does not fit is skipped and named. Keras races every setting before it
seeks the largest batches (each try compiles an XLA program), each form
in an equal share of the time left, so a slow search cannot cost the
other form its speed or its batch size. Prints the GPU, the tables and
the ratios RepOpt/RepVGG (speed and largest batch) per framework and
Keras/PyTorch per form; `--out` writes them as JSON.

On the H200 of the device tool (Python 3.12, JAX and PyTorch, no Keras, no
TensorFlow), with keras, namex and optree wheels for cp312 in `.whl/` and
the checkout in `.cache/RepOptimizers/` (both git-ignored, carried; see
docs/results.md "Training on a GPU" for how they are fetched):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site \\
        .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
    KERAS_BACKEND=jax python3 -m benchmarks.gpu_proof \\
        --reference=.cache/RepOptimizers --out=$OUT/gpu_proof.json

`--dry_run` runs the same code at toy size on a CPU (RepOpt-VGG-tiny at
32x32, batch 8), as the tests do.
"""

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from absl import app
from absl import flags

from benchmarks.step_timing import Clock
from benchmarks.step_timing import RunnerDied
from benchmarks.step_timing import alternating_step_times
from benchmarks.step_timing import compiled_form
from benchmarks.step_timing import define_choice_list
from benchmarks.step_timing import largest_batch
from benchmarks.step_timing import synthetic_batch
from benchmarks.torch_side import check_reference
from benchmarks.torch_side import start_runner

flags.DEFINE_string("variant", "repopt_vgg_b1", "RepOpt-VGG variant.")
flags.DEFINE_integer(
    "image_size", 224, "Input height and width.", lower_bound=8
)
flags.DEFINE_integer("batch", 128, "Batch of the speed race.", lower_bound=1)
flags.DEFINE_integer("warmup", 3, "Untimed steps per setting.", lower_bound=1)
flags.DEFINE_integer("windows", 3, "Timed windows per setting.", lower_bound=1)
flags.DEFINE_integer("steps", 10, "Steps per timed window.", lower_bound=1)
define_choice_list(
    "precisions", ["float32", "bfloat16"], ["float32", "bfloat16"], "Precisions"
)
define_choice_list(
    "torch_formats",
    ["nchw", "channels_last"],
    ["nchw", "channels_last"],
    "PyTorch memory formats",
)
flags.DEFINE_integer(
    "max_batch_limit",
    4096,
    "Largest batch tried when seeking the largest that fits (0: no search).",
    lower_bound=0,
)
flags.DEFINE_integer(
    "refine", 2, "Bisection steps after the doubling.", lower_bound=0
)
flags.DEFINE_float(
    "deadline_s", 420, "Time for the whole run; later work is skipped."
)
flags.DEFINE_float(
    "torch_timeout", 240, "Seconds one PyTorch call may take (a hang)."
)
flags.DEFINE_string(
    "reference", None, "A DingXiaoH/RepOptimizers checkout (their code)."
)
flags.DEFINE_string("out", None, "Write the results as JSON here.")
flags.DEFINE_bool(
    "dry_run", False, "Toy size on any device: RepOpt-VGG-tiny, 32x32, batch 8."
)
FLAGS = flags.FLAGS

FORMS = ("repopt", "repvgg")
TORCH_SHARE = 0.45  # of --deadline_s, for the PyTorch settings
DRY_RUN = dict(
    variant="repopt_vgg_tiny",
    image_size=32,
    batch=8,
    warmup=1,
    windows=2,
    steps=2,
    max_batch_limit=32,
    refine=1,
)


def out_of_memory(error):
    """Whether a JAX error is the device running out of memory."""
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def keras_fits(model, shape):
    """`fits(batch)` for a compiled Keras model on synthetic device data."""
    import keras

    def fits(batch):
        images = keras.random.uniform((batch, *shape), 0, 255, seed=0)
        labels = keras.ops.one_hot(keras.ops.arange(batch) % 10, 10)
        try:
            for _ in range(2):
                model.train_on_batch(images, labels)
            return True
        except Exception as error:  # XLA's runtime error type varies
            if out_of_memory(error):
                return False
            raise

    return fits


def rates(seconds, batch):
    """img/s median, min and max over timed windows."""
    values = sorted(batch / s for s in seconds)
    return {
        "median": statistics.median(values),
        "min": values[0],
        "max": values[-1],
        "windows": len(values),
    }


def run_torch(keras_models, images, labels, clock, results):
    """Every PyTorch setting, one child process each: speed, largest batch."""
    try:
        import torch  # to pick the device; the children train
    except ImportError:
        results["failed"]["torch"] = "torch is not installed"
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results["torch"] = {"version": torch.__version__, "device": device}
    if device == "cuda":
        results["torch"]["gpu"] = torch.cuda.get_device_name(0)
    for (form, precision), model in keras_models.items():
        for layout in FLAGS.torch_formats:
            name = f"torch_{form}_{precision}_{layout}"
            if not clock.allows(60, name):
                continue
            runner = start_runner(
                results["failed"],
                name,
                FLAGS.variant,
                form,
                model,
                images,
                labels,
                timeout=FLAGS.torch_timeout,
                precision=precision,
                threads=0,
                layout=layout,
                reference=FLAGS.reference,
                device=device,
            )
            if runner is None:
                continue
            # The largest batch in the first memory format only (time).
            search = runner.fits if layout == FLAGS.torch_formats[0] else None
            try:
                measure(name, runner, search, clock, results, precision)
            except RunnerDied as error:
                results["failed"][name] = str(error)
            finally:
                runner.close()


def measure(name, model, fits, clock, results, precision, batch=()):
    """Speed of one setting at `--batch` (`model.train_on_batch(*batch)`),
    then in float32 its largest batch (`search_largest`)."""
    measure_speed(name, model, results, batch)
    if precision == "float32":
        search_largest(name, fits, clock, results)


def measure_speed(name, model, results, batch=()):
    """img/s of `model.train_on_batch(*batch)` at `--batch` over the timed
    windows."""
    seconds = alternating_step_times(
        {name: model}, batch, FLAGS.warmup, FLAGS.windows, FLAGS.steps
    )[name]
    results["speed"][name] = rates(seconds, FLAGS.batch)
    print(f"[gpu_proof] {name}: {results['speed'][name]}", flush=True)


def search_largest(name, fits, clock, results):
    """The largest batch for which `fits(batch)` holds (no search when
    `fits` is None or `--max_batch_limit` is 0)."""
    if not FLAGS.max_batch_limit or not fits:
        return
    good, bad = largest_batch(
        fits, FLAGS.batch, FLAGS.max_batch_limit, FLAGS.refine, clock, name
    )
    results["max_batch"][name] = {"fits": good, "fails": bad}
    print(f"[gpu_proof] {name}: largest batch {good} (fails: {bad})")


def run_keras(keras_models, images, labels, clock, results):
    """Every Keras setting in this process: all speeds first (the race
    itself), then the float32 largest-batch searches (one XLA compilation
    per batch tried), each form in an equal share of the time left."""
    import keras

    batch = (
        keras.ops.convert_to_tensor(images),
        keras.ops.one_hot(keras.ops.convert_to_tensor(labels), 10),
    )
    for (form, precision), model in keras_models.items():
        name = f"keras_{form}_{precision}"
        if clock.allows(60, name):
            measure_speed(name, model, results, batch)
    searched = [
        form for form in FORMS if f"keras_{form}_float32" in results["speed"]
    ]
    for done, form in enumerate(searched):
        # An equal share of what is left each, so that both forms get a size.
        share = Clock((clock.end - time.monotonic()) / (len(searched) - done))
        model = keras_models[form, "float32"]
        fits = keras_fits(model, images.shape[1:])
        search_largest(f"keras_{form}_float32", fits, share, results)
        clock.skipped += share.skipped


def main(argv):
    del argv
    if FLAGS.dry_run:
        for key, value in DRY_RUN.items():
            setattr(FLAGS, key, value)
    problem = check_reference(FLAGS.reference)
    if problem:
        sys.exit(f"error: {problem}")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")
    import keras

    if keras.backend.backend() != "jax":
        sys.exit("error: run with KERAS_BACKEND=jax (the proof is JAX's)")
    import jax

    whole = Clock(FLAGS.deadline_s)
    shape = (FLAGS.image_size, FLAGS.image_size, 3)
    images, labels = synthetic_batch(FLAGS.batch, shape)
    results = empty_results(jax, keras)
    print(f"[gpu_proof] {json.dumps(results['jax'])}", flush=True)
    keras_models = {
        (form, precision): compiled_form(
            FLAGS.variant, form, shape, jit_compile=True, precision=precision
        )
        for precision in FLAGS.precisions
        for form in FORMS
    }
    # PyTorch first, in at most TORCH_SHARE of the time (module doc).
    torch_clock = Clock(FLAGS.deadline_s * TORCH_SHARE)
    run_torch(keras_models, images, labels, torch_clock, results)
    keras_clock = Clock(whole.end - time.monotonic())
    run_keras(keras_models, images, labels, keras_clock, results)
    results["skipped"] = torch_clock.skipped + keras_clock.skipped
    results["ratios"] = ratios(results)
    print(report(results))
    if FLAGS.out:
        Path(FLAGS.out).write_text(json.dumps(results, indent=2) + "\n")


def empty_results(jax, keras):
    """The settings and the machine, before anything is measured."""
    return {
        "settings": {k: getattr(FLAGS, k) for k in (*DRY_RUN, "precisions")},
        "jax": {
            "version": jax.__version__,
            "device": jax.devices()[0].device_kind,
            "platform": jax.default_backend(),
        },
        "keras": keras.__version__,
        "host": platform.processor() or platform.machine(),
        "speed": {},
        "max_batch": {},
        "failed": {},
    }


def ratios(results):
    """RepOpt/RepVGG per framework (speed per precision, largest batch) and
    Keras/PyTorch per form (each at its best setting)."""
    speed, largest = results["speed"], results["max_batch"]

    def best(prefix):
        found = [v["median"] for n, v in speed.items() if n.startswith(prefix)]
        return max(found, default=None)

    def biggest(prefix):
        found = [
            v["fits"]
            for n, v in largest.items()
            if n.startswith(prefix) and v["fits"]
        ]
        return max(found, default=None)

    def divide(a, b):
        return None if a is None or b is None else a / b

    table = {}
    for framework in ("keras", "torch"):
        for precision in FLAGS.precisions:
            table[f"RepOpt/RepVGG img/s, {framework}, {precision}"] = divide(
                best(f"{framework}_repopt_{precision}"),
                best(f"{framework}_repvgg_{precision}"),
            )
        table[f"RepOpt/RepVGG largest batch, {framework}"] = divide(
            biggest(f"{framework}_repopt"), biggest(f"{framework}_repvgg")
        )
    for form in FORMS:
        table[f"Keras/PyTorch img/s, {form}, best"] = divide(
            best(f"keras_{form}"), best(f"torch_{form}")
        )
    return table


def report(results):
    from repopt_tf.markdown import table

    jax_info = results["jax"]
    lines = [
        f"{FLAGS.variant} at {FLAGS.image_size}x{FLAGS.image_size}, batch "
        f"{FLAGS.batch}, {FLAGS.windows} windows x {FLAGS.steps} steps; "
        f"JAX {jax_info['version']} on {jax_info['device']} "
        f"({jax_info['platform']}), Keras {results['keras']}, torch "
        f"{results.get('torch', {}).get('version')} on "
        f"{results.get('torch', {}).get('gpu', 'cpu')}; PyTorch side: "
        + ("the authors' code" if FLAGS.reference else "written here"),
        "",
    ]
    rows = [
        [
            name,
            f"{rate['median']:.1f}",
            f"{rate['min']:.1f}",
            f"{rate['max']:.1f}",
            results["max_batch"].get(name, {}).get("fits", ""),
        ]
        for name, rate in results["speed"].items()
    ]
    rows += [[name, why, "", "", ""] for name, why in results["failed"].items()]
    header = ["setting", "img/s median", "min", "max", "largest batch"]
    lines += table(header, rows)
    lines.append("")
    for label, value in results["ratios"].items():
        shown = "not measured" if value is None else f"{value:.2f}"
        lines.append(f"ratio {label}: {shown}")
    lines.append("paper (Table 2, B1): RepOpt/RepVGG 1.83x img/s, 1.31x batch")
    for what in results["skipped"]:
        lines.append(f"skipped for time: {what}")
    return "\n".join(lines)


if __name__ == "__main__":
    app.run(main)
