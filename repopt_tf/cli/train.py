"""Train RepOpt-VGG: hyper-search, target, baselines, or the whole quick start.

    python train.py                                   # quick start on Fashion-MNIST
    python train.py --config=configs/fashion_mnist.py:hs --workdir=runs/hs
    repopt-train --config=fashion_mnist.py:hs     # installed: bundled configs
    python train.py --config=configs/fashion_mnist.py:target \\
        --config.scales=runs/hs/hs/scales.npz --workdir=runs/target
    python train.py --config=configs/imagenet_b1.py --strategy=mirrored \\
        --config.data.manual_dir=/data/imagenet --workdir=runs/b1

Any config field can be overridden with --config.<field>=<value>. Each stage
records the config it trains with in WORKDIR/<stage>/config.json, and the
whole resolved config goes to WORKDIR/config.json when the run finishes.
Rerunning with the same WORKDIR resumes an interrupted stage from its last
finished epoch and reuses finished stages; a stage whose config changed is
refused with the fields that differ.
"""

from repopt_tf.cli import exit_unless_tensorflow

exit_unless_tensorflow("train.py (repopt-train)")

import sys
from pathlib import Path

from absl import app
from absl import flags

from repopt_tf.cli import define_config_flag
from repopt_tf.cli import define_lock_flag
from repopt_tf.cli import run_main
from repopt_tf.configs import CONFIG_DIR
from repopt_tf.configs import bundled_configs

define_config_flag(
    "config",
    str(CONFIG_DIR / "quickstart.py"),
    "Config file PATH[:ARG]; a bundled one by name from any directory "
    f"(fashion_mnist.py:hs; bundled: {', '.join(bundled_configs())}).",
)
flags.DEFINE_string("workdir", "runs/quickstart", "Output directory.")
flags.DEFINE_enum(
    "strategy",
    "default",
    ["default", "mirrored", "multi_worker", "tpu"],
    "tf.distribute strategy (TensorFlow backend); on JAX, mirrored is "
    "keras.distribution.DataParallel over every device.",
)
flags.DEFINE_string("tpu", "", "TPU name or address for --strategy=tpu.")
flags.DEFINE_bool("verbose", False, "Show TensorFlow's start-up and INFO logs.")
flags.DEFINE_integer(
    "cpu_devices",
    0,
    "Split the CPU into N logical devices (for --strategy="
    "mirrored on a CPU-only machine); 0 leaves it whole.",
)
define_lock_flag()
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from repopt_tf.quiet import quiet_logs
    from repopt_tf.run_lock import RunLockedError
    from repopt_tf.run_lock import run_lock
    from repopt_tf.training import TrainingDiverged
    from repopt_tf.training.validation import validate_config

    quiet_logs(FLAGS.verbose)
    workdir = Path(FLAGS.workdir)
    try:
        validate_config(FLAGS.config, workdir)
        with run_lock(workdir, "train.py", FLAGS.wait_for_lock, _log):
            table = _train(FLAGS.config, workdir)
    # FileNotFoundError, NotADirectoryError, a full disk: all OSErrors.
    except (ValueError, OSError, TrainingDiverged, RunLockedError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("\n" + table)
    return 0


def _log(message):
    print(f"[repopt] {message}", flush=True)


def _train(config, workdir):
    """Runs the config's stages in `workdir`; returns the results table."""
    from repopt_tf.atomic import write_text
    from repopt_tf.rundir import RunDir
    from repopt_tf.training import Experiment
    from repopt_tf.training import get_strategy
    from repopt_tf.training import results_table
    from repopt_tf.training import split_cpu

    if FLAGS.cpu_devices:
        split_cpu(FLAGS.cpu_devices)
    strategy = get_strategy(FLAGS.strategy, FLAGS.tpu)
    _log(
        f"mode {config.mode}, workdir {workdir}, strategy "
        f"{FLAGS.strategy} ({strategy.num_replicas_in_sync} replicas)"
    )
    results = Experiment(config, workdir, strategy).run()
    run_dir = RunDir(workdir)
    write_text(run_dir.config, config.to_json_best_effort(indent=2))
    table = results_table(results)
    write_text(run_dir.results_table, table + "\n")
    return table


def run():
    """Console script `repopt-train`."""
    run_main(main, __name__)


if __name__ == "__main__":
    run()
