"""Callbacks every training run gets: logs, checkpoints, backup, NaN guard."""

import sys

import keras


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf."""


class StopOnNaN(keras.callbacks.TerminateOnNaN):
    """TerminateOnNaN that remembers where it fired and says what to try."""

    def __init__(self):
        super().__init__()
        self.message = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        super().on_batch_end(batch, logs)
        if self.model.stop_training and self.message is None:
            self.message = (
                f"Training diverged: the loss became {logs.get('loss')} at "
                f"epoch {self._epoch + 1}, batch {batch + 1}. Try a lower "
                "learning rate (--config.train.base_lr), more warm-up "
                "epochs (--config.train.warmup_epochs), or check the inputs."
            )
            print(f"\n{self.message}", file=sys.stderr)


def standard_callbacks(stage_dir):
    """TensorBoard, CSV log, last-epoch checkpoint, backup and NaN guard,
    writing into a `repopt_tf.rundir.StageDir`.

    `BackupAndRestore` keeps the backup folder until training ends, so a run
    killed at any point resumes from its last finished epoch when rerun with
    the same workdir.
    """
    stage_dir.path.mkdir(parents=True, exist_ok=True)
    return [
        keras.callbacks.BackupAndRestore(str(stage_dir.backup)),
        keras.callbacks.CSVLogger(str(stage_dir.log), append=True),
        keras.callbacks.ModelCheckpoint(str(stage_dir.checkpoint)),
        keras.callbacks.TensorBoard(str(stage_dir.tensorboard)),
        StopOnNaN(),
    ]
