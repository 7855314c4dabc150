import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from repopt_tf.data import load_source
from repopt_tf.data import make_dataset
from repopt_tf.data import representative_images
from repopt_tf.data import steps_per_epoch


def test_fashion_mnist_batches_for_training_and_eval():
    source = load_source("fashion_mnist", "train", limit=300)
    assert (source.num_examples, source.num_classes, source.channels) == (
        300,
        10,
        1,
    )
    train = make_dataset(
        source, 32, 64, training=True, channels=3, seed=0, epochs=3
    )
    assert steps_per_epoch(source, 64) == 300 // 64  # remainder dropped
    batches = list(train)
    assert len(batches) == 3 * (300 // 64)
    assert all(images.shape[0] == 64 for images, _ in batches)
    images, labels = batches[0]
    assert images.shape == (64, 32, 32, 3) and images.dtype == tf.float32
    assert labels.shape == (64, 10)
    np.testing.assert_array_equal(tf.reduce_sum(labels, 1), 1.0)
    assert (
        0.0 <= float(tf.reduce_min(images))
        and float(tf.reduce_max(images)) <= 255.0
    )

    evaluation = make_dataset(source, 28, 128, training=False)
    first = [x.numpy() for x, _ in evaluation]
    second = [x.numpy() for x, _ in evaluation]
    assert [b.shape[0] for b in first] == [128, 128, 44]
    np.testing.assert_array_equal(first[0], second[0])
    raw = load_source("fashion_mnist", "train", limit=1).dataset
    np.testing.assert_array_equal(
        first[0][0, ..., 0], next(iter(raw))[0][..., 0]
    )


def test_representative_images_are_eval_preprocessed():
    source = load_source("fashion_mnist", "test", limit=50)
    images = representative_images(source, 32, 20, channels=1)
    assert images.shape == (20, 32, 32, 1)
    # 28 -> 32 is a centred zero pad.
    assert np.all(images[:, :2] == 0) and images[:, 2:30, 2:30].max() > 0


def test_tfds_names_work_offline_with_mock_data():
    with tfds.testing.mock_data(num_examples=24):
        source = load_source("cifar100", "train")
        assert (source.num_classes, source.channels) == (100, 3)
        images, labels = next(iter(make_dataset(source, 32, 8, training=True)))
    assert images.shape == (8, 32, 32, 3) and labels.shape == (8, 100)


def test_missing_tfds_data_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfds build cifar10"):
        load_source("cifar10", "train", data_dir=str(tmp_path), download=False)


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        folder = tmp_path / "train" / label
        folder.mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
            (folder / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    source = load_source(f"folder:{tmp_path}", "train")
    assert (source.num_examples, source.num_classes, source.channels) == (
        6,
        2,
        3,
    )
    images, labels = next(iter(make_dataset(source, 16, 6, training=False)))
    assert images.shape == (6, 16, 16, 3)
    assert labels.numpy().argmax(1).tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(FileNotFoundError, match="<root>/<split>/<class>"):
        load_source(f"folder:{tmp_path}", "test")


def test_bad_augmentation_name():
    source = load_source("fashion_mnist", "test", limit=4)
    with pytest.raises(ValueError, match="augment must be one of"):
        make_dataset(source, 28, 2, training=True, augment="mixup")


def test_batched_crop_flip_takes_one_window_per_image():
    from repopt_tf.data.pipeline import _random_crop_flip

    rng = np.random.default_rng(0)
    images = rng.random((16, 6, 6, 2)).astype(np.float32)
    out = _random_crop_flip(
        tf.constant(images), 6, tf.constant([0, 1], tf.int64), pad=2
    ).numpy()
    padded = np.pad(images, [(0, 0), (2, 2), (2, 2), (0, 0)])
    flipped_any = False
    for image, result in zip(padded, out):
        windows = [
            image[r : r + 6, c : c + 6] for r in range(5) for c in range(5)
        ]
        plain = any(np.array_equal(result, w) for w in windows)
        flipped = any(np.array_equal(result, w[:, ::-1]) for w in windows)
        assert plain or flipped
        flipped_any |= flipped and not plain
    assert flipped_any
    assert out.shape == images.shape


def test_holdout_split_keeps_the_last_images_apart():
    from repopt_tf.data import Source
    from repopt_tf.data import split_holdout

    images = np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1)
    source = Source(
        tf.data.Dataset.from_tensor_slices((images, np.arange(20))), 20, 20, 1
    )
    train, held = split_holdout(source, 0.1)
    assert (train.num_examples, held.num_examples) == (18, 2)
    assert [int(y) for _, y in held.dataset] == [18, 19]
    assert [int(y) for _, y in train.dataset] == list(range(18))
    with pytest.raises(
        ValueError, match=r"validation_fraction must be in \(0, 1\)"
    ):
        split_holdout(source, 1.5)


def _labels(dataset, count):
    return np.concatenate(
        [labels.numpy().argmax(-1) for _, labels in dataset.take(count)]
    )


def test_training_data_is_fixed_by_seed_and_epoch():
    """Epoch e's order and augmentation depend on (seed, e) only: a resumed
    run (first_epoch=e) sees the batches an uninterrupted one does."""
    source = load_source("fashion_mnist", "train", limit=256)
    steps = steps_per_epoch(source, 64)

    def batches(seed, first_epoch=0, epochs=3):
        data = make_dataset(
            source,
            28,
            64,
            training=True,
            seed=seed,
            first_epoch=first_epoch,
            epochs=epochs,
        )
        return [x.numpy() for x, _ in data]

    run, rerun = batches(0), batches(0)
    for a, b in zip(run, rerun):
        np.testing.assert_array_equal(a, b)
    resumed = batches(0, first_epoch=2, epochs=1)
    for a, b in zip(run[2 * steps :], resumed):
        np.testing.assert_array_equal(a, b)
    # Each epoch reshuffles and re-augments; another seed, another order.
    assert not np.array_equal(run[0], run[steps])
    assert not np.array_equal(run[0], batches(1, epochs=1)[0])
    data = make_dataset(source, 28, 64, training=True, seed=0, epochs=2)
    epoch0, epoch1 = _labels(data, steps), _labels(data.skip(steps), steps)
    assert sorted(epoch0) == sorted(epoch1) and list(epoch0) != list(epoch1)
