"""int8 PTQ of RepOpt-VGG vs RepVGG (fused) vs plain VGG, same shape & budget.

Trains (or reuses) the quick-start experiment in --workdir: RepOpt-VGG
(RepOptSGD from searched scales), the plain VGG with SGD, and RepVGG with SGD
fused to its deploy form, all the same variant and budget. Then each is
exported to full-integer int8 TFLite and evaluated on the test split.

    python benchmarks/int8_collapse.py --workdir=runs/quickstart

Prints a table of fp32 / int8 top-1, the int8 - fp32 delta and the kernel
std (BN folded, as quantized), writes it to WORKDIR/int8_collapse.md and
plots one layer's kernel histogram per model to int8_kernel_histograms.png.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from configs import quickstart  # noqa: E402
from repopt_tf.data import load_source  # noqa: E402
from repopt_tf.export import export_model  # noqa: E402
from repopt_tf.export.diagnostics import deploy_kernels  # noqa: E402
from repopt_tf.export.diagnostics import kernel_histograms  # noqa: E402
from repopt_tf.training import Experiment  # noqa: E402
from repopt_tf.training import get_strategy  # noqa: E402

flags.DEFINE_string("workdir", "runs/quickstart", "Quick-start workdir to use or fill.")
flags.DEFINE_integer("epochs", 3, "Epochs per model (the same for all).")
flags.DEFINE_integer("train_limit", None,
                     "Training images (default: the quick start's, all).")
flags.DEFINE_string("model", "repopt_vgg_s", "Variant.")
flags.DEFINE_integer("representative", 300, "Representative images for PTQ.")
FLAGS = flags.FLAGS

MODELS = (
    ("RepOpt-VGG (RepOptSGD)", "target/model.keras"),
    ("plain VGG (SGD)", "baseline_sgd/model.keras"),
    ("RepVGG (SGD, fused)", "baseline_repvgg/model_fused.keras"),
)


def main(argv):
    del argv
    workdir = Path(FLAGS.workdir)
    config = quickstart.get_config()
    config.model = FLAGS.model
    config.train.epochs = FLAGS.epochs
    if FLAGS.train_limit is not None:
        config.data.train_limit = FLAGS.train_limit
    Experiment(config, workdir, get_strategy()).run()  # reuses finished stages

    train = load_source(config.data.name, "train")
    test = load_source(config.data.name, "test")
    rows, kernels = [], {}
    for label, relative in MODELS:
        path = workdir / relative
        model = keras.models.load_model(path, compile=False)
        kernels[label] = deploy_kernels(model)
        report = export_model(model, train, test, path.parent / "export",
                              representative=FLAGS.representative,
                              latency_runs=20, log=lambda m: None)
        a = report["accuracy"]
        stds = [r["std"] for r in report["kernel_statistics"][1:]]
        centre = [r["std_centre"] / r["std_surround"]
                  for r in report["kernel_statistics"][1:]]
        rows.append(f"| {label} | {a['keras_fp32']:.4f} | {a['tflite_int8']:.4f} "
                    f"| {100 * a['int8_minus_fp32']:+.2f} | {np.mean(stds):.4f} "
                    f"| {np.mean(centre):.2f} |")
    table = "\n".join([
        f"{FLAGS.model}, Fashion-MNIST, {FLAGS.epochs} epochs on "
        f"{config.data.train_limit or train.num_examples} images, "
        f"{FLAGS.representative} calibration "
        f"images, {test.num_examples} test images",
        "",
        "| model | fp32 top-1 | int8 PTQ top-1 | delta (points) | mean kernel "
        "std | mean centre/surround std |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
    ])
    (workdir / "int8_collapse.md").write_text(table + "\n")
    kernel_histograms(kernels, workdir / "int8_kernel_histograms.png")
    print(table)


if __name__ == "__main__":
    app.run(main)
