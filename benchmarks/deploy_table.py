"""The deploy check of every model family side by side: size, TFLM arena,
planned peak activations, host latency (TFLM, LiteRT XNNPACK and reference
kernels), TFLM bit-exactness and int8 top-1 both ways.

Each row is one `export_model` run in the device form (`--batch_size=1`,
Dense as a 1x1 conv) with the deploy check, its report cached as
`WORKDIR/ROW/export_report.json`, so a rerun reuses finished rows (delete a
row's folder to measure it again). Trained models come from the quick
starts' workdirs when they exist (`python train.py --workdir=runs/quickstart`,
`python train.py --config=configs/quickstart.py:ghostnet
--workdir=runs/ghost`); RepOpt-VGG-tiny is trained here for two epochs; the
224x224 rows have random weights (random BN statistics), are calibrated on
Fashion-MNIST resized to RGB, and report int8-vs-fp32 agreement. The A0 and
GhostNet rows are measured with `--fold_padding=none` and `peak` (A0 also
`all`).

    python -m benchmarks.deploy_table
    python -m benchmarks.deploy_table --rows=vgg_a0_224,vgg_a0_224_peak --images_224=50
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from repopt_tf.checkpoints import read_keras_model  # noqa: E402
from repopt_tf.data import load_source  # noqa: E402
from repopt_tf.data import make_dataset  # noqa: E402
from repopt_tf.data import steps_per_epoch  # noqa: E402
from repopt_tf.export import export_model  # noqa: E402
from repopt_tf.export.deploy_render import describe_top1  # noqa: E402
from repopt_tf.export.deploy_render import micro_status  # noqa: E402
from repopt_tf.export.litert_eval import machine_info  # noqa: E402
from repopt_tf.export.litert_eval import machine_line  # noqa: E402
from repopt_tf.export.runs import load_export_data  # noqa: E402
from repopt_tf.markdown import table  # noqa: E402
from repopt_tf.models import build_model  # noqa: E402
from repopt_tf.models import fuse_repvgg  # noqa: E402
from repopt_tf.optimizers import RepOptSGD  # noqa: E402
from repopt_tf.quiet import quiet_logs  # noqa: E402

# name: (label, source, input size, channels, fold_padding)
ROWS = {
    "vgg_tiny": ("repopt_vgg_tiny (trained here)", "train_tiny", 28, 1, "none"),
    "vgg_s": (
        "repopt_vgg_s (quick start)",
        "runs/quickstart/target",
        28,
        1,
        "none",
    ),
    "ghostnet_28": (
        "repopt_ghostnet_0_5x (quick start)",
        "runs/ghost/target",
        28,
        1,
        "none",
    ),
    "vgg_a0_224": ("repopt_vgg_a0", "repopt_vgg_a0", 224, 3, "none"),
    "vgg_a0_224_peak": ("repopt_vgg_a0", "repopt_vgg_a0", 224, 3, "peak"),
    "vgg_a0_224_all": ("repopt_vgg_a0", "repopt_vgg_a0", 224, 3, "all"),
    "ghostnet_224": (
        "repopt_ghostnet_0_5x",
        "repopt_ghostnet_0_5x",
        224,
        3,
        "none",
    ),
    "ghostnet_224_peak": (
        "repopt_ghostnet_0_5x",
        "repopt_ghostnet_0_5x",
        224,
        3,
        "peak",
    ),
    "repvgg_a0_fused_224": (
        "RepVGG-A0, fused",
        "repvgg:repopt_vgg_a0",
        224,
        3,
        "none",
    ),
}

flags.DEFINE_list("rows", list(ROWS), f"Rows to measure: {', '.join(ROWS)}.")
flags.DEFINE_string(
    "workdir", "runs/deploy_table", "Where the rows' reports go."
)
flags.DEFINE_string("output", None, "Also write the table (markdown) here.")
flags.DEFINE_integer(
    "images", 2000, "Deploy-check test images at 28x28.", lower_bound=1
)
flags.DEFINE_integer(
    "images_224", 100, "Deploy-check images at 224x224.", lower_bound=1
)
flags.DEFINE_integer("latency_runs", 30, "Timed invokes.", lower_bound=1)
FLAGS = flags.FLAGS


def _random_statistics(model, rng):
    """BN moving statistics away from the identity, so folds are real."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0, 0.1, shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, shape))
    return model


