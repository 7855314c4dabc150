"""RPG: Fashion-MNIST accuracy vs ring size (DoF), both schemes, several
seeds, and (optionally) the sharing ablation.

Trains the RPG form of a RepOpt-VGG variant for each DoF fraction (ring
size / generated weights) under each scheme of `repopt_tf.models.rpg`
("window": the paper's text; "authors": the authors' code), for each seed,
and the ordinary model as the free reference; with `--ablation`, at one
DoF, naive sharing vs permutation vs permutation + signs. Each run is a
train.py `baseline_sgd` stage in its own folder, so an interrupted sweep
resumes. Prints the table (mean +- std over seeds), a least-squares fit of
accuracy against log10(DoF) per scheme, and writes
WORKDIR/rpg_dof_sweep.{md,png}.

    python -m benchmarks.rpg_dof_sweep --workdir=runs/rpg_sweep2
"""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from repopt_tf.cli.flag_checks import check_fractions  # noqa: E402
from repopt_tf.cli.flag_checks import require_models  # noqa: E402
from repopt_tf.configs import base  # noqa: E402
from repopt_tf.markdown import table  # noqa: E402
from repopt_tf.training import Experiment  # noqa: E402
from repopt_tf.training import get_strategy  # noqa: E402

flags.DEFINE_string("workdir", "runs/rpg_sweep", "Output folder.")
flags.DEFINE_string("model", "repopt_vgg_s", "Variant.")
flags.DEFINE_list(
    "dofs", ["0.002", "0.01", "0.05", "0.2", "1.0"], "DoF fractions."
)
flags.DEFINE_list(
    "schemes",
    ["window", "authors"],
    "RPG schemes to compare (repopt_tf.models.rpg.SCHEMES).",
)
flags.DEFINE_list("seeds", ["0", "1"], "Seeds (weights, data, ring).")
flags.DEFINE_bool(
    "ablation", False, "Also run the sharing ablation (seed 0, window)."
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


def run(name, seed, dof=0.0, mode="signed_permutation", scheme="window"):
    """Test accuracy of one train.py baseline_sgd stage in its own folder
    (a finished one is reused: the sweep resumes)."""
    config = base.get_config()
    config.mode = "baseline_sgd"
    config.model = FLAGS.model
    config.seed = seed
    config.data.train_limit = FLAGS.train_limit
    config.data.eval_limit = FLAGS.eval_limit
    config.train.epochs = FLAGS.epochs
    config.train.batch_size = FLAGS.batch
    config.rpg.dof = dof
    config.rpg.mode = mode
    config.rpg.seed = seed
    config.rpg.scheme = scheme
    (result,) = Experiment(
        config, Path(FLAGS.workdir) / f"{name}_s{seed}", get_strategy()
    ).run()
    return result.test_accuracy


def mean_std(values):
    """`0.8012 +- 0.0031` (sample std over seeds; one seed: no spread)."""
    values = np.asarray(values)
    spread = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.4f} +- {spread:.4f}", values.mean()


def ring_sizes(generated_by_scheme, dof):
    return {s: max(1, round(dof * t)) for s, t in generated_by_scheme.items()}


def main(argv):
    del argv
    require_models("model", FLAGS.model)
    from repopt_tf.models import build_model
    from repopt_tf.models.rpg import SCHEMES
    from repopt_tf.models.rpg import ring_usage

    unknown = sorted(set(FLAGS.schemes) - set(SCHEMES))
    if unknown:
        raise app.UsageError(f"--schemes: unknown {unknown}; known {SCHEMES}")
    seeds = [int(s) for s in FLAGS.seeds]
    shape = (28, 28, 1)
    free = build_model(FLAGS.model, 10, shape)
    trainable = sum(int(np.prod(w.shape)) for w in free.trainable_weights)
    generated = {
        scheme: ring_usage(
            build_model(FLAGS.model, 10, shape, rpg_dof=1.0, rpg_scheme=scheme)
        )[1]
        for scheme in FLAGS.schemes
    }
    dofs = sorted(float(d) for d in FLAGS.dofs)
    free_text, free_mean = mean_std([run("free", seed) for seed in seeds])
    cells, fits = {}, {}
    for scheme in FLAGS.schemes:
        means = []
        for dof in dofs:
            accuracies = [
                run(f"{scheme}_dof{dof:g}", seed, dof, scheme=scheme)
                for seed in seeds
            ]
            cells[scheme, dof], mean = mean_std(accuracies)
            means.append(mean)
        fits[scheme] = np.polyfit(np.log10(dofs), means, 1)
    lines = _table(dofs, generated, trainable, cells, fits, free_text, seeds)
    if FLAGS.ablation:
        lines += _ablation(seeds[0])
    table = "\n".join(lines)
    workdir = Path(FLAGS.workdir)
    (workdir / "rpg_dof_sweep.md").write_text(table + "\n")
    plot(dofs, cells, fits, free_mean, workdir / "rpg_dof_sweep.png")
    print(table)


def _table(dofs, generated, trainable, cells, fits, free_text, seeds):
    schemes = list(generated)
    lines = [
        f"{FLAGS.model} on Fashion-MNIST, {FLAGS.epochs} epochs on "
        f"{FLAGS.train_limit or 60000} images, batch {FLAGS.batch}, seeds "
        f"{', '.join(map(str, seeds))} (mean +- sample std); generated 3x3 "
        "weights: "
        + ", ".join(f"{s} {t}" for s, t in generated.items())
        + f"; the free model has {trainable} trainable parameters.",
        "",
    ]
    header = ["DoF"]
    for scheme in schemes:
        header += [f"{scheme}: ring", f"{scheme}: accuracy"]
    rows = []
    for dof in dofs:
        sizes = ring_sizes(generated, dof)
        row = [f"{dof:g}"]
        for scheme in schemes:
            row += [sizes[scheme], cells[scheme, dof]]
        rows.append(row)
    rows.append(["free (no ring)", free_text])
    lines += [*table(header, rows), ""]
    for scheme, (slope, intercept) in fits.items():
        lines.append(
            f"Fit, {scheme}: accuracy = {slope:.4f} * log10(DoF) + "
            f"{intercept:.4f}."
        )
    return lines


def _ablation(seed):
    rows = [
        [mode, f"{run(f'ablation_{mode}', seed, FLAGS.ablation_dof, mode):.4f}"]
        for mode in ("shared", "permutation", "signed_permutation")
    ]
    return [
        "",
        f"Sharing ablation at DoF {FLAGS.ablation_dof:g} (window, seed {seed}):",
        "",
        *table(["mode", "test accuracy"], rows),
    ]


def plot(dofs, cells, fits, free_mean, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(5.5, 3.8))
    for scheme, (slope, intercept) in fits.items():
        means = [float(cells[scheme, d].split(" +- ")[0]) for d in dofs]
        spreads = [float(cells[scheme, d].split(" +- ")[1]) for d in dofs]
        axis.errorbar(dofs, means, spreads, marker="o", capsize=3, label=scheme)
        axis.plot(
            dofs,
            slope * np.log10(dofs) + intercept,
            "--",
            color="gray",
            linewidth=0.8,
        )
    axis.set_xscale("log")
    axis.axhline(
        free_mean, color="tab:green", linestyle=":", label="free model"
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
