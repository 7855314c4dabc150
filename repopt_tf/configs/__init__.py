"""The bundled train.py configs (ml_collections): `--config=PATH[:arg]`.

`CONFIG_DIR / "quickstart.py"` is the default; the repository's top-level
`configs/` files point here, so `--config=configs/fashion_mnist.py:hs` works
in a checkout and `repopt-train --config=$(python -c ...)` from a wheel.
"""

from pathlib import Path

CONFIG_DIR = Path(__file__).parent
