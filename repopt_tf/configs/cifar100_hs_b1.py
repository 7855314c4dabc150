"""Paper's hyper-search: RepOpt-VGG-B1 HS model on CIFAR-100 (GPU).

240 epochs, batch 256, LR 0.1 cosine with 5 warm-up epochs, wd 4e-5,
Nesterov 0.9, label smoothing 0.1, pad-4 crop + flip, clip 5 (official
README). Needs the tfds `cifar100` data (`--config.data.data_dir`).
"""

from repopt_tf.configs import base


def get_config():
    config = base.get_config()
    config.mode = "hs"
    config.model = "repopt_vgg_b1"
    config.data.name = "cifar100"
    config.data.image_size = 32
    config.data.channels = 3
    config.data.download = True
    config.hs.epochs = 240
    config.hs.clip_global_norm = 5.0
    config.train.batch_size = 256
    return base.paper_schedule(config)
