"""Command-line tools: `repopt-train` (train.py) and `repopt-export`
(export_tflite.py), absl flags over `repopt_tf.training` and `repopt_tf.export`."""

import difflib
import importlib.util
import sys

from absl import app
from absl import flags


def exit_unless_tensorflow(tool):
    """Ends the process with one line when TensorFlow, which every tool
    needs (tf.data, the TFLite converter), cannot be imported."""
    from repopt_tf.backend import MissingTensorFlowError
    from repopt_tf.backend import require_tensorflow

    try:
        require_tensorflow(tool)
    except MissingTensorFlowError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def define_lock_flag():
    """--wait_for_lock, for the tools that write into a run folder
    (`repopt_tf.run_lock`)."""
    flags.DEFINE_bool(
        "wait_for_lock",
        False,
        "When another run is writing to the same folder, wait for it to "
        "finish instead of stopping with its PID.",
    )


def run_main(main, module_name):
    """`app.run(main)`, with `--help` listing `module_name`'s flags and the
    shared ones it defined through this package (`define_config_flag`,
    `run_flags.define_run_flags`): absl lists the flags of the script in
    `sys.argv[0]`, here a wrapper."""
    for module in (module_name, __name__, f"{__name__}.run_flags"):
        for flag in flags.FLAGS.get_key_flags_for_module(module):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main)


def define_config_flag(name, default, help_text):
    """`ml_collections.config_flags.DEFINE_config_file`, locked, with the
    config path resolved (`repopt_tf.configs.resolve_config`: a bundled
    config by name, from any directory), every field listed in the help,
    and the `--NAME.field=value` overrides of `sys.argv` checked against the
    config first: a missing file or a field that does not exist, which
    ml_collections reports with a traceback, ends here in one line like any
    other bad flag (`config.train.epoch is not a field; did you mean
    config.train.epochs?`)."""
    from ml_collections import config_flags

    from repopt_tf.configs import config_fields
    from repopt_tf.configs import resolve_config

    try:
        value = _resolve_config_argv(name, resolve_config) or default
        _check_overrides(name, _load_config(value))
    except (FileNotFoundError, ValueError) as error:
        _fatal(str(error))
    fields = ", ".join(config_fields())
    try:
        config_flags.DEFINE_config_file(
            name,
            default,
            f"{help_text} Any field can be overridden with "
            f"--{name}.FIELD=VALUE; the fields: {fields}.",
            lock_config=True,
        )
    except (AttributeError, KeyError) as error:
        _fatal(f"--{name}.*: {error}")


def _fatal(message):
    print(f"FATAL Flags parsing error: {message}", file=sys.stderr)
    sys.exit(1)


def _resolve_config_argv(name, resolve):
    """Rewrites `--NAME=VALUE` / `--NAME VALUE` in `sys.argv` with
    `resolve(VALUE)`; returns the last resolved value (None: not given)."""
    argv, value = sys.argv, None
    for index, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            value = resolve(arg.partition("=")[2])
            argv[index] = f"--{name}={value}"
        elif arg == f"--{name}" and index + 1 < len(argv):
            value = argv[index + 1] = resolve(argv[index + 1])
    return value


def _load_config(value):
    """The ConfigDict of `PATH[:ARG]`, as ml_collections will build it."""
    path, _, arg = value.partition(":")
    spec = importlib.util.spec_from_file_location("_repopt_config", path)
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config(arg) if arg else module.get_config()
    except Exception as error:  # a user's config file may raise anything
        raise ValueError(f"--config={value}: cannot load it: {error}") from None


def _check_overrides(name, config):
    """Every `--NAME.a.b=...` of `sys.argv` names a field of `config`."""
    for arg in sys.argv[1:]:
        if not arg.startswith(f"--{name}."):
            continue
        path = arg[2:].partition("=")[0].split(".")
        node = config
        for depth, key in enumerate(path[1:], start=1):
            here = ".".join(path[:depth])
            if not hasattr(node, "keys"):
                raise ValueError(f"{here} is a value, not a group of fields")
            if key not in node:
                message = f"{here}.{key} is not a field"
                close = difflib.get_close_matches(key, list(node.keys()), 1)
                if close:
                    message += f"; did you mean {here}.{close[0]}?"
                raise ValueError(message + " (the fields: --help)")
            node = node[key]
