"""Every train.py config field checked at start-up, before any data loads.

`validate_config(config, workdir)` raises `ConfigError` with one line per
problem, each naming the field, what is allowed and the value
(`train.epochs must be an integer >= 1, got -1`). `RULES` has
one entry per field of `repopt_tf.configs.base.get_config()` (a test keeps
them in step).
"""

import math
import os
from pathlib import Path

from repopt_tf.data.pipeline import AUGMENTATIONS
from repopt_tf.models import list_models
from repopt_tf.models.rpg import MODES as RPG_MODES
from repopt_tf.models.rpg import SCHEMES as RPG_SCHEMES
from repopt_tf.optimizers.grad_mult import saved_grad_mults
from repopt_tf.scales import list_presets
from repopt_tf.scales import load_scales
from repopt_tf.training.recipe import JIT_MODES
from repopt_tf.training.recipe import PRECISIONS
from repopt_tf.training.recipe import rpg_options

MODES = ("quickstart", "hs", "target", "baseline_sgd", "baseline_repvgg")
VALIDATIONS = ("holdout", "test", "none")
OPTIMIZERS = ("sgd", "adamw")
STAGE_REUSE = ("refuse", "rerun")
CORRUPT_BACKUP = ("previous", "scratch")
# Below this a network's five stride-2 stages leave no spatial extent.
MIN_IMAGE_SIZE = 16


class ConfigError(ValueError):
    """A config field has a value that is not allowed."""


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def one_of(options):
    return lambda v: v in options, "one of " + ", ".join(map(repr, options))


def integer(minimum):
    return lambda v: _is_int(v) and v >= minimum, f"an integer >= {minimum}"


def number(low, high=None, high_open=False, low_open=False):
    def check(v):
        if not _is_number(v):
            return False
        above = v > low if low_open else v >= low
        below = high is None or (v < high if high_open else v <= high)
        return above and below

    interval = (
        f"{'(' if low_open else '['}{low:g}, "
        f"{'inf)' if high is None else f'{high:g}' + (')' if high_open else ']')}"
    )
    return check, f"a finite number in {interval}"


