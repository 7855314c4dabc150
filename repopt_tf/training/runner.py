"""The training workflows behind train.py: one `Experiment` runs the
stages of a config's mode (`repopt_tf.training.stages`).

Modes (config.mode): `hs`, `target`, `baseline_sgd`, `baseline_repvgg` (one
stage each), and `quickstart`: hs -> scales -> target -> both baselines,
one table. Each stage writes into its folder of the workdir
(`repopt_tf.rundir`), and `results.json` collects the test accuracies. The
model's family (`repopt_tf.models.registry`) answers every model-specific
question: scales, Rule of Initialization, Grad Mults, fusion.
"""

import dataclasses
import json
import math
import shutil

import keras
import tensorflow as tf

from repopt_tf import faults
from repopt_tf.atomic import save_model
from repopt_tf.atomic import write_text
from repopt_tf.checkpoints import load_weights
from repopt_tf.checkpoints import read_keras_model
from repopt_tf.markdown import table
from repopt_tf.models import build_model
from repopt_tf.models.registry import family_of
from repopt_tf.rundir import RunDir
from repopt_tf.training.callbacks import StopOnNaN
from repopt_tf.training.callbacks import TrainingDiverged
from repopt_tf.training.callbacks import restore_backup
from repopt_tf.training.callbacks import standard_callbacks
from repopt_tf.training.experiment_data import ExperimentData
from repopt_tf.training.log import log
from repopt_tf.training.log import verbosity
from repopt_tf.training.recipe import build_optimizer
from repopt_tf.training.recipe import compute_settings
from repopt_tf.training.recipe import learning_rate_schedule
from repopt_tf.training.recipe import precision_tip
from repopt_tf.training.recipe import rpg_options
from repopt_tf.training.recipe import scaled_hyperparameters
from repopt_tf.training.stage_reuse import finished_record
from repopt_tf.training.stage_reuse import stage_config
from repopt_tf.training.stages import stages_for
from repopt_tf.training.validation import validate_config


@dataclasses.dataclass
class StageResult:
    stage: str
    model: str
    kind: str
    optimizer: str
    epochs: int
    test_accuracy: float
    workdir: str
    train_images: int | None = None


