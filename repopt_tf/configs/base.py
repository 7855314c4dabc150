"""Defaults every config starts from (Fashion-MNIST, small model, CPU).

Override any field on the command line, e.g.
`--config.train.epochs=10 --config.data.train_limit=5000`.
docs/training.md has a table of every field.
"""

import ml_collections


def get_config():
    """The default config: run fields, then one section per concern."""
    config = ml_collections.ConfigDict()
    config.mode = "quickstart"  # quickstart | hs | target | baseline_sgd | baseline_repvgg
    config.model = "repopt_vgg_s"
    config.seed = 0  # initial weights, data order and augmentation
    # TF op determinism: one seed reruns to identical weights on the same
    # machine (slower; see docs/results.md).
    config.deterministic = False
    config.scales = ""  # target mode: preset name or scales .npz / .pth
    config.reinit = True  # Rule of Initialization (not with init_checkpoint)
    # Target mode: multiply gradients by the Grad Mults (False: the Table 4
    # ablation "Rule of Initialization only").
    config.grad_mults = True
    # Start from trained weights (fine-tuning, no reinit): the authors' .pth
    # of the stage's form, or a .keras / .weights.h5 of this library.
    config.init_checkpoint = ""
    config.init_ema = False  # .pth: its EMA weights
    config.init_skip_head = False  # keep a fresh classifier (other classes)
    config.use_identity_scales = True  # diagonal gets the searched scale
    # A finished or interrupted stage whose config changed: "refuse" (say
    # which fields differ) or "rerun" (train it again from scratch).
    config.stage_reuse = "refuse"
    # An unreadable backup of an interrupted stage: resume from the
    # "previous" good one (else from scratch), or start from "scratch".
    config.corrupt_backup = "previous"
    config.data = _data()
    config.train = _train()
    config.hs = _hyper_search()
    config.repvgg = _repvgg_baseline()
    config.rpg = _rpg()
    config.quickstart = ml_collections.ConfigDict({"baselines": True})
    return config


def _data():
    data = ml_collections.ConfigDict()
    data.name = "fashion_mnist"  # or a tfds name, or folder:/path
    data.image_size = 28
    data.channels = 0  # 0: the data set's own
    data.augment = "crop_flip"  # none | crop_flip | inception
    data.eval_split = "test"
    # Per-epoch validation in log.csv / TensorBoard: "holdout" (the last
    # validation_fraction of the training images, not trained on), "test"
    # (the eval split) or "none".
    data.validation = "holdout"
    data.validation_fraction = 0.05
    data.train_limit = 0  # 0: all images
    data.eval_limit = 0
    data.data_dir = ""
    data.manual_dir = ""
    data.download = False
    # folder: data: skip images that cannot be decoded (counted) instead of
    # stopping at the first, named.
    data.skip_unreadable = False
    return data


def _train():
    train = ml_collections.ConfigDict()
    train.optimizer = "sgd"  # sgd | adamw
    train.epochs = 5
    train.batch_size = 128  # per replica
    train.reference_batch = 128  # lr = base_lr * global_batch / reference
    train.base_lr = 0.1
    train.warmup_epochs = 0.0
    train.momentum = 0.9
    train.nesterov = True
    train.weight_decay = 4e-5
    train.scale_weight_decay = False
    train.label_smoothing = 0.0
    # Compute dtype: float32 | mixed_bfloat16 | mixed_float16 (variables,
    # Grad Mults and momentum stay float32; float16 adds loss scaling).
    train.precision = "float32"
    train.jit_compile = "auto"  # XLA: auto (on with a GPU) | on | off
    return train


def _hyper_search():
    hs = ml_collections.ConfigDict()
    hs.epochs = 3
    hs.clip_global_norm = 5.0  # the official HS command clips at 5
    # Weight decay on RepOpt-VGG's identity scales, as the reference's
    # set_weight_decay (`*identity.weight`); kernels and the classifier
    # decay, BN, biases and the other scales do not. Scales of blocks without
    # a 1x1 branch are vectors and never decay (the reference's rule too).
    hs.identity_weight_decay = True
    return hs


def _repvgg_baseline():
    """Mode baseline_repvgg: custom_l2=True trains RepVGG with its own decay,
    L2 on each block's equivalent kernel
    (repopt_tf.training.equivalent_kernel_l2) instead of on its kernels."""
    return ml_collections.ConfigDict({"custom_l2": False})


def _rpg():
    """Recurrent Parameter Generators for mode baseline_sgd (docs/rpg.md)."""
    rpg = ml_collections.ConfigDict()
    rpg.dof = 0.0  # > 0: ring of dof x generated weights
    rpg.mode = "signed_permutation"  # shared | permutation | signed_permutation
    rpg.seed = 0
    # window (the paper's text) | authors (the authors' code), see
    # repopt_tf.models.rpg
    rpg.scheme = "window"
    rpg.size = 0  # > 0: ring entries (instead of dof; authors: any)
    return rpg


def paper_schedule(config):
    """The paper's recipe (Ding et al. §4.1): reference batch 256, LR 0.1
    cosine with 5 warm-up epochs, wd 4e-5, label smoothing 0.1, Nesterov 0.9."""
    config.train.reference_batch = 256
    config.train.base_lr = 0.1
    config.train.warmup_epochs = 5.0
    config.train.weight_decay = 4e-5
    config.train.label_smoothing = 0.1
    config.train.momentum = 0.9
    config.train.nesterov = True
    return config
