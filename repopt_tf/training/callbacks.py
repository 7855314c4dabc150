"""Callbacks every training run gets: logs, checkpoints, backup, NaN guard;
and the resume that reads the backup."""

import json
import math
import sys
import time
from pathlib import Path

import keras

from repopt_tf import faults
from repopt_tf.atomic import atomic_path
from repopt_tf.atomic import save_model
from repopt_tf.atomic import write_text


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf."""


def finite_loss(logs):
    """Whether an epoch's logs hold a finite loss (or none at all)."""
    loss = (logs or {}).get("loss")
    return loss is None or math.isfinite(float(loss))


class StopOnNaN(keras.callbacks.TerminateOnNaN):
    """TerminateOnNaN that remembers where it fired, and says what to try
    and where the last good state of the stage in `stage_dir` is."""

    def __init__(self, stage_dir=None):
        super().__init__()
        self.stage_dir = stage_dir
        self.message = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        super().on_batch_end(batch, logs)
        if self.model.stop_training and self.message is None:
            self.message = (
                f"Training diverged: the loss became {logs.get('loss')} at "
                f"epoch {self._epoch + 1}, step {batch + 1}; nothing of this "
                f"epoch was saved. {self._resume_advice()}Try a lower "
                "learning rate (--config.train.base_lr), more warm-up "
                "epochs (--config.train.warmup_epochs), or check the inputs."
            )
            print(f"\n{self.message}", file=sys.stderr)

    def _resume_advice(self):
        if self.stage_dir is None or not self._epoch:
            return ""
        return (
            f"The last good state ({self._epoch} epochs) is kept: the same "
            "command resumes from it; to go on with other settings, "
            f"fine-tune from {self.stage_dir.checkpoint} in a new --workdir "
            "(--config.init_checkpoint=...). "
        )


class EpochBackup(keras.callbacks.Callback):
    """Backs the whole training state (weights and optimizer) up after
    every epoch, for `restore_backup`: `epoch_<n>.weights.h5` (n epochs
    done), then `state.json` naming it and the one before, each written
    atomically (`repopt_tf.atomic`), so a kill at any moment leaves a
    consistent backup. Older files are removed; the runner removes the
    folder once the stage's results are recorded."""

    def __init__(self, backup_dir):
        super().__init__()
        self.backup_dir = Path(backup_dir)

    def on_epoch_end(self, epoch, logs=None):
        if not finite_loss(logs):  # diverged: keep the last good backup
            return
        name = f"epoch_{epoch + 1}.weights.h5"
        with atomic_path(self.backup_dir / name) as temporary:
            self.model.save_weights(temporary)
        kept = [{"epoch": epoch + 1, "file": name}] + backups(self.backup_dir)[
            :1
        ]
        write_text(
            self.backup_dir / BACKUP_STATE, json.dumps({"backups": kept})
        )
        for path in self.backup_dir.glob("epoch_*.weights.h5"):
            if path.name not in {entry["file"] for entry in kept}:
                path.unlink()


BACKUP_STATE = "state.json"


def backups(backup_dir):
    """`[{"epoch": n, "file": name}, ...]` of a backup folder, newest first
    ([] without a readable state file)."""
    try:
        state = json.loads((Path(backup_dir) / BACKUP_STATE).read_text())
        return [
            {"epoch": int(entry["epoch"]), "file": str(entry["file"])}
            for entry in state["backups"]
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def restore_backup(model, backup_dir, corrupt="previous", log=print):
    """Loads the newest readable backup of `EpochBackup` into a compiled
    `model` (weights and optimizer state) and returns its epoch count, or
    0 to train from scratch.

    A backup that fails to load is reported; `corrupt="previous"` then
    tries the one before, `"scratch"` starts from the initial state.
    """
    entries = backups(backup_dir)
    if not entries:
        return 0
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    variables = list(model.variables) + list(model.optimizer.variables)
    initial = [variable.numpy() for variable in variables]
    for entry in entries:
        path = Path(backup_dir) / entry["file"]
        try:
            model.load_weights(path)
        except Exception as error:  # h5py and Keras raise many types
            for variable, value in zip(variables, initial):
                variable.assign(value)
            log(
                f"backup {path} is unreadable ({type(error).__name__}: "
                f"{str(error).splitlines()[0][:160] if str(error) else ''})"
            )
            if corrupt == "scratch":
                break
            continue
        log(f"resuming from {path} ({entry['epoch']} epochs done)")
        return entry["epoch"]
    log("no readable backup: training this stage from scratch")
    return 0


class LastEpochModel(keras.callbacks.Callback):
    """Saves the model to `path` (`.keras`) after every epoch, atomically."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        if finite_loss(logs):
            save_model(self.model, self.path)


class FaultPoints(keras.callbacks.Callback):
    """`repopt_tf.faults` points `batch:<stage>:<epoch>:<batch>`."""

    def __init__(self, stage):
        super().__init__()
        self.stage = stage
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        faults.point(f"batch:{self.stage}:{self._epoch}:{batch}")


class StepProgress(keras.callbacks.Callback):
    """A line every quarter of an epoch, for logs that are not a terminal
    (where Keras's `verbose=2` says nothing until an epoch ends):
    `hs: epoch 3/3, step 222/445 (49 %), loss 0.4123, 7 s` to `log`."""

    def __init__(self, stage, log):
        super().__init__()
        self.stage, self.log = stage, log

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._start = epoch, time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        steps = self.params.get("steps") or 0
        every = max(1, steps // 4)
        done = batch + 1
        if steps and done % every == 0 and done < steps:
            loss = (logs or {}).get("loss")
            self.log(
                f"{self.stage}: epoch {self._epoch + 1}/"
                f"{self.params.get('epochs')}, step {done}/{steps} "
                f"({100 * done // steps} %)"
                + (f", loss {float(loss):.4f}" if loss is not None else "")
                + f", {time.perf_counter() - self._start:.0f} s"
            )


def standard_callbacks(stage_dir, stage="", progress=None):
    """CSV log, TensorBoard, per-epoch backup and model, NaN guard, writing
    into a `repopt_tf.rundir.StageDir` (and `StepProgress` to the function
    `progress`, when given); `restore_backup` resumes a killed run from its
    last finished epoch."""
    stage_dir.path.mkdir(parents=True, exist_ok=True)
    return ([StepProgress(stage, progress)] if progress else []) + [
        EpochBackup(stage_dir.backup),
        keras.callbacks.CSVLogger(str(stage_dir.log), append=True),
        LastEpochModel(stage_dir.checkpoint),
        keras.callbacks.TensorBoard(str(stage_dir.tensorboard)),
        StopOnNaN(stage_dir),
        FaultPoints(stage),
    ]
