"""Finding a trained model and its data settings in a train.py workdir."""

import json
from pathlib import Path

MODEL_CANDIDATES = ("model.keras", "target/model.keras")


def locate_model(workdir=None, model=None):
    """Path of `model`, else of the first of MODEL_CANDIDATES in `workdir`."""
    if model:
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"--model {path} does not exist.")
        return path
    if not workdir:
        raise ValueError("Pass --workdir=DIR (a train.py workdir) or --model=PATH.")
    for candidate in MODEL_CANDIDATES:
        path = Path(workdir) / candidate
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"No model in {workdir}: looked for {', '.join(MODEL_CANDIDATES)}. "
        "Train one with train.py first."
    )


def run_data_config(model_path):
    """The `data` section of the nearest config.json above the model."""
    for folder in list(Path(model_path).resolve().parents)[:3]:
        config = folder / "config.json"
        if config.is_file():
            return json.loads(config.read_text()).get("data", {})
    return {}


def load_run_data(model_path, name=None, data_dir=None, eval_limit=None):
    """`(train_source, test_source)` for a model, from its run's config."""
    data = run_data_config(model_path)
    return load_export_data(
        name or data.get("name") or "fashion_mnist",
        data_dir=data_dir or data.get("data_dir") or None,
        manual_dir=data.get("manual_dir") or None,
        eval_split=data.get("eval_split"), eval_limit=eval_limit)


def load_export_data(name, data_dir=None, manual_dir=None, eval_split=None,
                     eval_limit=None):
    """`(train_source, test_source)`: calibration images come from "train",
    evaluation from `eval_split` ("validation" for imagenet2012, else
    "test", when None). Nothing is downloaded."""
    from repopt_tf.data import load_source

    common = dict(data_dir=data_dir, manual_dir=manual_dir, download=False)
    split = eval_split or ("validation" if name == "imagenet2012" else "test")
    train = load_source(name, "train", **common)
    test = load_source(name, split, limit=eval_limit or None, **common)
    return train, test
