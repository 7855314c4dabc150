"""Fashion-MNIST from the IDX files of Debian's `dataset-fashion-mnist`.

Shape contract: `load_fashion_mnist(split)` returns `(images, labels)` with
images `uint8 (N, 28, 28)` and labels `int32 (N,)`; N is 60,000 for "train"
and 10,000 for "test".
"""

import gzip
import os
from pathlib import Path

import numpy as np

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def _read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file.")
    ndim = data[3]
    shape = tuple(
        int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}.")
    return array.reshape(shape)


def load_fashion_mnist(split="train", data_dir=None):
    """Reads one split. `data_dir` defaults to $FASHION_MNIST_DIR or Debian's."""
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    data_dir = Path(
        data_dir or os.environ.get("FASHION_MNIST_DIR", DEFAULT_DIR)
    )
    paths = [data_dir / name for name in _FILES[split]]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files not found: {missing}. Install them with "
            "`apt-get install dataset-fashion-mnist` (as root), or point "
            "FASHION_MNIST_DIR / data_dir at a folder holding the four IDX "
            ".gz files."
        )
    images, labels = (_read_idx(p) for p in paths)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{split}: {images.shape[0]} images but {labels.shape[0]} labels."
        )
    return images, labels.astype(np.int32)
