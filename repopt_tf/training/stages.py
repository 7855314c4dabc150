"""The stages of train.py, one class each, and the modes that run them.

A stage says what differs from plain training: the model's form (`kind`),
its epochs, what the optimizer gets (`prepare` returns a `Plan`: Grad
Mults, clipping, decay exclusions) and what happens after training
(`finish`: scales written, a fused twin evaluated, results recorded). The
generic fit is `repopt_tf.training.runner.Experiment.train`.

- `HyperSearch` (`hs`): the hyper-search CSLA model; writes `scales.npz`.
- `Target` (`target`): the plain model with RepOptSGD / RepOptAdamW from
  scales (`config.scales`, or the run's own `hs` stage in quickstart),
  after the Rule of Initialization unless it starts from
  `config.init_checkpoint` or `config.reinit` is False; a target `.keras`
  fine-tuned without scales keeps its own Grad Mults.
- `BaselineSGD` (`baseline_sgd`): the same plain model (or its RPG ring)
  with ordinary SGD.
- `BaselineRepVGG` (`baseline_repvgg`): the family's multi-branch training
  form (its `branch_kind`: RepVGG's, ...) with ordinary SGD, evaluated
  unfused and fused.
"""

import dataclasses

import numpy as np

from repopt_tf.atomic import save_model
from repopt_tf.evaluation import keras_accuracy
from repopt_tf.optimizers.grad_mult import saved_grad_mults
from repopt_tf.scales import load_scales
from repopt_tf.scales import save_scales
from repopt_tf.training.equivalent_kernel_l2 import add_equivalent_kernel_l2
from repopt_tf.training.log import log
from repopt_tf.training.recipe import grad_mult_summary
from repopt_tf.training.recipe import rpg_options


@dataclasses.dataclass
class Plan:
    """What a stage's optimizer gets beyond the recipe."""

    mults: dict | None = None
    clip_global_norm: float = 0.0
    decay_identity_scales: bool = True
    no_decay: tuple = ()


class Stage:
    """A stage of a run (module docstring); subclasses set `name`."""

    name = None

    def kind(self, experiment):
        """The `build_model` form this stage trains."""
        return "plain"

    def epochs(self, config):
        return config.train.epochs

    def prepare(self, experiment, model, weight_decay):
        """Readies a freshly built (maybe fine-tuning) model; its `Plan`."""
        return Plan()

    def finish(self, experiment, model, accuracy):
        """What follows training (also for a reused stage): its results."""
        return [experiment.result(self, self.kind(experiment), accuracy)]


class HyperSearch(Stage):
    name = "hs"

    def kind(self, experiment):
        return "hs"

    def epochs(self, config):
        return config.hs.epochs

    def prepare(self, experiment, model, weight_decay):
        hs = experiment.config.hs
        return Plan(
            clip_global_norm=hs.clip_global_norm,
            decay_identity_scales=hs.identity_weight_decay,
        )

    def finish(self, experiment, model, accuracy):
        config = experiment.config
        scales = experiment.family.extract_scales(model)
        path = save_scales(
            experiment.run_dir.stage(self.name).scales,
            scales,
            variant=config.model,
            dataset=config.data.name,
            epochs=config.hs.epochs,
            test_accuracy=accuracy,
        )
        log(f"hs: wrote {len(scales)} blocks of scales to {path}")
        return super().finish(experiment, model, accuracy)


class Target(Stage):
    name = "target"

    def __init__(self, scales_from_hs=False):
        self.scales_from_hs = scales_from_hs

    def scales(self, experiment):
        """The scales (None: reuse the init_checkpoint's Grad Mults;
        validated: one of the two is set)."""
        if self.scales_from_hs:
            return load_scales(experiment.run_dir.stage("hs").scales)
        scales = experiment.config.scales
        return load_scales(scales) if scales else None

    def prepare(self, experiment, model, weight_decay):
        scales = self.scales(experiment)
        if scales is None:
            mults = saved_mults(experiment.config, model)
        else:
            mults = target_mults(experiment, model, scales)
        if not experiment.config.grad_mults:
            log("target: Grad Mults off (--config.grad_mults=False)")
            return Plan()
        return Plan(mults=mults)

    def finish(self, experiment, model, accuracy):
        repopt = experiment.config.grad_mults
        return [experiment.result(self, "plain", accuracy, repopt=repopt)]


class BaselineSGD(Stage):
    name = "baseline_sgd"

    def finish(self, experiment, model, accuracy):
        rpg, form = experiment.config.rpg, "plain"
        if rpg_options(rpg):
            form = f"rpg{rpg.size or rpg.dof:g} ({rpg.mode}, {rpg.scheme})"
        return [experiment.result(self, form, accuracy)]


class BaselineRepVGG(Stage):
    name = "baseline_repvgg"

    def kind(self, experiment):
        return experiment.family.branch_kind

    def prepare(self, experiment, model, weight_decay):
        if not experiment.config.repvgg.custom_l2:
            return Plan()
        custom_l2 = add_equivalent_kernel_l2(model, weight_decay)
        log(
            f"{self.name}: RepVGG's custom L2 on the equivalent kernels of "
            f"{len(custom_l2) // 2} blocks (repvgg.custom_l2)"
        )
        return Plan(no_decay=custom_l2)

    def finish(self, experiment, model, accuracy):
        deploy = experiment.family.fuse(model, experiment.config.model)
        fused = keras_accuracy(deploy, experiment.data.test_data)
        save_model(deploy, experiment.run_dir.stage(self.name).fused_model)
        log(f"{self.name}: fused deploy model accuracy {fused:.4f}")
        return super().finish(experiment, model, accuracy) + [
            experiment.result(self, "deploy", fused, label=f"{self.name}_fused")
        ]


def stages_for(config):
    """The stages `config.mode` runs, in order."""
    if config.mode != "quickstart":
        single = (HyperSearch, Target, BaselineSGD, BaselineRepVGG)
        return [next(s for s in single if s.name == config.mode)()]
    stages = [HyperSearch(), Target(scales_from_hs=True)]
    if config.quickstart.baselines:
        stages += [BaselineSGD(), BaselineRepVGG()]
    return stages


def target_mults(experiment, model, scales):
    """Rule of Initialization (unless skipped) and the Grad Mults of
    `scales` for the configured optimizer (power 2 for SGD, 1 for AdamW on
    |scales|)."""
    config = experiment.config
    if config.init_checkpoint:
        log("target: no reinit (the weights come from init_checkpoint)")
    elif config.reinit:
        experiment.family.reinitialize(
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
    mults = experiment.family.grad_mults(model, scales, power=power)
    if config.grad_mults:
        for line in grad_mult_summary(mults):
            log(f"target: {line}")
    return mults


def saved_mults(config, model):
    """Fine-tuning a target `.keras` without scales: its own mults.

    Raises:
        ValueError: they belong to the other optimizer, or name variables
            the model lacks.
    """
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
    return mults
