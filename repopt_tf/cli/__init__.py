"""Command-line tools: `repopt-train` (train.py) and `repopt-export`
(export_tflite.py), absl flags over `repopt_tf.training` and `repopt_tf.export`."""

import sys

from absl import app
from absl import flags


def run_main(main, module_name):
    """`app.run(main)`, with `--help` listing `module_name`'s flags (absl
    lists the flags of the script in `sys.argv[0]`, here a wrapper)."""
    for flag in flags.FLAGS.get_key_flags_for_module(module_name):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main)
