"""Learning-rate schedule, optimizer and Grad Mult summary from a config.

Batch scaling is explicit: with global batch B (per-replica batch x
replicas) and the recipe's reference batch B0,

    lr = base_lr * B / B0                      (linear scaling rule)
    wd = weight_decay * (B / B0 if scale_weight_decay else 1)

The schedule is a linear warm-up from 0 over `warmup_epochs`, then cosine
decay to 0 at the end of training, stepped per iteration (as timm's
CosineLRScheduler in the paper's code).
"""

import keras
import numpy as np

from repopt_tf.backend import backend
from repopt_tf.backend import gpu_visible
from repopt_tf.cpu import native_bfloat16
from repopt_tf.models.blocks import split_block_layer
from repopt_tf.optimizers import RepOptAdamW
from repopt_tf.optimizers import RepOptSGD


def scaled_hyperparameters(train, global_batch):
    """Returns `(lr, weight_decay)` after batch scaling (see module doc)."""
    ratio = global_batch / train.reference_batch
    lr = train.base_lr * ratio
    weight_decay = train.weight_decay * (
        ratio if train.scale_weight_decay else 1
    )
    return lr, weight_decay


def learning_rate_schedule(peak_lr, epochs, warmup_epochs, steps_per_epoch):
    total = max(1, epochs * steps_per_epoch)
    warmup = min(int(warmup_epochs * steps_per_epoch), total - 1)
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(peak_lr, total)
    return keras.optimizers.schedules.CosineDecay(
        0.0, total - warmup, warmup_target=peak_lr, warmup_steps=warmup
    )


def build_optimizer(
    train,
    schedule,
    weight_decay,
    grad_mults=None,
    clip_global_norm=0.0,
    decay_identity_scales=True,
    no_decay=(),
):
    """RepOptSGD / RepOptAdamW; without mults they are the plain baselines.

    `train.optimizer` is "sgd" (PyTorch-semantics SGD, coupled L2) or
    "adamw"; `clip_global_norm > 0` clips by the (CSLA) global norm.
    Weight decay applies to kernels (ndim >= 2) and the RPG ring, as in the
    reference training scripts (`decay_vectors=False`; biases, BN and
    per-channel scales are not decayed), which include RepOpt-VGG's
    kernel-like identity scales unless `decay_identity_scales` is False,
    except those whose path contains one of `no_decay`.
    """
    optimizer = _optimizer(
        train, schedule, weight_decay, grad_mults, clip_global_norm or None
    )
    excluded = list(no_decay)
    if not decay_identity_scales:
        excluded.append("scale_identity")
    if excluded:
        optimizer.exclude_from_weight_decay(var_names=excluded)
    return optimizer


def _optimizer(train, schedule, weight_decay, grad_mults, clip):
    if train.optimizer == "sgd":
        return RepOptSGD(
            schedule,
            momentum=train.momentum,
            nesterov=train.nesterov,
            weight_decay=weight_decay or None,
            grad_mults=grad_mults,
            decay_vectors=False,
            global_clipnorm=clip,
        )
    if train.optimizer == "adamw":
        return RepOptAdamW(
            schedule,
            weight_decay=weight_decay,
            grad_mults=grad_mults,
            decay_vectors=False,
            global_clipnorm=clip,
        )
    raise ValueError(
        f"train.optimizer must be 'sgd' or 'adamw', got {train.optimizer!r}."
    )


PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
JIT_MODES = ("auto", "on", "off")


def compute_settings(train):
    """`(precision policy, jit_compile)` from `train.precision` and
    `train.jit_compile` ("auto": on the JAX backend always, XLA being its
    compiler; on TensorFlow when a GPU is visible, as on CPUs XLA is slower
    and fails under MirroredStrategy; on PyTorch off: torch.compile)."""
    if train.precision not in PRECISIONS:
        raise ValueError(
            f"train.precision must be one of {PRECISIONS}, got "
            f"{train.precision!r}."
        )
    if train.jit_compile not in JIT_MODES:
        raise ValueError(
            f"train.jit_compile must be one of {JIT_MODES}, got "
            f"{train.jit_compile!r}."
        )
    auto = backend() == "jax" or (backend() == "tensorflow" and gpu_visible())
    jit = train.jit_compile == "on" or (train.jit_compile == "auto" and auto)
    return train.precision, jit


def precision_tip(precision):
    """A line recommending `mixed_bfloat16` where it is faster: float32
    training on a CPU-only machine whose CPU has bfloat16 in hardware
    (docs/results.md: RepOpt-VGG-S 1.33x, RepOpt-VGG-A0 at 224x224 2.3x,
    within the drift tests/test_precision.py bounds); else None."""
    # Measured on TensorFlow's CPU kernels only.
    if precision != "float32" or backend() != "tensorflow" or gpu_visible():
        return None
    if not native_bfloat16():
        return None
    return (
        "tip: this CPU computes bfloat16 in hardware; "
        "--config.train.precision=mixed_bfloat16 trains RepOpt-VGG about "
        "1.3x faster here (variables, Grad Mults and momentum stay float32)"
    )


def grad_mult_summary(grad_mults):
    """One line per stage: count and min / mean / max of its Grad Mults."""
    stages = {}
    for path, mult in grad_mults.items():
        parts = split_block_layer(path.split("/")[0])
        stage = f"stage{parts[1]}" if parts else "other"
        stages.setdefault(stage, []).append(mult)
    lines = []
    for stage in sorted(stages):
        values = np.concatenate([m.reshape(-1) for m in stages[stage]])
        lines.append(
            f"{stage}: {len(stages[stage])} kernels, grad mult min "
            f"{values.min():.4f} mean {values.mean():.4f} max {values.max():.4f}"
        )
    return lines


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