class Experiment:
    """Loads the data once and runs the stages of one config."""

    def __init__(self, config, workdir, strategy):
        validate_config(config, workdir)
        if config.deterministic:
            # Deterministic kernels (and an error for ops that have none).
            tf.config.experimental.enable_op_determinism()
        self.config = config
        self.family = family_of(config.model)
        self.run_dir = RunDir(workdir)
        self.strategy = strategy
        self.data = ExperimentData(config, strategy)
        tip = precision_tip(config.train.precision)
        if tip:
            log(tip)

    @property
    def global_batch(self):
        return self.data.global_batch

    @property
    def steps_per_epoch(self):
        return self.data.steps_per_epoch

    def run(self):
        """Trains (or reuses) every stage of the mode; their results."""
        results = []
        for stage in stages_for(self.config):
            model, accuracy = self.train(stage)
            results += stage.finish(self, model, accuracy)
        return results

    def train(self, stage):
        """`(model, test accuracy)` of `stage`: reused when its folder holds
        it finished with this config, else trained (resuming a backup)."""
        config, images = self.config, self.data.train_source.num_examples
        epochs = stage.epochs(config)
        current = stage_config(config, stage.name, images)
        stage_dir = self.run_dir.stage(stage.name)
        finished = finished_record(
            self.run_dir, stage.name, config, epochs, images, current
        )
        if finished and stage_dir.model.exists():
            log(
                f"{stage.name}: already trained in {stage_dir.path} with this "
                "config, reusing it (delete that folder to retrain)"
            )
            with self.strategy.scope():
                model = read_keras_model(stage_dir.model, compile=True)
            return model, finished["test_accuracy"]
        keras.utils.set_random_seed(config.seed)
        precision, jit = compute_settings(config.train)
        previous_policy = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(precision)
        try:
            model = self._compiled_model(stage, epochs, jit)
            write_text(stage_dir.config, json.dumps(current, indent=2))
            return model, self._fit(stage, model, epochs)
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)

    def _compiled_model(self, stage, epochs, jit):
        """The stage's model, built (fine-tuning weights loaded), prepared
        and compiled with the recipe's optimizer, in the strategy's scope."""
        config, train = self.config, self.config.train
        kind = stage.kind(self)
        lr, weight_decay = scaled_hyperparameters(train, self.global_batch)
        self._announce(stage, kind, epochs, lr, weight_decay, jit)
        with self.strategy.scope():
            model = build_model(
                config.model,
                self.data.num_classes,
                self.data.input_shape,
                kind=kind,
                **rpg_options(config.rpg),
            )
            if config.init_checkpoint:
                report = load_weights(
                    model,
                    config.init_checkpoint,
                    ema=config.init_ema,
                    skip_head=config.init_skip_head,
                )
                log(f"{stage.name}: fine-tuning: {report}")
            plan = stage.prepare(self, model, weight_decay)
            schedule = learning_rate_schedule(
                lr, epochs, train.warmup_epochs, self.steps_per_epoch
            )
            model.compile(
                optimizer=build_optimizer(
                    train,
                    schedule,
                    weight_decay,
                    plan.mults,
                    plan.clip_global_norm,
                    decay_identity_scales=plan.decay_identity_scales,
                    no_decay=plan.no_decay,
                ),
                loss=keras.losses.CategoricalCrossentropy(
                    from_logits=True, label_smoothing=train.label_smoothing
                ),
                metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                jit_compile=jit,
            )
        return model

    def _announce(self, stage, kind, epochs, lr, weight_decay, jit):
        config, train = self.config, self.config.train
        form, rpg = kind, config.rpg
        if rpg_options(rpg):
            ring = rpg.size or f"{rpg.dof:g} of the 3x3 weights"
            form = f"RPG ring {ring}, {rpg.mode}, {rpg.scheme}"
        log(
            f"{stage.name}: {config.model} ({form}), {epochs} epochs x "
            f"{self.steps_per_epoch} steps, global batch {self.global_batch} "
            f"({train.batch_size} x {self.strategy.num_replicas_in_sync} "
            f"replicas), lr {train.base_lr} x {self.global_batch}/"
            f"{train.reference_batch} = {lr:g}, weight decay {weight_decay:g}"
        )
        precision = keras.mixed_precision.global_policy().name
        log(
            f"{stage.name}: precision {precision}"
            + (
                " (variables, Grad Mults and momentum in float32)"
                if precision != "float32"
                else ""
            )
            + f", XLA {'on' if jit else 'off'}"
        )

    def _fit(self, stage, model, epochs):
        """Fits from the last backup, evaluates, saves; the test accuracy.

        Raises:
            TrainingDiverged: a non-finite loss in training or evaluation.
        """
        config, stage_dir = self.config, self.run_dir.stage(stage.name)
        with self.strategy.scope():
            first_epoch = restore_backup(
                model,
                stage_dir.backup,
                config.corrupt_backup,
                log=lambda message: log(f"{stage.name}: {message}"),
            )
        # Keras's verbose=2 (no terminal) is silent until an epoch ends.
        callbacks = standard_callbacks(
            stage_dir, stage.name, progress=None if verbosity() == 1 else log
        )
        model.fit(
            self.data.train_dataset(
                config.data.augment, config.seed, first_epoch, epochs
            ),
            epochs=epochs,
            initial_epoch=first_epoch,
            steps_per_epoch=self.steps_per_epoch,
            callbacks=callbacks,
            shuffle=False,  # make_dataset shuffles, seeded by epoch
            validation_data=self.data.validation_data,
            verbose=verbosity(),
        )
        nan_guard = next(c for c in callbacks if isinstance(c, StopOnNaN))
        if nan_guard.message:
            raise TrainingDiverged(nan_guard.message)
        accuracy = self._evaluate(model)
        save_model(model, stage_dir.model)
        log(f"{stage.name}: test accuracy {accuracy:.4f}")
        return accuracy

    def _evaluate(self, model):
        metrics = model.evaluate(
            self.data.test_data, return_dict=True, verbose=verbosity()
        )
        if not math.isfinite(float(metrics["loss"])):
            raise TrainingDiverged(
                f"The trained model's test loss is {metrics['loss']}: its "
                "outputs are not finite (NaN/inf weights or statistics); "
                "no accuracy is recorded and no model.keras written."
            )
        return float(metrics["accuracy"])

    def result(self, stage, kind, accuracy, repopt=False, label=None):
        """Records a stage (under `label`, default its name) in the run's
        results and returns it."""
        optimizer = self.config.train.optimizer.upper()
        label = label or stage.name
        result = StageResult(
            label,
            self.config.model,
            kind,
            f"RepOpt{optimizer}" if repopt else optimizer,
            stage.epochs(self.config),
            accuracy,
            str(self.run_dir.stage(stage.name).path),
            self.data.train_source.num_examples,
        )
        self.run_dir.record(label, dataclasses.asdict(result))
        faults.point(f"stage:{label}")
        # Kept until now: a kill before the record resumes, not retrains.
        shutil.rmtree(self.run_dir.stage(stage.name).backup, ignore_errors=True)
        return result


def results_table(results):
    """Markdown table of stage results."""
    header = ["stage", "model", "form", "optimizer", "epochs", "test accuracy"]
    rows = [
        [
            r.stage,
            r.model,
            r.kind,
            r.optimizer,
            r.epochs,
            f"{r.test_accuracy:.4f}",
        ]
        for r in results
    ]
    return "\n".join(table(header, rows))
