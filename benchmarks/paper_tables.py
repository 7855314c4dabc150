"""The paper's claims on Fashion-MNIST, with seeds and error bars: Table 4
(ablation), Table 8 (fp32 vs int8 PTQ) and Table 11 / Fig. 3 (kernel
statistics and histograms).

    python -m benchmarks.paper_tables                  # the whole study
    python -m benchmarks.paper_tables --seeds=0        # one seed's stages
    python -m benchmarks.paper_tables --workdir=runs/rerun \
        --output=runs/rerun.md --compare_workdir=runs/paper_tables  # again

Every run is a train.py stage in `WORKDIR/seed<k>/<row>/` with
`deterministic=True` and seed k, so a rerun reuses what finished and resumes
what was interrupted: the study spans sessions, stage by stage. Rows per
seed (one hyper-search per seed gives the scales of the RepOpt rows):

- `plain`: the plain network with SGD;
- `reinit_only`: RepOpt without Grad Mults (Rule of Initialization only);
- `mults_only`: RepOpt without the Rule of Initialization;
- `repopt`: RepOpt-VGG (searched scales, both);
- `repvgg`: RepVGG's training form with SGD, evaluated fused;
- `b1_scales`: RepOpt-VGG with the authors' B1 scales instead of the
  seed's search, mapped by stage position (`repopt_tf.models.repopt_vgg.scale_transfer`);
- `repvgg_recipe`: RepVGG with its own recipe, where its int8 collapse was
  reported: custom L2 on the equivalent kernel (`repvgg.custom_l2`) with
  RepVGG's coefficient 1e-4, and twice the epochs.

After training, each model's fp32 and int8 PTQ numbers (per-channel and
per-tensor weights, `benchmarks.ptq`) are cached beside it
(`ptq.json`). The report, written after every finished stage, gives mean
+- std over the seeds, each row's paired difference to `plain` seed by
seed, and kernel statistics; `--output` (default docs/paper_tables.md) and
`<output stem>_kernels.png` are what gets committed.
"""

import dataclasses
import json
import os
import re
import statistics
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]

import keras  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from benchmarks.ptq import ptq_row  # noqa: E402
from benchmarks.ptq import ptq_table  # noqa: E402
from repopt_tf.atomic import write_text  # noqa: E402
from repopt_tf.checkpoints import read_keras_model  # noqa: E402
from repopt_tf.cli.flag_checks import require_models  # noqa: E402
from repopt_tf.configs import base  # noqa: E402
from repopt_tf.data import load_source  # noqa: E402
from repopt_tf.export.diagnostics import deploy_kernels  # noqa: E402
from repopt_tf.export.diagnostics import kernel_histograms  # noqa: E402
from repopt_tf.markdown import table  # noqa: E402
from repopt_tf.models.repopt_vgg import VARIANTS  # noqa: E402
from repopt_tf.rundir import RunDir  # noqa: E402
from repopt_tf.scales import load_scales  # noqa: E402
from repopt_tf.scales import save_scales  # noqa: E402
from repopt_tf.scales import transfer_scales  # noqa: E402
from repopt_tf.training import Experiment  # noqa: E402
from repopt_tf.training import get_strategy  # noqa: E402

flags.DEFINE_string("workdir", "runs/paper_tables", "Study folder.")
flags.DEFINE_list(
    "seeds", ["0", "1", "2"], "Seeds (one full set of rows each)."
)
flags.DEFINE_string("model", "repopt_vgg_a0_narrow", "Variant.")
flags.DEFINE_integer("epochs", 15, "Epochs of every row.", lower_bound=1)
flags.DEFINE_integer("hs_epochs", 15, "Hyper-search epochs.", lower_bound=1)
flags.DEFINE_integer(
    "train_limit", 0, "Training images (0: all 60,000).", lower_bound=0
)
flags.DEFINE_integer(
    "eval_limit", 0, "Test images (0: all 10,000).", lower_bound=0
)
flags.DEFINE_integer(
    "representative", 300, "PTQ calibration images.", lower_bound=1
)
flags.DEFINE_bool("ptq", True, "Also measure int8 PTQ of every model.")
flags.DEFINE_string(
    "output", str(ROOT / "docs/paper_tables.md"), "Report (markdown)."
)
flags.DEFINE_string(
    "compare_workdir",
    "",
    "Another workdir of the same study (a rerun from scratch): the report "
    "adds both runs' top-1 side by side, row by row and seed by seed.",
)
FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Row:
    """One row: its config overrides ("dotted.key": value), the stage whose
    model it is, where its scales come from (`"hs"`: the seed's search,
    `"b1"`: the official B1 scales by position) and its epochs as a
    multiple of `--epochs`."""

    label: str
    overrides: dict
    stage: str
    scales: str = ""
    epoch_factor: int = 1


