"""Defaults every config starts from (Fashion-MNIST, small model, CPU).

Override any field on the command line, e.g.
`--config.train.epochs=10 --config.data.train_limit=5000`.
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.mode = "quickstart"  # quickstart | hs | target | baseline_sgd | baseline_repvgg
    config.model = "repopt_vgg_s"
    config.seed = 0  # initial weights, data order and augmentation
    # TF op determinism: one seed reruns to identical weights on the same
    # machine (slower; see docs/results.md).
    config.deterministic = False
    config.scales = ""  # target mode: preset name or scales .npz / .pth
    config.reinit = (
        True  # Rule of Initialization (skipped with init_checkpoint)
    )
    # Target mode: multiply gradients by the Grad Mults (False: the Table 4
    # ablation "Rule of Initialization only").
    config.grad_mults = True
    # Start from trained weights (fine-tuning, no reinit): the authors' .pth
    # of the stage's form, or a .keras / .weights.h5 of this library.
    config.init_checkpoint = ""
    config.init_ema = False  # .pth: its EMA weights
    config.init_skip_head = False  # keep a fresh classifier (other classes)
    config.use_identity_scales = (
        True  # diagonal gets the searched identity scale
    )
    # A finished or interrupted stage whose config changed: "refuse" (say
    # which fields differ) or "rerun" (train it again from scratch).
    config.stage_reuse = "refuse"
    # An unreadable backup of an interrupted stage: resume from the
    # "previous" good one (else from scratch), or start from "scratch".
    config.corrupt_backup = "previous"

    config.data = ml_collections.ConfigDict()
    config.data.name = "fashion_mnist"  # or a tfds name, or folder:/path
    config.data.image_size = 28
    config.data.channels = 0  # 0: the data set's own
    config.data.augment = "crop_flip"  # none | crop_flip | inception
    config.data.eval_split = "test"
    # Per-epoch validation in log.csv / TensorBoard: "holdout" (the last
    # validation_fraction of the training images, not trained on), "test"
    # (the eval split) or "none".
    config.data.validation = "holdout"
    config.data.validation_fraction = 0.05
    config.data.train_limit = 0  # 0: all images
    config.data.eval_limit = 0
    config.data.data_dir = ""
    config.data.manual_dir = ""
    config.data.download = False
    # folder: data: skip images that cannot be decoded (counted) instead of
    # stopping at the first, named.
    config.data.skip_unreadable = False

    config.train = ml_collections.ConfigDict()
    config.train.optimizer = "sgd"  # sgd | adamw
    config.train.epochs = 5
    config.train.batch_size = 128  # per replica
    config.train.reference_batch = (
        128  # lr = base_lr * global_batch / reference
    )
    config.train.base_lr = 0.1
    config.train.warmup_epochs = 0.0
    config.train.momentum = 0.9
    config.train.nesterov = True
    config.train.weight_decay = 4e-5
    config.train.scale_weight_decay = False
    config.train.label_smoothing = 0.0
    # Compute dtype: float32 | mixed_bfloat16 | mixed_float16 (variables,
    # Grad Mults and momentum stay float32; float16 adds loss scaling).
    config.train.precision = "float32"
    config.train.jit_compile = "auto"  # XLA: auto (on with a GPU) | on | off

    config.hs = ml_collections.ConfigDict()
    config.hs.epochs = 3
    config.hs.clip_global_norm = 5.0  # the official HS command clips at 5
    # Weight decay on RepOpt-VGG's identity scales, as the reference's
    # set_weight_decay (`*identity.weight`); kernels and the classifier
    # decay, BN, biases and the other scales do not. Scales of blocks without
    # a 1x1 branch are vectors and never decay (the reference's rule too).
    config.hs.identity_weight_decay = True

    # The RepVGG baseline (mode baseline_repvgg): custom_l2=True trains it
    # with RepVGG's own decay, L2 on each block's equivalent kernel
    # (repopt_tf.training.equivalent_kernel_l2) instead of on its kernels.
    config.repvgg = ml_collections.ConfigDict()
    config.repvgg.custom_l2 = False

    config.rpg = ml_collections.ConfigDict()
    config.rpg.dof = (
        0.0  # > 0: ring of dof x generated weights (baseline_sgd mode)
    )
    config.rpg.mode = (
        "signed_permutation"  # shared | permutation | signed_permutation
    )
    config.rpg.seed = 0
    # window (the paper's text) | authors (the authors' code), see
    # repopt_tf.models.rpg
    config.rpg.scheme = "window"
    config.rpg.size = 0  # > 0: ring entries (instead of dof; authors: any)

    config.quickstart = ml_collections.ConfigDict()
    config.quickstart.baselines = True
    return config


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
