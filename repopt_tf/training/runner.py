"""The training workflows behind train.py.

Modes (config.mode):

- `hs`: train the hyper-search CSLA model, write `scales.npz`.
- `target`: train RepOpt-VGG with RepOptSGD / RepOptAdamW from a scales file
  or preset (`config.scales`), after the Rule of Initialization unless the
  stage starts from `config.init_checkpoint` (fine-tuning) or `config.reinit`
  is False.
- `baseline_sgd`: the same plain model with ordinary SGD (no mults, no reinit).
- `baseline_repvgg`: the family's multi-branch training form (RepVGG, or
  RepGhostNet for RepOpt-GhostNet) with ordinary SGD; evaluated unfused and
  fused.
- `quickstart`: hs -> scales -> target -> both baselines, one table.

Each stage writes into its folder of the workdir (`repopt_tf.rundir`), and
`results.json` collects the test accuracies. The model's family
(`repopt_tf.models.registry`) answers every model-specific question: scales,
Rule of Initialization, Grad Mults, fusion.
"""

import dataclasses
import json
import math
import shutil
import sys

import keras
import numpy as np
import tensorflow as tf

from repopt_tf import faults
from repopt_tf.atomic import save_model
from repopt_tf.atomic import write_text
from repopt_tf.checkpoints import load_weights
from repopt_tf.checkpoints import read_keras_model
from repopt_tf.configs import base
from repopt_tf.data import align_classes
from repopt_tf.data import check_classes
from repopt_tf.data import load_source
from repopt_tf.data import make_dataset
from repopt_tf.data import split_holdout
from repopt_tf.data import steps_per_epoch
from repopt_tf.data import take
from repopt_tf.evaluation import keras_accuracy
from repopt_tf.models import build_model
from repopt_tf.models.registry import family_of
from repopt_tf.optimizers.grad_mult import saved_grad_mults
from repopt_tf.rundir import RunDir
from repopt_tf.scales import load_scales
from repopt_tf.scales import save_scales
from repopt_tf.training.callbacks import StopOnNaN
from repopt_tf.training.callbacks import TrainingDiverged
from repopt_tf.training.callbacks import restore_backup
from repopt_tf.training.callbacks import standard_callbacks
from repopt_tf.training.equivalent_kernel_l2 import add_equivalent_kernel_l2
from repopt_tf.training.recipe import build_optimizer
from repopt_tf.training.recipe import compute_settings
from repopt_tf.training.recipe import grad_mult_summary
from repopt_tf.training.recipe import learning_rate_schedule
from repopt_tf.training.recipe import precision_tip
from repopt_tf.training.recipe import scaled_hyperparameters
from repopt_tf.training.validation import flatten
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


