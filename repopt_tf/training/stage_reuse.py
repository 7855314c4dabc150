"""Whether a stage's folder may be reused, resumed or must be refused.

A stage's folder holds what decides its training (`stage_config`: the
resolved config fields it reads, plus the number of training images). A
finished stage of the same config is reused, an interrupted one resumes
from its backup; one of another config is refused with the differences
(or retrained with `--config.stage_reuse=rerun`).
"""

import json
import shutil

from repopt_tf.configs import base
from repopt_tf.training.log import log
from repopt_tf.training.validation import flatten

# Config fields that only one stage reads: a change elsewhere keeps it valid.
STAGE_SECTIONS = {
    "hs": "hs",
    "scales": "target",
    "reinit": "target",
    "grad_mults": "target",
    "use_identity_scales": "target",
    "rpg": "baseline_sgd",
    "repvgg": "baseline_repvgg",
}
_RUN_ONLY = {"mode", "quickstart", "stage_reuse", "corrupt_backup"}


def stage_config(config, stage, train_images):
    """The resolved config fields that decide what `stage` trains, plus
    the number of training images (`{"dotted.key": value}`)."""
    ignored = _RUN_ONLY | {
        section for section, owner in STAGE_SECTIONS.items() if owner != stage
    }
    flat = {
        key: value
        for key, value in flatten(config.to_dict())
        if key.split(".")[0] not in ignored
    }
    flat["data.train_images"] = train_images
    return json.loads(json.dumps(flat))  # as it reads back from disk


def finished_record(run_dir, stage, config, epochs, images, current):
    """The results record of `stage` when its folder may be reused as is,
    else None (nothing there, or cleared for a rerun).

    Raises:
        ValueError: the folder holds a run of another model, length, data
            size or config, and `config.stage_reuse` is "refuse".
    """
    stage_dir = run_dir.stage(stage)
    finished = run_dir.recorded().get(stage)
    conflict = _conflict(stage_dir, finished, config, epochs, images, current)
    if conflict is None:
        return finished
    message, advice = conflict
    if config.stage_reuse == "refuse":
        raise ValueError(
            f"{message}{advice} (or pass --config.stage_reuse=rerun)."
        )
    log(f"{stage}: {message}; retraining it (stage_reuse=rerun)")
    shutil.rmtree(stage_dir.path)
    run_dir.forget(stage)
    return None


def _conflict(stage_dir, finished, config, epochs, images, current):
    """`(why the folder cannot be reused, advice)`, or None."""
    workdir = stage_dir.path
    # Runs recorded before train_images was stored match any size.
    if finished and (
        finished["model"],
        finished["epochs"],
        finished.get("train_images") or images,
    ) != (config.model, epochs, images):
        return (
            f"{workdir} holds a finished {finished['model']} run of "
            f"{finished['epochs']} epochs on "
            f"{finished.get('train_images') or 'an unknown number of'} "
            f"training images, not {config.model} for {epochs} on "
            f"{images}",
            "; use a new --workdir",
        )
    # Only a finished stage or a resumable one (backup/) is protected.
    protected = finished or stage_dir.backup.exists()
    differences = protected and differences_from(
        stage_dir.saved_config(), current
    )
    if not differences:
        return None
    more = len(differences) - 6
    return (
        f"{workdir} holds a {'finished' if finished else 'interrupted'} run "
        "with another config ("
        + "; ".join(differences[:6])
        + (f"; +{more} more" if more > 0 else "")
        + ")",
        f": use a new --workdir, or delete {workdir} to retrain",
    )


def differences_from(saved, current):
    """`["key: saved -> current", ...]` against a stage's saved config.

    A field that one side lacks counts as its default in `configs/base.py`,
    so a run recorded before a field existed stays valid while the field
    keeps its default.
    """
    if saved is None:
        return []
    defaults = dict(flatten(json.loads(base.get_config().to_json())))

    def value(config, key):
        return config.get(key, defaults.get(key, "(unset)"))

    return [
        f"{key}: {value(saved, key)!r} -> {value(current, key)!r}"
        for key in sorted(set(saved) | set(current))
        if value(saved, key) != value(current, key)
    ]