ROWS = {
    "plain": Row("plain VGG + SGD", {"mode": "baseline_sgd"}, "baseline_sgd"),
    "reinit_only": Row(
        "RepOpt, Rule of Initialization only (no Grad Mults)",
        {"mode": "target", "grad_mults": False},
        "target",
        scales="hs",
    ),
    "mults_only": Row(
        "RepOpt, Grad Mults only (no reinit)",
        {"mode": "target", "reinit": False},
        "target",
        scales="hs",
    ),
    "repopt": Row(
        "RepOpt-VGG (HS scales)", {"mode": "target"}, "target", scales="hs"
    ),
    "repvgg": Row(
        "RepVGG + SGD (fused for eval)",
        {"mode": "baseline_repvgg"},
        "baseline_repvgg_fused",
    ),
    "b1_scales": Row(
        "RepOpt-VGG (official B1 scales mapped by position)",
        {"mode": "target"},
        "target",
        scales="b1",
    ),
    "repvgg_recipe": Row(
        "RepVGG, its own recipe (custom L2 1e-4, 2x epochs; fused)",
        {
            "mode": "baseline_repvgg",
            "repvgg.custom_l2": True,
            "train.weight_decay": 1e-4,
        },
        "baseline_repvgg_fused",
        epoch_factor=2,
    ),
}
LABELS = {name: row.label for name, row in ROWS.items()}


def log(message):
    print(f"[paper_tables] {message}", flush=True)


def config_for(seed, row=None):
    """The study's config for one seed: the hyper-search's, or `row`'s."""
    config = base.get_config()
    config.model = FLAGS.model
    config.seed = seed
    config.deterministic = True
    config.train.epochs = FLAGS.epochs * (row.epoch_factor if row else 1)
    config.hs.epochs = FLAGS.hs_epochs
    config.data.train_limit = FLAGS.train_limit
    config.data.eval_limit = FLAGS.eval_limit
    config.update_from_flattened_dict(row.overrides if row else {"mode": "hs"})
    return config


def seed_dir(seed, workdir=None):
    return Path(workdir or FLAGS.workdir) / f"seed{seed}"


def b1_scales():
    """The official B1 scales mapped onto `--model` (`transfer_scales`),
    written once into the workdir."""
    path = Path(FLAGS.workdir) / f"repopt_vgg_b1_scales_on_{FLAGS.model}.npz"
    if not path.is_file():
        mapped = transfer_scales(
            load_scales("repopt_vgg_b1"), "repopt_vgg_b1", FLAGS.model
        )
        save_scales(
            path,
            mapped,
            variant=FLAGS.model,
            mapped_from="repopt_vgg_b1 (official CIFAR-100 search)",
            rule="repopt_tf.scales.transfer_scales (stage position)",
        )
    return path


def train_seed(seed):
    """Trains (or reuses) the hyper-search and every row of one seed."""
    folder = seed_dir(seed)
    hs = RunDir(folder / "hs")
    Experiment(config_for(seed), hs.path, get_strategy()).run()
    scales = {"hs": hs.stage("hs").scales}
    if FLAGS.model in VARIANTS:  # a RepOpt-VGG variant: B1's scales fit
        scales["b1"] = b1_scales()
    for name, row in ROWS.items():
        if row.scales and row.scales not in scales:
            log(
                f"seed {seed}, {name}: skipped ({FLAGS.model} is no RepOpt-VGG)"
            )
            continue
        log(f"seed {seed}, {name}: {row.label}")
        config = config_for(seed, row)
        if row.scales:
            config.scales = str(scales[row.scales])
        Experiment(config, folder / name, get_strategy()).run()
        keras.backend.clear_session()
        yield name


def ptq(seed, row, train, test):
    """The row's cached `ptq_row`, measured once."""
    cache = seed_dir(seed) / row / "ptq.json"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if {"activation_ranges", "std_centre"} <= set(cached):
            return cached  # else measured by an older version: again
    model = read_keras_model(
        RunDir(seed_dir(seed) / row).model_path(ROWS[row].stage)
    )
    result = ptq_row(
        ROWS[row].label, model, train, test, FLAGS.representative, log=log
    )
    write_text(cache, json.dumps(result, indent=2))
    keras.backend.clear_session()
    return result


def accuracies(seeds, workdir=None):
    """`{row: {seed: test accuracy}}` of the finished stages (of the study
    in `workdir`, default `--workdir`)."""
    found = {}
    for name, row in ROWS.items():
        for seed in seeds:
            recorded = RunDir(seed_dir(seed, workdir) / name).recorded()
            if row.stage in recorded:
                found.setdefault(name, {})[seed] = recorded[row.stage][
                    "test_accuracy"
                ]
    return found


def _mean_std(values):
    if not values:
        return "-"
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return (
        f"{100 * statistics.mean(values):.2f} +- "
        f"{100 * statistics.stdev(values):.2f}"
    )


