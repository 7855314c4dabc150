"""Flags and loading shared by the tools that start from a trained model
(`repopt-export`, `python -m repopt_tf.qat`)."""

import sys
from pathlib import Path

from absl import flags

from repopt_tf.rundir import STAGE_MODELS


def define_run_flags():
    """--workdir, --stage, --model, --output_dir, --data, --data_dir,
    --eval_limit, --verbose."""
    flags.DEFINE_string(
        "workdir",
        None,
        "A train.py workdir: its one model, or --stage, or "
        "(asked at a terminal) one of several; else target.",
    )
    flags.DEFINE_enum(
        "stage",
        None,
        list(STAGE_MODELS),
        "With --workdir: which stage's model to use.",
    )
    flags.DEFINE_string(
        "model", None, "Path of a .keras model (not with --workdir)."
    )
    flags.DEFINE_string(
        "output_dir", None, "Where to write (default: the model's folder)."
    )
    flags.DEFINE_string(
        "data",
        None,
        "Data set (default: the run's config, else fashion_mnist).",
    )
    flags.DEFINE_string(
        "data_dir", None, "tensorflow-datasets / Fashion-MNIST folder."
    )
    flags.DEFINE_integer(
        "eval_limit",
        0,
        "Evaluate on the first N test images (0: all).",
        lower_bound=0,
    )
    flags.DEFINE_bool(
        "verbose", False, "Show TensorFlow's start-up and INFO logs."
    )
    flags.mark_flags_as_mutual_exclusive(["model", "workdir"])


def ask_stage(stages):
    """Asks at the terminal which of several stage models to use."""
    for number, stage in enumerate(stages, start=1):
        print(f"  {number}. {stage}")
    while True:
        answer = input(
            f"Use which model? [1-{len(stages)}, default 1] "
        ).strip()
        if not answer:
            return stages[0]
        if answer.isdigit() and 1 <= int(answer) <= len(stages):
            return stages[int(answer) - 1]
        if answer in stages:
            return answer


def load_trained_model(log):
    """`(model_path, model, train_source, test_source, output_dir)` from the
    flags above; raises ValueError / FileNotFoundError with the reason."""
    from repopt_tf.checkpoints import read_keras_model
    from repopt_tf.export.runs import load_run_data
    from repopt_tf.export.runs import locate_model

    values = flags.FLAGS
    model_path = locate_model(
        values.workdir,
        values.model,
        values.stage,
        ask=ask_stage if sys.stdin.isatty() else None,
        log=log,
    )
    log(f"model {model_path}")
    model = read_keras_model(model_path)
    train, test = load_run_data(
        model_path, values.data, values.data_dir, values.eval_limit
    )
    return (
        model_path,
        model,
        train,
        test,
        Path(values.output_dir or model_path.parent),
    )