def _train_tiny():
    keras.utils.set_random_seed(0)
    train = load_source("fashion_mnist", "train", limit=8192)
    model = build_model("repopt_vgg_tiny", 10, (28, 28, 1))
    model.compile(
        optimizer=RepOptSGD(0.05, momentum=0.9, nesterov=True),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    model.fit(
        make_dataset(train, 28, 64, training=True, augment="none"),
        epochs=2,
        steps_per_epoch=steps_per_epoch(train, 64),
        verbose=0,
    )
    return model, True


def _model(source, size, channels):
    """`(model, trained)` for a row's source."""
    if source == "train_tiny":
        return _train_tiny()
    path = ROOT / source / "model.keras"
    if source.startswith("runs/"):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: run the quick start first (module doc)."
            )
        return read_keras_model(path), True
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    kind, _, variant = source.rpartition(":")
    model = build_model(
        variant, 1000, (size, size, channels), kind=kind or "plain"
    )
    _random_statistics(model, rng)
    return (fuse_repvgg(model) if kind else model), False


def measure(name):
    label, source, size, channels, fold = ROWS[name]
    out = Path(FLAGS.workdir) / name
    cached = out / "export_report.json"
    if cached.is_file():
        print(f"[deploy_table] {name}: reused {cached}", flush=True)
        return json.loads(cached.read_text())
    print(
        f"[deploy_table] {name}: {label}, {size}x{size}, fold {fold}",
        flush=True,
    )
    model, trained = _model(source, size, channels)
    images = FLAGS.images if size == 28 else FLAGS.images_224
    # Random 224x224 models: evaluate on the deploy check's images only.
    train, test = load_export_data(
        "fashion_mnist", eval_limit=None if trained else images
    )
    return export_model(
        model,
        train,
        test,
        out,
        representative=300 if size == 28 else 100,
        latency_runs=FLAGS.latency_runs,
        log=lambda m: print(f"[deploy_table] {name}: {m}", flush=True),
        measure_top1=trained,
        batch_size=1,
        fold_padding=fold,
        deploy_images=images,
    )


def _ms(report, runtime, threads):
    for t in report["deploy"]["latency_host"]:
        if t["runtime"] == runtime and t["threads"] == threads:
            return t["median_ms"]
    return float("nan")


HEADER = (
    "model",
    "input",
    "fold",
    ".tflite KB",
    "weights KB",
    "TFLM arena B",
    "peak activations B",
    "TFLM ms",
    "XNNPACK ms 1T / 2T",
    "reference ms 1T",
    "TFLM vs reference",
    "int8 XNNPACK / reference (images)",
)


def deploy_markdown_table(reports):
    """One row per measured model, then the machine and the TFLM version."""
    versions = {r["deploy"]["micro"].get("version") for r in reports.values()}
    rows = [_row_cells(name, report) for name, report in reports.items()]
    return "\n".join(
        [
            *table(HEADER, rows),
            "",
            f"Machine: {machine_line(machine_info())}, TFLM "
            f"{', '.join(map(str, versions))}.",
        ]
    )


def _row_cells(name, report):
    label, _, size, channels, fold = ROWS[name]
    deploy = report["deploy"]
    memory, tflm, accuracy = (
        deploy["memory"],
        deploy["micro"],
        deploy["accuracy"],
    )
    return [
        label,
        f"{size}x{size}x{channels}",
        fold,
        f"{memory['file_bytes'] / 1024:.0f}",
        f"{memory['weights_bytes'] / 1024:.0f}",
        f"{memory['tflm_arena_bytes'] or 0:,}",
        f"{memory['peak_activation_bytes']:,}",
        f"{_ms(report, 'TFLM', 1):.2f}",
        f"{_ms(report, 'XNNPACK', 1):.2f} / {_ms(report, 'XNNPACK', 2):.2f}",
        f"{_ms(report, 'LiteRT reference', 1):.2f}",
        "bit-exact" if tflm.get("bit_exact") else micro_status(tflm),
        f"{_both_top1(accuracy)} ({accuracy['images']})",
    ]


def _both_top1(accuracy):
    """`top-1 0.8750 / 0.8760`: XNNPACK's then the reference kernels'."""
    xnnpack, reference = accuracy["xnnpack"], accuracy["reference"]
    if xnnpack.keys() == reference.keys() and "error" not in reference:
        (value,) = reference.values()  # the same measure: its value only
        return f"{describe_top1(xnnpack)} / {value:.4f}"
    return f"{describe_top1(xnnpack)} / {describe_top1(reference)}"


def main(argv):
    del argv
    quiet_logs()
    unknown = sorted(set(FLAGS.rows) - set(ROWS))
    if unknown:
        print(
            f"error: unknown rows {unknown}; rows are {', '.join(ROWS)}",
            file=sys.stderr,
        )
        return 1
    try:
        reports = {name: measure(name) for name in FLAGS.rows}
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    text = deploy_markdown_table(reports)
    print(text)
    if FLAGS.output:
        Path(FLAGS.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    app.run(main)