def _table4_rows(seeds, found):
    """Table 4's cells: per seed, mean +- std, paired differences."""
    rows = []
    for row, label in LABELS.items():
        values = found.get(row, {})
        cells = [
            f"{100 * values[s]:.2f}" if s in values else "-" for s in seeds
        ]

        def paired(other, values=values, row=row):
            reference = found.get(other, {})
            deltas = [
                values[s] - reference[s] for s in values if s in reference
            ]
            if row == other or not deltas:
                return "-"
            return f"{_mean_std(deltas)} ({len(deltas)} seeds)"

        mean = _mean_std(list(values.values()))
        rows.append([label, *cells, mean, paired("plain"), paired("repvgg")])
    return rows


def _measured_by_row(ptq_rows):
    """`(label, [ptq_row of each seed])` for each row measured, in table
    order."""
    for row, label in LABELS.items():
        measured = [r for (rr, _), r in ptq_rows.items() if rr == row]
        if measured:
            yield label, measured


def _table8_rows(ptq_rows):
    """Table 8's cells: fp32 and int8 top-1 over the seeds, per row."""
    rows = []
    for label, measured in _measured_by_row(ptq_rows):

        def column(key, rows=measured):
            return _mean_std([r[key] for r in rows if r[key] is not None])

        drop = [
            r["per_tensor_top1"] - r["fp32_top1"]
            for r in measured
            if r["fp32_top1"] is not None
        ]
        rows.append(
            [
                label,
                column("fp32_top1"),
                column("per_channel_top1"),
                column("per_tensor_top1"),
                _mean_std(drop),
            ]
        )
    return rows


def report(seeds, ptq_rows, test_images):
    """The Markdown report: how it was made, Table 4, Table 8 with the
    kernel and activation statistics when PTQ ran, the reproduction."""
    found = accuracies(seeds)
    lines = [
        "# The paper's tables on Fashion-MNIST, with seeds",
        "",
        made_by(seeds, test_images),
        "",
        "## Table 4: ablation",
        "",
    ]
    header = [
        "row",
        *(f"seed {s}" for s in seeds),
        "mean +- std",
        "paired vs plain",
        "paired vs RepVGG",
    ]
    lines += table(header, _table4_rows(seeds, found))
    if ptq_rows:
        lines += table8_lines(seeds, ptq_rows, test_images)
    if FLAGS.compare_workdir:
        lines += reproduction_lines(seeds, found)
    return "\n".join(lines) + "\n"


def made_by(seeds, test_images):
    """The paragraph that says how the study was run."""
    compare = (
        f" --compare_workdir={FLAGS.compare_workdir}"
        if FLAGS.compare_workdir
        else ""
    )
    return (
        f"Made by `python -m benchmarks.paper_tables --seeds="
        f"{','.join(map(str, seeds))} --epochs={FLAGS.epochs} "
        f"--hs_epochs={FLAGS.hs_epochs}{compare}` ({FLAGS.model} at 28x28x1, "
        f"Fashion-MNIST, {FLAGS.train_limit or 60000} training images of "
        f"which 5 % are held out for validation, {test_images} test "
        "images, batch 128, SGD Nesterov 0.9, "
        "LR 0.1 cosine, L2 4e-5, pad-4 crop + flip, "
        "`--config.deterministic=True`, whose cost is in docs/results.md, "
        "Reliability). Each cell is test top-1 in %; "
        "mean +- std over the seeds that finished; the paired columns are the "
        "row minus `plain` (or RepVGG) seed by seed. A row labelled 2x "
        "epochs trained twice as long as the others: it is there for its "
        "int8 numbers, not as an equal-budget entry of Table 4."
    )


def table8_lines(seeds, ptq_rows, test_images):
    """Table 8 (fp32 vs int8), the kernel and activation statistics, and
    every model's PTQ row with its int8 diagnostics."""
    header = [
        "row",
        "fp32",
        "int8 per-channel",
        "int8 per-tensor",
        "per-tensor minus fp32",
    ]
    per_model = [
        {**ptq_rows[row, seed], "model": f"{label}, seed {seed}"}
        for row, label in LABELS.items()
        for seed in seeds
        if (row, seed) in ptq_rows
    ]
    return [
        "",
        "## Table 8: fp32 vs int8 PTQ",
        "",
        *table(header, _table8_rows(ptq_rows)),
        *kernel_lines(ptq_rows),
        *activation_lines(seeds, ptq_rows),
        "",
        "Per model (seed in the name), with the int8 diagnostics:",
        "",
        ptq_table(
            per_model,
            f"{FLAGS.representative} calibration images, {test_images} "
            "test images; kernel statistics after BN folding (Table 11)",
        ),
    ]


