"""Finding a trained model and its data in a train.py workdir (`RunDir`)."""

from pathlib import Path

from repopt_tf.rundir import DEFAULT_STAGE
from repopt_tf.rundir import STAGE_MODELS
from repopt_tf.rundir import RunDir
from repopt_tf.rundir import data_config_of


def locate_model(workdir=None, model=None, stage=None, ask=None, log=print):
    """Path of `model`, else of the `stage` model in `workdir`.

    Without `stage`, a workdir with one model gives it; with several, `ask`
    (a function from the stage names to the chosen one, used at a terminal)
    picks, else the target (RepOpt) model is taken and the others are named.
    """
    if model:
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"--model {path} does not exist.")
        return path
    if not workdir:
        raise ValueError(
            "Pass --workdir=DIR (a train.py workdir) or --model=PATH."
        )
    run = RunDir(workdir)
    if (run.path / "model.keras").is_file():  # a stage folder itself
        return run.path / "model.keras"
    found = run.models()
    if stage:
        if stage not in STAGE_MODELS:
            raise ValueError(
                f"--stage must be one of {', '.join(STAGE_MODELS)}, "
                f"got {stage!r}."
            )
        path = run.model_path(stage)
        if not path.is_file():
            raise FileNotFoundError(
                f"{workdir} has no {stage} model "
                f"({path.relative_to(run.path)}); it has: "
                f"{', '.join(found) or 'none'}."
            )
        return path
    if not found:
        raise FileNotFoundError(
            f"No model in {workdir}: looked for "
            f"{', '.join(str(run.model_path(s).relative_to(run.path)) for s in STAGE_MODELS)}. "
            "Train one with train.py first."
        )
    if len(found) == 1:
        return next(iter(found.values()))
    if ask is not None:
        return found[ask(list(found))]
    chosen = DEFAULT_STAGE if DEFAULT_STAGE in found else next(iter(found))
    others = ", ".join(s for s in found if s != chosen)
    log(
        f"{workdir} holds several models; exporting {chosen} (others: {others}; "
        "pick one with --stage=NAME)"
    )
    return found[chosen]


def load_run_data(model_path, name=None, data_dir=None, eval_limit=None):
    """`(train_source, test_source)` for a model, from its run's config."""
    data = data_config_of(model_path)
    return load_export_data(
        name or data.get("name") or "fashion_mnist",
        data_dir=data_dir or data.get("data_dir") or None,
        manual_dir=data.get("manual_dir") or None,
        eval_split=data.get("eval_split"),
        eval_limit=eval_limit,
    )


def load_export_data(
    name, data_dir=None, manual_dir=None, eval_split=None, eval_limit=None
):
    """`(train_source, test_source)`: calibration images come from "train",
    evaluation from `eval_split` ("validation" for imagenet2012, else
    "test", when None), its labels mapped to train's classes by name
    (`align_classes`). Nothing is downloaded."""
    from repopt_tf.data import align_classes
    from repopt_tf.data import load_source

    common = dict(data_dir=data_dir, manual_dir=manual_dir, download=False)
    split = eval_split or ("validation" if name == "imagenet2012" else "test")
    train = load_source(name, "train", **common)
    test = load_source(name, split, limit=eval_limit or None, **common)
    return train, align_classes(train, test, split)
