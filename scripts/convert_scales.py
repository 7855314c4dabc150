"""Converts an official RepOpt `.pth` scales file to our `.npz` format.

    python scripts/convert_scales.py IN.pth OUT.npz --variant=repopt_vgg_b1

Used to build the presets in `repopt_tf/scales/presets/` from
`../shared/data/official_scales/` (MIT licence, DingXiaoH/RepOptimizers).
"""

import sys

from absl import app
from absl import flags

from repopt_tf.scales import load_scales
from repopt_tf.scales import save_scales

flags.DEFINE_string("variant", None, "Model variant the scales belong to.")
flags.DEFINE_string("dataset", "cifar100", "Data set of the hyper-search.")
flags.DEFINE_integer("epochs", 240, "Hyper-search epochs.")
flags.DEFINE_string("source", "DingXiaoH/RepOptimizers (MIT)", "Provenance.")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: convert_scales.py IN.pth OUT.npz --variant=NAME")
    try:
        blocks = load_scales(argv[1])
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    save_scales(
        argv[2],
        blocks,
        variant=FLAGS.variant,
        dataset=FLAGS.dataset,
        epochs=FLAGS.epochs,
        source=FLAGS.source,
    )
    print(
        f"{argv[2]}: {len(blocks)} blocks, "
        f"{sum(b['identity'] is not None for b in blocks)} with identity"
    )


if __name__ == "__main__":
    app.run(main)
