"""Train RepOpt-VGG: `python train.py --help`, or the console script
`repopt-train`. Usage and flags: repopt_tf/cli/train.py and the README."""

from repopt_tf.cli.train import run

if __name__ == "__main__":
    run()
