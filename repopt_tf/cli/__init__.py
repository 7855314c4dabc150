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


def define_config_flag(name, default, help_text):
    """`ml_collections.config_flags.DEFINE_config_file`, locked. It applies
    the `--NAME.field=value` overrides of `sys.argv` as it is defined; an
    override of a field that does not exist, which ml_collections reports
    with a traceback, ends here in one line like any other bad flag."""
    from ml_collections import config_flags

    try:
        config_flags.DEFINE_config_file(
            name, default, help_text, lock_config=True
        )
    except (AttributeError, KeyError) as error:
        field = str(error).strip("\"'")
        print(
            f"FATAL Flags parsing error: --{name}.*: {field!r} is not a "
            "config field (the fields are in the README's config table)",
            file=sys.stderr,
        )
        sys.exit(1)