def log(message):
    print(f"[repopt] {message}", flush=True)


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
        data = config.data
        common = dict(
            data_dir=data.data_dir or None,
            manual_dir=data.manual_dir or None,
            download=data.download,
        )
        if data.name.startswith("folder:"):
            common["skip_unreadable"] = data.skip_unreadable
        self.train_source = load_source(
            data.name, "train", limit=data.train_limit or None, **common
        )
        check_classes(self.train_source)
        self.test_source = align_classes(
            self.train_source,
            load_source(
                data.name,
                data.eval_split,
                limit=data.eval_limit or None,
                **common,
            ),
            data.eval_split,
        )
        validation_source = None
        if data.validation == "holdout":
            self.train_source, validation_source = split_holdout(
                self.train_source, data.validation_fraction
            )
        elif data.validation == "test":
            validation_source = self.test_source
        channels = data.channels or self.train_source.channels
        self.input_shape = (data.image_size, data.image_size, channels)
        self.num_classes = self.train_source.num_classes
        self.global_batch = (
            config.train.batch_size * strategy.num_replicas_in_sync
        )
        self.steps_per_epoch = steps_per_epoch(
            self.train_source, self.global_batch
        )
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{self.train_source.num_examples} training images are fewer "
                f"than one global batch of {self.global_batch}."
            )
        dataset_args = dict(
            image_size=data.image_size,
            batch_size=self.global_batch,
            channels=channels,
        )
        self.test_source = self._splits_evenly(self.test_source, "test")
        if validation_source is not None:
            validation_source = self._splits_evenly(
                validation_source, "validation"
            )
        self.dataset_args = dataset_args
        self.test_data = make_dataset(
            self.test_source, training=False, **dataset_args
        )
        self.validation_data = validation_source and make_dataset(
            validation_source, training=False, **dataset_args
        )
        if data.validation == "holdout":
            validation = (
                f"{validation_source.num_examples} validation "
                "(held out of train) / "
            )
        elif data.validation == "test":
            validation = f"validation on the {data.eval_split} split / "
        else:
            validation = "no validation / "
        log(
            f"data {data.name}: {self.train_source.num_examples} train / "
            f"{validation}{self.test_source.num_examples} {data.eval_split} "
            f"images, {self.num_classes} classes, input {self.input_shape}"
        )
        tip = precision_tip(config.train.precision)
        if tip:
            log(tip)

    def _splits_evenly(self, source, label):
        """`source`, trimmed to a multiple of the replica count when it is
        smaller than one global batch: Keras builds a distributed model from
        the replica mean of the first batch, which fails on an uneven split
        (keras/src/backend/tensorflow/trainer.py, `_maybe_symbolic_build`)."""
        replicas = self.strategy.num_replicas_in_sync
        count = source.num_examples
        if replicas == 1 or count >= self.global_batch or count % replicas == 0:
            return source
        kept = count - count % replicas
        if kept == 0:
            raise ValueError(
                f"{count} {label} images cannot be split over "
                f"{replicas} replicas."
            )
        log(
            f"{label}: {kept} of {count} images, a multiple of the "
            f"{replicas} replicas"
        )
        return take(source, kept)

    def run(self):
        mode = self.config.mode
        if mode == "hs":
            return [self.hyper_search()]
        if mode == "target":
            return [self.target(self._scales_from_config())]
        if mode == "baseline_sgd":
            return [self.baseline_sgd()]
        if mode == "baseline_repvgg":
            return self.baseline_repvgg()
        results = [self.hyper_search()]
        results.append(
            self.target(load_scales(self.run_dir.stage("hs").scales))
        )
        if self.config.quickstart.baselines:
            results.append(self.baseline_sgd())
            results += self.baseline_repvgg()
        return results

    def hyper_search(self):
        hs = self.config.hs
        model, accuracy = self._train(
            "hs", "hs", hs.epochs, clip_global_norm=hs.clip_global_norm
        )
        scales = self.family.extract_scales(model)
        path = save_scales(
            self.run_dir.stage("hs").scales,
            scales,
            variant=self.config.model,
            dataset=self.config.data.name,
            epochs=hs.epochs,
            test_accuracy=accuracy,
        )
        log(f"hs: wrote {len(scales)} blocks of scales to {path}")
        return self._result("hs", "hs", hs.epochs, accuracy)

    def target(self, scales):
        epochs = self.config.train.epochs
        _, accuracy = self._train("target", "plain", epochs, scales=scales)
        return self._result(
            "target", "plain", epochs, accuracy, repopt=self.config.grad_mults
        )

    def baseline_sgd(self):
        epochs = self.config.train.epochs
        _, accuracy = self._train("baseline_sgd", "plain", epochs)
        form = "plain"
        rpg = self.config.rpg
        if rpg_options(rpg):  # named like the model: <variant>_rpg<dof>
            form = f"rpg{rpg.size or rpg.dof:g} ({rpg.mode}, {rpg.scheme})"
        return self._result("baseline_sgd", form, epochs, accuracy)

    def baseline_repvgg(self):
        epochs = self.config.train.epochs
        kind = self.family.branch_kind  # repvgg, or repghost for GhostNet
        model, accuracy = self._train("baseline_repvgg", kind, epochs)
        deploy = self.family.fuse(model, self.config.model)
        fused = keras_accuracy(deploy, self.test_data)
        save_model(deploy, self.run_dir.stage("baseline_repvgg").fused_model)
        log(f"baseline_repvgg: fused deploy model accuracy {fused:.4f}")
        return [
            self._result("baseline_repvgg", kind, epochs, accuracy),
            self._result("baseline_repvgg_fused", "deploy", epochs, fused),
        ]

    def _scales_from_config(self):
        """The target's scales; None when it reuses the Grad Mults of its
        init_checkpoint (validated: one of the two is set)."""
        if not self.config.scales:
            return None
        return load_scales(self.config.scales)

    def _train(self, stage, kind, epochs, scales=None, clip_global_norm=0.0):
        config, train = self.config, self.config.train
        stage_dir = self.run_dir.stage(stage)
        workdir = stage_dir.path
        finished = self.run_dir.recorded().get(stage)
        images = self.train_source.num_examples
        stage_config = self._stage_config(stage)
        # Only a finished stage or a resumable one (backup/) is protected.
        protected = finished or stage_dir.backup.exists()
        differences = protected and _differences(
            stage_dir.saved_config(), stage_config
        )
        # Runs recorded before train_images was stored match any size.
        message = None
        if finished and (
            finished["model"],
            finished["epochs"],
            finished.get("train_images") or images,
        ) != (config.model, epochs, images):
            message = (
                f"{workdir} holds a finished {finished['model']} run of "
                f"{finished['epochs']} epochs on "
                f"{finished.get('train_images') or 'an unknown number of'} "
                f"training images, not {config.model} for {epochs} on "
                f"{images}"
            )
            advice = "; use a new --workdir"
        elif differences:
            state = "finished" if finished else "interrupted"
            message = (
                f"{workdir} holds a {state} run with another config ("
                + "; ".join(differences[:6])
                + (
                    f"; +{len(differences) - 6} more"
                    if len(differences) > 6
                    else ""
                )
                + ")"
            )
            advice = f": use a new --workdir, or delete {workdir} to retrain"
        if message:
            if config.stage_reuse == "refuse":
                raise ValueError(
                    f"{message}{advice} (or pass --config.stage_reuse=rerun)."
                )
            log(f"{stage}: {message}; retraining it (stage_reuse=rerun)")
            shutil.rmtree(workdir)
            self.run_dir.forget(stage)
            finished = None
        if finished and stage_dir.model.exists():
            log(
                f"{stage}: already trained in {workdir} with this config, "
                "reusing it (delete that folder to retrain)"
            )
            with self.strategy.scope():
                model = read_keras_model(stage_dir.model, compile=True)
            return model, finished["test_accuracy"]
        keras.utils.set_random_seed(config.seed)
        lr, weight_decay = scaled_hyperparameters(train, self.global_batch)
        form = kind
        if rpg_options(config.rpg):
            ring = config.rpg.size or f"{config.rpg.dof:g} of the 3x3 weights"
            form = f"RPG ring {ring}, {config.rpg.mode}, {config.rpg.scheme}"
        log(
            f"{stage}: {config.model} ({form}), {epochs} epochs x "
            f"{self.steps_per_epoch} steps, global batch {self.global_batch} "
            f"({train.batch_size} x {self.strategy.num_replicas_in_sync} "
            f"replicas), lr {train.base_lr} x {self.global_batch}/"
            f"{train.reference_batch} = {lr:g}, weight decay {weight_decay:g}"
        )
        schedule = learning_rate_schedule(
            lr, epochs, train.warmup_epochs, self.steps_per_epoch
        )
        precision, jit = compute_settings(train)
        log(
            f"{stage}: precision {precision}"
            + (
                " (variables, Grad Mults and momentum in float32)"
                if precision != "float32"
                else ""
            )
            + f", XLA {'on' if jit else 'off'}"
        )
        previous_policy = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(precision)
        try:
            return self._fit(
                stage,
                kind,
                epochs,
                scales,
                clip_global_norm,
                schedule,
                weight_decay,
                jit,
                stage_config,
            )
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)

    def _fit(
        self,
        stage,
        kind,
        epochs,
        scales,
        clip_global_norm,
        schedule,
        weight_decay,
        jit,
        stage_config,
    ):
        config, train = self.config, self.config.train
        stage_dir = self.run_dir.stage(stage)
        with self.strategy.scope():
            rpg = rpg_options(config.rpg)
            model = build_model(
                config.model,
                self.num_classes,
                self.input_shape,
                kind=kind,
                **rpg,
            )
            if config.init_checkpoint:
                report = load_weights(
                    model,
                    config.init_checkpoint,
                    ema=config.init_ema,
                    skip_head=config.init_skip_head,
                )
                log(f"{stage}: fine-tuning: {report}")
            mults = None
            if scales is not None:
                mults = self._prepare_target(model, scales)
            elif stage == "target":
                mults = self._saved_mults(model)
            custom_l2 = ()
            if stage == "baseline_repvgg" and config.repvgg.custom_l2:
                custom_l2 = add_equivalent_kernel_l2(model, weight_decay)
                log(
                    f"{stage}: RepVGG's custom L2 on the equivalent kernels "
                    f"of {len(custom_l2) // 2} blocks (repvgg.custom_l2)"
                )
            optimizer = build_optimizer(
                train,
                schedule,
                weight_decay,
                mults,
                clip_global_norm,
                decay_identity_scales=kind != "hs"
                or config.hs.identity_weight_decay,
                no_decay=custom_l2,
            )
            model.compile(
                optimizer=optimizer,
                loss=keras.losses.CategoricalCrossentropy(
                    from_logits=True, label_smoothing=train.label_smoothing
                ),
                metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                jit_compile=jit,
            )
            first_epoch = restore_backup(
                model,
                stage_dir.backup,
                config.corrupt_backup,
                log=lambda message: log(f"{stage}: {message}"),
            )
        train_data = make_dataset(
            self.train_source,
            training=True,
            augment=config.data.augment,
            seed=config.seed,
            first_epoch=first_epoch,
            epochs=epochs - first_epoch,
            **self.dataset_args,
        )
        # Keras's verbose=2 (no terminal) is silent until an epoch ends.
        callbacks = standard_callbacks(
            stage_dir, stage, progress=None if sys.stdout.isatty() else log
        )
        write_text(stage_dir.config, json.dumps(stage_config, indent=2))
        model.fit(
            train_data,
            epochs=epochs,
            initial_epoch=first_epoch,
            steps_per_epoch=self.steps_per_epoch,
            callbacks=callbacks,
            shuffle=False,  # make_dataset shuffles, seeded by epoch
            validation_data=self.validation_data,
            verbose=1 if sys.stdout.isatty() else 2,
        )
        nan_guard = next(c for c in callbacks if isinstance(c, StopOnNaN))
        if nan_guard.message:
            raise TrainingDiverged(nan_guard.message)
        accuracy = self._evaluate(model)
        save_model(model, stage_dir.model)
        log(f"{stage}: test accuracy {accuracy:.4f}")
        return model, accuracy

    def _saved_mults(self, model):
        """Fine-tuning a target `.keras` without scales: its own mults."""
        config = self.config
        name, mults = saved_grad_mults(config.init_checkpoint)
        wanted = {"sgd": "RepOptSGD", "adamw": "RepOptAdamW"}[
            config.train.optimizer
        ]
        if name != wanted:
            raise ValueError(
                f"{config.init_checkpoint} holds the Grad Mults of {name}, "
                f"not of {wanted} (another power of the scales): pass "
                "--config.scales to build them for this optimizer."
            )
        kernels = {v.path for v in model.trainable_variables}
        missing = sorted(set(mults) - kernels)
        if missing:
            raise ValueError(
                f"{config.init_checkpoint}'s Grad Mults name variables the "
                f"model lacks: {', '.join(missing[:3])}."
            )
        log(
            f"target: Grad Mults of {len(mults)} kernels from "
            f"{config.init_checkpoint} (no --config.scales)"
        )
        if not config.grad_mults:
            log("target: Grad Mults off (--config.grad_mults=False)")
            return None
        return mults

    def _prepare_target(self, model, scales):
        config = self.config
        if config.init_checkpoint:
            log("target: no reinit (the weights come from init_checkpoint)")
        elif config.reinit:
            self.family.reinitialize(
                model, scales, config.use_identity_scales, seed=config.seed
            )
        else:
            log(
                "target: reinit skipped (--config.reinit=False): training "
                "starts from Keras's default init, not from trained weights "
                "(for that, pass --config.init_checkpoint)"
            )
        power = 2
        if config.train.optimizer == "adamw":
            power = 1
            scales = [
                {k: None if v is None else np.abs(v) for k, v in block.items()}
                for block in scales
            ]
        mults = self.family.grad_mults(model, scales, power=power)
        if not config.grad_mults:
            log("target: Grad Mults off (--config.grad_mults=False)")
            return None
        for line in grad_mult_summary(mults):
            log(f"target: {line}")
        return mults

    def _stage_config(self, stage):
        """The resolved config fields that decide what `stage` trains, plus
        the number of training images (`{"dotted.key": value}`)."""
        ignored = {"mode", "quickstart", "stage_reuse", "corrupt_backup"} | {
            section
            for section, owner in _STAGE_SECTIONS.items()
            if owner != stage
        }
        flat = {
            key: value
            for key, value in flatten(self.config.to_dict())
            if key.split(".")[0] not in ignored
        }
        flat["data.train_images"] = self.train_source.num_examples
        return json.loads(json.dumps(flat))  # as it reads back from disk

    def _evaluate(self, model):
        metrics = model.evaluate(
            self.test_data,
            return_dict=True,
            verbose=1 if sys.stdout.isatty() else 2,
        )
        if not math.isfinite(float(metrics["loss"])):
            raise TrainingDiverged(
                f"The trained model's test loss is {metrics['loss']}: its "
                "outputs are not finite (NaN/inf weights or statistics); "
                "no accuracy is recorded and no model.keras written."
            )
        return float(metrics["accuracy"])

    def _result(self, stage, kind, epochs, accuracy, repopt=False):
        """Records a stage in the run's results and returns it."""
        optimizer = self.config.train.optimizer.upper()
        result = StageResult(
            stage,
            self.config.model,
            kind,
            f"RepOpt{optimizer}" if repopt else optimizer,
            epochs,
            accuracy,
            str(self.run_dir.stage(stage.removesuffix("_fused")).path),
            self.train_source.num_examples,
        )
        self.run_dir.record(stage, dataclasses.asdict(result))
        faults.point(f"stage:{stage}")
        # Kept until now: a kill before the record resumes, not retrains.
        shutil.rmtree(
            self.run_dir.stage(stage.removesuffix("_fused")).backup,
            ignore_errors=True,
        )
        return result


# Config fields that only one stage reads: a change elsewhere keeps it valid.
_STAGE_SECTIONS = {
    "hs": "hs",
    "scales": "target",
    "reinit": "target",
    "grad_mults": "target",
    "use_identity_scales": "target",
    "rpg": "baseline_sgd",
    "repvgg": "baseline_repvgg",
}


def _differences(saved, current):
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


def rpg_options(rpg):
    """`build_model`'s RPG arguments from `config.rpg` ({}: no ring)."""
    if not (rpg.dof or rpg.size):
        return {}
    return dict(
        rpg_dof=rpg.dof or None,
        rpg_mode=rpg.mode,
        rpg_seed=rpg.seed,
        rpg_scheme=rpg.scheme,
        rpg_size=rpg.size or None,
    )


def results_table(results):
    """Markdown table of stage results."""
    lines = [
        "| stage | model | form | optimizer | epochs | test accuracy |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r.stage} | {r.model} | {r.kind} | {r.optimizer} | "
            f"{r.epochs} | {r.test_accuracy:.4f} |"
        )
    return "\n".join(lines)
