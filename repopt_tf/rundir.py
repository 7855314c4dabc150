"""The layout of a train.py workdir, written once::

    WORKDIR/
      config.json          the whole resolved config (when the run finishes)
      results.json         {stage: result} of the finished stages
      results.md           their table
      <stage>/             hs, target, baseline_sgd, baseline_repvgg
        config.json        the config fields that decide what the stage trains
        model.keras        the trained model
        model_fused.keras  baseline_repvgg: its fused deploy twin
        scales.npz         hs: the searched scales
        checkpoint.keras, backup/, log.csv, tensorboard/

`RunDir` and `StageDir` name these paths; training writes through them and
the export tools find models and data settings through them.
"""

import json
from pathlib import Path

from repopt_tf.atomic import write_text

# Exportable models: name -> (stage folder, file), in the order offered.
STAGE_MODELS = {
    "target": ("target", "model.keras"),
    "baseline_sgd": ("baseline_sgd", "model.keras"),
    "baseline_repvgg_fused": ("baseline_repvgg", "model_fused.keras"),
    "baseline_repvgg": ("baseline_repvgg", "model.keras"),
    "hs": ("hs", "model.keras"),
}
# What a workdir with several models exports when nobody can be asked.
DEFAULT_STAGE = "target"


class StageDir:
    """`WORKDIR/<stage>/`."""

    def __init__(self, path):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.model = self.path / "model.keras"
        self.fused_model = self.path / "model_fused.keras"
        self.scales = self.path / "scales.npz"
        self.checkpoint = self.path / "checkpoint.keras"
        self.backup = self.path / "backup"
        self.log = self.path / "log.csv"
        self.tensorboard = self.path / "tensorboard"

    def saved_config(self):
        """The stage's recorded `{"dotted.key": value}` config, or None."""
        return (
            json.loads(self.config.read_text())
            if self.config.is_file()
            else None
        )

    def data_config(self):
        """The `data` section of the stage's config (`{"name": ..., ...}`)."""
        flat = self.saved_config() or {}
        return {
            key.removeprefix("data."): value
            for key, value in flat.items()
            if key.startswith("data.")
        }


class RunDir:
    """`WORKDIR/`: the run's files and its stage folders."""

    def __init__(self, path):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.results = self.path / "results.json"
        self.results_table = self.path / "results.md"

    def stage(self, name):
        return StageDir(self.path / name)

    def model_path(self, name):
        """Path of exportable model `name` (a key of `STAGE_MODELS`)."""
        folder, file = STAGE_MODELS[name]
        return self.path / folder / file

    def models(self):
        """`{name: path}` of the models present (the hs model only when it
        is the only one: it is a search model, not one to deploy)."""
        found = {
            name: self.model_path(name)
            for name in STAGE_MODELS
            if self.model_path(name).is_file()
        }
        if set(found) - {"hs"}:
            found.pop("hs", None)
        return found

    def recorded(self):
        """`{stage: result dict}` of the finished stages."""
        return (
            json.loads(self.results.read_text())
            if self.results.is_file()
            else {}
        )

    def record(self, stage, result):
        """Adds a finished stage's result dict to `results.json`."""
        recorded = self.recorded()
        recorded[stage] = result
        write_text(self.results, json.dumps(recorded, indent=2))

    def forget(self, stage):
        """Removes a stage (and its `_fused` twin) from `results.json`."""
        recorded = self.recorded()
        kept = {
            name: result
            for name, result in recorded.items()
            if name.removesuffix("_fused") != stage
        }
        if kept != recorded:
            write_text(self.results, json.dumps(kept, indent=2))


def data_config_of(model_path):
    """The `data` config of the run that wrote `model_path`, or `{}`: from
    its stage's config.json, else the run's."""
    stage = StageDir(Path(model_path).resolve().parent)
    if stage.config.is_file():
        return stage.data_config()
    run = RunDir(stage.path.parent)
    if run.config.is_file():
        return json.loads(run.config.read_text()).get("data", {})
    return {}