def reproduction_lines(seeds, found):
    """Table 4 again from `--compare_workdir`, beside this run's numbers."""
    other = accuracies(seeds, FLAGS.compare_workdir)
    lines = [
        "",
        "## Reproduction: the same command from an empty workdir",
        "",
        f"`{FLAGS.compare_workdir}` holds the same study run again from "
        "scratch; test top-1 in % of both, and the largest difference of a "
        "seed between them.",
        "",
    ]
    rows = []
    for name, label in LABELS.items():
        mine, theirs = found.get(name, {}), other.get(name, {})
        common = [s for s in seeds if s in mine and s in theirs]
        if not common:
            continue
        largest = max(abs(mine[s] - theirs[s]) for s in common)
        rows.append(
            [
                label,
                _mean_std([mine[s] for s in common]),
                _mean_std([theirs[s] for s in common]),
                f"{100 * largest:.2f}",
                len(common),
            ]
        )
    header = [
        "row",
        "this study",
        "rerun",
        "largest per-seed difference",
        "seeds compared",
    ]
    return lines + table(header, rows)


def kernel_lines(ptq_rows):
    """Table 11: kernel statistics after BN folding, mean +- std over seeds
    (the per-model values are in the last table)."""
    lines = [
        "",
        "## Table 11 / Fig. 3: block kernels as int8 sees them (BN folded)",
        "",
        "Means over the block kernels of each model (stem excluded), then mean "
        "+- std over the seeds; histograms of seed "
        "0 in the PNG beside this file.",
        "",
    ]
    rows = []
    for label, measured in _measured_by_row(ptq_rows):

        def spread(key, rows=measured):
            values = [r[key] for r in rows]
            if len(values) == 1:
                return f"{values[0]:.4g}"
            return (
                f"{statistics.mean(values):.4g} +- "
                f"{statistics.stdev(values):.2g}"
            )

        keys = (
            "kernel_std",
            "std_centre",
            "std_surround",
            "centre_surround",
            "max_tail",
        )
        rows.append([label, *(spread(key) for key in keys)])
    header = [
        "row",
        "std",
        "centre std",
        "surround std",
        "centre / surround",
        "max abs(w) / std",
    ]
    return lines + table(header, rows)


def _depth_order(layer):
    numbers = re.findall(r"\d+", layer)
    return tuple(int(n) for n in numbers) or (1_000,), layer


def activation_lines(seeds, ptq_rows):
    """Calibrated int8 activation range (255 steps) of each conv output
    along the depth, first seed, per row: W8A8 quantizes these too."""
    seed = seeds[0]
    rows = [row for row in ROWS if (row, seed) in ptq_rows]
    if not rows:
        return []
    layers = sorted(
        {
            layer
            for row in rows
            for layer in ptq_rows[row, seed]["activation_ranges"]
        },
        key=_depth_order,
    )
    lines = [
        "",
        f"## Activation ranges per layer (int8 is W8A8; seed {seed})",
        "",
        "The span of each conv output's int8 grid as calibrated "
        "(per-channel weights); a wide range means coarse activation steps.",
        "",
    ]

    def cell(row, layer):
        value = ptq_rows[row, seed]["activation_ranges"].get(layer)
        return "-" if value is None else f"{value:.1f}"

    cells = [[layer, *(cell(row, layer) for row in rows)] for layer in layers]
    return lines + table(["layer", *(LABELS[row] for row in rows)], cells)


def main(argv):
    del argv
    require_models("model", FLAGS.model)
    if not all(s.isdigit() for s in FLAGS.seeds):
        raise app.UsageError(
            f"--seeds must be integers >= 0, got {FLAGS.seeds}"
        )
    seeds = [int(s) for s in FLAGS.seeds]
    output = Path(FLAGS.output)
    ptq_rows = {}
    try:
        train = load_source(
            "fashion_mnist", "train", limit=FLAGS.train_limit or None
        )
        test = load_source(
            "fashion_mnist", "test", limit=FLAGS.eval_limit or None
        )
        for seed in seeds:
            for row in train_seed(seed):
                if FLAGS.ptq:
                    ptq_rows[row, seed] = ptq(seed, row, train, test)
                write_text(output, report(seeds, ptq_rows, test.num_examples))
                log(f"seed {seed}, {row}: report updated ({output})")
        kernels = {
            LABELS[row]: deploy_kernels(
                read_keras_model(
                    RunDir(seed_dir(seeds[0]) / row).model_path(ROWS[row].stage)
                )
            )
            for row in ("plain", "repopt", "repvgg", "repvgg_recipe")
        }
        kernel_histograms(
            kernels, output.with_name(f"{output.stem}_kernels.png")
        )
    except (ValueError, OSError) as error:
        sys.exit(f"error: {error}")
    print(report(seeds, ptq_rows, test.num_examples))


if __name__ == "__main__":
    app.run(main)
