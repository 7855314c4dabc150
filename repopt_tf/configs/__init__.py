"""The bundled train.py configs (ml_collections): `--config=PATH[:arg]`.

`CONFIG_DIR / "quickstart.py"` is the default; the repository's top-level
`configs/` files point here. `resolve_config` lets a bundled config be named
from any directory: `fashion_mnist.py:hs`, `fashion_mnist:hs` and the
README's `configs/fashion_mnist.py:hs` all mean the installed
`repopt_tf/configs/fashion_mnist.py` when no such file is where the command
runs.
"""

from pathlib import Path

CONFIG_DIR = Path(__file__).parent


def bundled_configs():
    """Names of the bundled config files (`quickstart.py`, ...)."""
    return sorted(
        path.name
        for path in CONFIG_DIR.glob("*.py")
        if path.name != "__init__.py"
    )


def resolve_config(value):
    """`PATH[:ARG]` with PATH an existing file: as given when it exists,
    else the bundled config of that file name (`.py` optional).

    Raises:
        FileNotFoundError: neither exists (the bundled names are listed).
    """
    path, colon, arg = str(value).partition(":")
    if Path(path).is_file():
        return str(value)
    name = Path(path).name
    name = name if name.endswith(".py") else f"{name}.py"
    if name in bundled_configs():
        return f"{CONFIG_DIR / name}{colon}{arg}"
    raise FileNotFoundError(
        f"--config={value}: no such config file here, and no bundled config "
        f"{name} (bundled: {', '.join(bundled_configs())})."
    )


def config_fields():
    """Every overridable field of the configs, dotted (`train.epochs`)."""
    from repopt_tf.configs import base

    def walk(node, prefix):
        for key, value in node.items():
            if hasattr(value, "items"):
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    return list(walk(base.get_config(), ""))
