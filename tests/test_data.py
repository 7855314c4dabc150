import gzip

import numpy as np
import pytest

from repopt_tf.data import load_fashion_mnist


def test_embedded_fashion_mnist_loads():
    images, labels = load_fashion_mnist("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))
    assert np.bincount(labels).tolist() == [1000] * 10


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_reader_and_errors(tmp_path):
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([3, 7]))
    got, labels = load_fashion_mnist("test", data_dir=tmp_path)
    np.testing.assert_array_equal(got, images)
    assert labels.tolist() == [3, 7]
    with pytest.raises(
        FileNotFoundError, match="apt-get install dataset-fashion"
    ):
        load_fashion_mnist("train", data_dir=tmp_path)
    with pytest.raises(ValueError, match="split must be"):
        load_fashion_mnist("validation")