BOOLEAN = (lambda v: isinstance(v, bool), "True or False")
TEXT = (lambda v: isinstance(v, str), "a string")
NAME = (lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty string")


def existing_dir_or_empty(v):
    return isinstance(v, str) and (not v or Path(v).is_dir())


def existing_file_or_empty(v):
    return isinstance(v, str) and (not v or Path(v).is_file())


RULES = {
    "mode": one_of(MODES),
    "model": one_of(tuple(list_models())),
    "seed": integer(0),
    "deterministic": BOOLEAN,
    "scales": TEXT,
    "reinit": BOOLEAN,
    "grad_mults": BOOLEAN,
    "init_checkpoint": (existing_file_or_empty, "an existing file or ''"),
    "init_ema": BOOLEAN,
    "init_skip_head": BOOLEAN,
    "use_identity_scales": BOOLEAN,
    "stage_reuse": one_of(STAGE_REUSE),
    "corrupt_backup": one_of(CORRUPT_BACKUP),
    "data.name": NAME,
    "data.image_size": integer(MIN_IMAGE_SIZE),
    "data.channels": one_of((0, 1, 3)),
    "data.augment": one_of(AUGMENTATIONS),
    "data.eval_split": NAME,
    "data.validation": one_of(VALIDATIONS),
    "data.validation_fraction": number(0, 1, high_open=True, low_open=True),
    "data.train_limit": integer(0),
    "data.eval_limit": integer(0),
    "data.data_dir": TEXT,
    "data.manual_dir": (existing_dir_or_empty, "an existing folder or ''"),
    "data.download": BOOLEAN,
    "data.skip_unreadable": BOOLEAN,
    "train.optimizer": one_of(OPTIMIZERS),
    "train.epochs": integer(1),
    "train.batch_size": integer(1),
    "train.reference_batch": integer(1),
    "train.base_lr": number(0),
    "train.warmup_epochs": number(0),
    "train.momentum": number(0, 1, high_open=True),
    "train.nesterov": BOOLEAN,
    "train.weight_decay": number(0),
    "train.scale_weight_decay": BOOLEAN,
    "train.label_smoothing": number(0, 1, high_open=True),
    "train.precision": one_of(PRECISIONS),
    "train.jit_compile": one_of(JIT_MODES),
    "hs.epochs": integer(1),
    "hs.clip_global_norm": number(0),
    "hs.identity_weight_decay": BOOLEAN,
    "repvgg.custom_l2": BOOLEAN,
    "rpg.dof": number(0, 1),
    "rpg.mode": one_of(RPG_MODES),
    "rpg.seed": integer(0),
    "rpg.scheme": one_of(RPG_SCHEMES),
    "rpg.size": integer(0),
    "quickstart.baselines": BOOLEAN,
}


def flatten(tree, prefix=""):
    """`("dotted.key", value)` pairs of a nested dict."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def config_problems(config):
    """`["field: value -> allowed", ...]` for a config (`ConfigDict`)."""
    problems = []
    for key, value in flatten(config.to_dict()):
        rule = RULES.get(key)
        if rule is None:
            problems.append(f"{key}: unknown config field")
            continue
        check, allowed = rule
        if not check(value):
            problems.append(f"config.{key} must be {allowed}, got {value!r}")
    if not problems:
        problems += _cross_field_problems(config)
    return problems


def _cross_field_problems(config):
    problems = []
    if (
        config.mode == "target"
        and not config.scales
        and not saved_grad_mults(config.init_checkpoint)
    ):
        problems.append(
            "target mode needs --config.scales: a preset ("
            f"{', '.join(list_presets())}) or the scales.npz of an hs run; or "
            "--config.init_checkpoint=a target model.keras, whose Grad "
            "Mults are reused"
        )
    elif config.mode == "target" and config.scales:
        try:
            load_scales(config.scales)
        except (FileNotFoundError, ValueError) as error:
            problems.append(f"config.scales: {error}")
    if config.data.name == "imagenet2012" and not config.data.manual_dir:
        problems.append(
            "imagenet2012 needs --config.data.manual_dir: the folder with "
            "its tar files (tensorflow-datasets cannot download it)"
        )
    if config.train.warmup_epochs > config.train.epochs:
        problems.append(
            "config.train.warmup_epochs must be at most train.epochs "
            f"({config.train.epochs}), got {config.train.warmup_epochs!r}"
        )
    if rpg_options(config.rpg) and config.mode != "baseline_sgd":
        problems.append(
            "RPG models (--config.rpg.dof) train in baseline_sgd mode, got "
            f"mode {config.mode!r}: the ring has no per-kernel Grad Mults or "
            "branches"
        )
    if config.repvgg.custom_l2 and config.mode not in (
        "baseline_repvgg",
        "quickstart",
    ):
        problems.append(
            "config.repvgg.custom_l2 is the RepVGG baseline's decay: it needs "
            f"mode baseline_repvgg or quickstart, got mode {config.mode!r}"
        )
    if config.init_checkpoint and config.mode == "quickstart":
        problems.append(
            "--config.init_checkpoint starts one stage from trained weights; "
            "pick its mode (target, hs, baseline_sgd or baseline_repvgg) "
            "instead of quickstart"
        )
    return problems


def workdir_problems(workdir):
    """Why `workdir` cannot hold a run, or []."""
    path = Path(workdir)
    if path.exists() and not path.is_dir():
        return [f"--workdir must be a folder, got the file {workdir!s}"]
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return [
            f"--workdir must be a folder that can be made, got {workdir!s} "
            f"({existing} is a file)"
        ]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [
            f"--workdir must be writable, got {workdir!s} ({existing} is "
            "not writable)"
        ]
    return []


def validate_config(config, workdir=None):
    """Raises `ConfigError` listing every problem of `config` (and of
    `workdir`, when given); returns None when there is none."""
    problems = config_problems(config)
    if workdir is not None:
        problems += workdir_problems(workdir)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
