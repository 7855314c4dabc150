"""Paper's ImageNet recipe for RepOpt-VGG-B1 (Ding et al. §4.1; GPU).

120 epochs, global batch 256 (8 x 32), LR 0.1 cosine with 5 warm-up
epochs, wd 4e-5, label smoothing 0.1, Nesterov 0.9, 224x224 random-resized
crop + flip, scales from the authors' CIFAR-100 search (preset). The LR
scales linearly with the global batch (reference 256). Needs imagenet2012 tar
files in `--config.data.manual_dir`; run with `--strategy=mirrored`.
"""

from repopt_tf.configs import base


def get_config():
    config = base.get_config()
    config.mode = "target"
    config.model = "repopt_vgg_b1"
    config.scales = "repopt_vgg_b1"
    config.data.name = "imagenet2012"
    config.data.image_size = 224
    config.data.channels = 3
    config.data.augment = "inception"
    config.data.eval_split = "validation"
    config.data.download = True
    config.train.epochs = 120
    config.train.batch_size = 32  # per replica; 8 GPUs -> 256
    return base.paper_schedule(config)
