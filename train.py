"""Train RepOpt-VGG: hyper-search, target, baselines, or the whole quick start.

    python train.py                                   # quick start on Fashion-MNIST
    python train.py --config=configs/fashion_mnist.py:hs --workdir=runs/hs
    python train.py --config=configs/fashion_mnist.py:target \\
        --config.scales=runs/hs/hs/scales.npz --workdir=runs/target
    python train.py --config=configs/imagenet_b1.py --strategy=mirrored \\
        --config.data.manual_dir=/data/imagenet --workdir=runs/b1

Any config field can be overridden with --config.<field>=<value>. Each stage
records the config it trains with in WORKDIR/<stage>/config.json, and the
whole resolved config goes to WORKDIR/config.json when the run finishes.
Rerunning with the same WORKDIR resumes an interrupted stage from its last
finished epoch and reuses finished stages; a stage whose config changed is
refused with the fields that differ.
"""

from repopt_tf.cli.train import run  # the console script `repopt-train`

if __name__ == "__main__":
    run()
