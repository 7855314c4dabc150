"""RPG: Fashion-MNIST accuracy vs ring size (DoF), and the sharing ablation.

Trains the RPG form of a RepOpt-VGG variant (every block's 3x3 kernel
generated from one ring) for each DoF fraction (ring size / generated
weights), the ordinary model as the 100%-free reference, and, at one fixed
DoF, the paper's ablation: naive sharing (ring prefix, no permutation, no
signs) vs permutation vs permutation + signs. Same data, budget and seed for
all; each run is a train.py `baseline_sgd` stage in its own folder, so an
interrupted sweep resumes. Prints the table, a least-squares fit of accuracy
against log10(DoF), and writes WORKDIR/rpg_dof_sweep.{md,png}.

    python benchmarks/rpg_dof_sweep.py --workdir=runs/rpg_sweep
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from repopt_tf.cli.flag_checks import check_fractions  # noqa: E402
from repopt_tf.cli.flag_checks import require_models  # noqa: E402
from repopt_tf.configs import base  # noqa: E402
from repopt_tf.training import Experiment  # noqa: E402
from repopt_tf.training import get_strategy  # noqa: E402

flags.DEFINE_string("workdir", "runs/rpg_sweep", "Output folder.")
flags.DEFINE_string("model", "repopt_vgg_s", "Variant.")
flags.DEFINE_list(
    "dofs", ["0.002", "0.01", "0.05", "0.2", "1.0"], "DoF fractions."
)
flags.DEFINE_float(
    "ablation_dof",
    0.01,
    "DoF of the sharing ablation.",
    lower_bound=1e-9,
    upper_bound=1.0,
)
flags.DEFINE_integer("epochs", 3, "Epochs per run.", lower_bound=1)
flags.DEFINE_integer(
    "train_limit", 20000, "Training images (0: all).", lower_bound=0
)
flags.DEFINE_integer("eval_limit", 0, "Test images (0: all).", lower_bound=0)
flags.DEFINE_integer("batch", 128, "Batch size.", lower_bound=1)
check_fractions("dofs")
FLAGS = flags.FLAGS


def run(name, dof=0.0, mode="signed_permutation"):
    config = base.get_config()
    config.mode = "baseline_sgd"
    config.model = FLAGS.model
    config.data.train_limit = FLAGS.train_limit
    config.data.eval_limit = FLAGS.eval_limit
    config.train.epochs = FLAGS.epochs
    config.train.batch_size = FLAGS.batch
    config.rpg.dof = dof
    config.rpg.mode = mode
    (result,) = Experiment(
        config, Path(FLAGS.workdir) / name, get_strategy()
    ).run()
    return result.test_accuracy


def main(argv):
    del argv
    require_models("model", FLAGS.model)
    from repopt_tf.models import build_model

    shape = (28, 28, 1)
    free = build_model(FLAGS.model, 10, shape)
    generated = sum(
        int(np.prod(layer.kernel.shape))
        for layer in free.layers
        if layer.name.endswith("_conv")
    )
    trainable = sum(int(np.prod(w.shape)) for w in free.trainable_weights)
    other = trainable - generated
    rows, points = [], []
    reference = run("free")
    for dof in sorted(float(d) for d in FLAGS.dofs):
        accuracy = run(f"dof{dof:g}", dof)
        size = max(1, round(dof * generated))
        points.append((dof, accuracy))
        rows.append(f"| {dof:g} | {size} | {size + other} | {accuracy:.4f} |")
    slope, intercept = np.polyfit(
        np.log10([p[0] for p in points]), [p[1] for p in points], 1
    )
    fitted = slope * np.log10([p[0] for p in points]) + intercept
    residual = np.array([p[1] for p in points]) - fitted
    r2 = 1 - residual.var() / np.var([p[1] for p in points])
    ablation = [
        (mode, run(f"ablation_{mode}", FLAGS.ablation_dof, mode))
        for mode in ("shared", "permutation", "signed_permutation")
    ]

    lines = [
        f"{FLAGS.model} on Fashion-MNIST, {FLAGS.epochs} epochs on "
        f"{FLAGS.train_limit or 60000} images, batch {FLAGS.batch}, seed 0; "
        f"{generated} generated 3x3 weights; {other} other trainable "
        "parameters (BN, classifier) stay free.",
        "",
        "| DoF (ring / generated) | ring size | trainable params | test accuracy |",
        "| --- | --- | --- | --- |",
        *rows,
        f"| free (no ring) | - | {trainable} | {reference:.4f} |",
        "",
        f"Fit: accuracy = {slope:.4f} * log10(DoF) + {intercept:.4f} "
        f"(R^2 = {r2:.3f}).",
        "",
        f"Sharing ablation at DoF {FLAGS.ablation_dof:g}:",
        "",
        "| mode | test accuracy |",
        "| --- | --- |",
        *(f"| {mode} | {accuracy:.4f} |" for mode, accuracy in ablation),
    ]
    table = "\n".join(lines)
    workdir = Path(FLAGS.workdir)
    (workdir / "rpg_dof_sweep.md").write_text(table + "\n")
    plot(points, reference, slope, intercept, workdir / "rpg_dof_sweep.png")
    print(table)


def plot(points, reference, slope, intercept, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dofs = np.array([p[0] for p in points])
    fig, axis = plt.subplots(figsize=(5.5, 3.8))
    axis.semilogx(
        dofs, [p[1] for p in points], "o-", label="RPG (signed permutation)"
    )
    grid = np.logspace(np.log10(dofs.min()), np.log10(dofs.max()), 50)
    axis.semilogx(
        grid,
        slope * np.log10(grid) + intercept,
        "--",
        color="gray",
        label=f"log-linear fit, slope {slope:.3f}/decade",
    )
    axis.axhline(
        reference, color="tab:green", linestyle=":", label="free model"
    )
    axis.set_xlabel("DoF (ring size / generated weights)")
    axis.set_ylabel("test accuracy")
    axis.set_title(f"{FLAGS.model}, Fashion-MNIST")
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    app.run(main)
