"""tf.data input pipelines for training and evaluation.

A *source* is one split of a data set: `Source(dataset, num_examples,
num_classes, channels)` where `dataset` yields `(image uint8 HxWxC, label)`.
Sources:

- `"fashion_mnist"`: the embedded set (Debian IDX files), no network.
- `"folder:/path/root"`: an image folder with one subfolder per class under
  `root/<split>/` (e.g. `root/train/cat/001.jpg`).
- any other name: a tensorflow-datasets name (`cifar100`, `imagenet2012`
  with `manual_dir`, ...), prepared in `data_dir`.

`make_dataset` turns a source into batches of `(float32 raw pixels 0..255 at
the model's input size, one-hot label)`; normalisation is inside the model.
Training batches are shuffled, augmented and drop the remainder. Augmentation
`"crop_flip"` is the paper's hyper-search recipe (pad 4, random crop, flip);
`"inception"` is random-resized-crop + flip for ImageNet-like data.

Training data is reproducible and resumable: epoch `e`'s order (a shuffle
seeded by `(seed, e)`) and augmentation (stateless random ops seeded by
`(seed, e, example index)`) depend on nothing else, so a run resumed at
epoch `e` (`first_epoch`) sees exactly the batches an uninterrupted one
does.
"""

import concurrent.futures
import dataclasses
import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf

from repopt_tf.data.fashion_mnist import load_fashion_mnist

AUGMENTATIONS = ("none", "crop_flip", "inception")
FASHION_MNIST_CLASSES = (
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)


@dataclasses.dataclass
class Source:
    dataset: tf.data.Dataset
    num_examples: int
    num_classes: int
    channels: int
    class_names: tuple = None  # label i is class_names[i]; None: unnamed


def load_source(
    name,
    split,
    data_dir=None,
    manual_dir=None,
    limit=None,
    download=True,
    skip_unreadable=False,
):
    """Loads one split of a data set as a `Source` (see module docstring).

    `download` lets tensorflow-datasets fetch and prepare a missing set.
    An image folder's files are all decoded once first: one that cannot be
    is named in a `ValueError`, or with `skip_unreadable` left out (and
    counted in the log).
    """
    if name == "fashion_mnist":
        images, labels = load_fashion_mnist(split, data_dir)
        if limit:
            images, labels = images[:limit], labels[:limit]
        dataset = tf.data.Dataset.from_tensor_slices(
            (images[..., None], labels)
        )
        return Source(dataset, len(labels), 10, 1, FASHION_MNIST_CLASSES)
    if name.startswith("folder:"):
        root = Path(name[len("folder:") :])
        source = folder_source(root / split, skip_unreadable)
    else:
        source = _tfds_source(name, split, data_dir, manual_dir, download)
    return take(source, limit) if limit else source


def take(source, count):
    """The first `count` examples of `source`, as a new `Source`."""
    return dataclasses.replace(
        source,
        dataset=source.dataset.take(count),
        num_examples=min(source.num_examples, count),
    )


def split_holdout(source, fraction):
    """`(train, validation)`: the last `fraction` of `source` held out."""
    if not 0 < fraction < 1:
        raise ValueError(
            f"validation_fraction must be in (0, 1), got {fraction}."
        )
    held = max(1, round(source.num_examples * fraction))
    kept = source.num_examples - held
    if kept < 1:
        raise ValueError(
            f"{source.num_examples} images cannot spare {held} for validation."
        )
    return (
        take(source, kept),
        dataclasses.replace(
            source, dataset=source.dataset.skip(kept), num_examples=held
        ),
    )


def make_dataset(
    source,
    image_size,
    batch_size,
    training,
    augment="crop_flip",
    channels=None,
    seed=None,
    shuffle_buffer=20000,
    crop_fraction=1.0,
    first_epoch=0,
    epochs=1,
):
    """Batches of `(float32 pixels (B, S, S, C), one-hot labels (B, K))`.

    Training batches are `epochs` epochs, from epoch `first_epoch` (module
    docstring; seed None is 0), back to back: for several, pass
    `steps_per_epoch(source, batch_size)` to `fit` so that it reads them in
    turn. Evaluation batches go once through the source, images fitted
    by `_fit`; `crop_fraction < 1` resizes the shorter side to
    `S / crop_fraction` first (ImageNet's 256 -> 224 centre crop is 0.875).

    Sources with a fixed image shape are batched first and preprocessed and
    augmented a whole batch at a time (per-image crop offsets and flips),
    which on small images costs a fraction of per-image `map` calls; other
    sources and `"inception"` go image by image.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(
            f"augment must be one of {AUGMENTATIONS}, got {augment!r}."
        )
    augment = augment if training else "none"
    prepare = _preprocessor(
        source, image_size, channels or source.channels, augment, crop_fraction
    )
    batch_first = (
        source.dataset.element_spec[0].shape.is_fully_defined()
        and augment != "inception"
    )

    def batches(dataset, drop_remainder):
        return _prepared_batches(
            dataset, prepare, batch_size, batch_first, drop_remainder
        )

    if not training:
        unseeded = source.dataset.map(
            lambda image, label: (image, label, tf.zeros(2, tf.int64))
        )
        return batches(unseeded, False).prefetch(tf.data.AUTOTUNE)
    seed = 0 if seed is None else int(seed)
    buffer = min(shuffle_buffer, source.num_examples)

    def epoch_batches(epoch):
        return batches(_seeded_epoch(source, seed, epoch, buffer), True)

    dataset = epoch_batches(first_epoch)
    for epoch in range(first_epoch + 1, first_epoch + epochs):
        dataset = dataset.concatenate(epoch_batches(epoch))
    return dataset.prefetch(tf.data.AUTOTUNE)


def _preprocessor(source, image_size, channels, augment, crop_fraction):
    """`prepare(image, label, random_seed) -> (float32 image, one-hot)` for an
    image or a batch of them (a batch shares `random_seed`)."""

    def prepare(image, label, random_seed):
        image = _to_channels(tf.cast(image, tf.float32), channels)
        if augment == "inception":
            flip_seed = tf.random.experimental.stateless_fold_in(random_seed, 1)
            image = tf.image.stateless_random_flip_left_right(
                _random_resized_crop(image, image_size, random_seed), flip_seed
            )
        else:
            image = _fit(image, image_size, crop_fraction)
            if augment == "crop_flip":
                image = _random_crop_flip(image, image_size, random_seed)
        rank = len(image.shape)
        image = tf.ensure_shape(
            image, (None,) * (rank - 3) + (image_size, image_size, channels)
        )
        return image, tf.one_hot(label, source.num_classes)

    return prepare


def _prepared_batches(
    dataset, prepare, batch_size, batch_first, drop_remainder
):
    """`dataset` of `(image, label, seed)` -> prepared batches; batched first
    (`batch_first`), a batch is augmented at once with its first example's
    seed."""
    if batch_first:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
        return dataset.map(
            lambda image, label, seeds: prepare(image, label, seeds[0]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size, drop_remainder=drop_remainder)


def _seeded_epoch(source, seed, epoch, buffer):
    """Epoch `epoch` of `source` as `(image, label, random seed)`: its order
    and each example's seed depend on `(seed, epoch)` alone (module doc)."""
    shuffled = source.dataset.shuffle(
        buffer, seed=seed * 1_000_003 + epoch, reshuffle_each_iteration=False
    )
    key = tf.constant([seed, epoch * 2**32], tf.int64)
    return shuffled.enumerate().map(
        lambda index, example: (*example, key + [0, index])
    )


def steps_per_epoch(source, batch_size):
    """Training batches per epoch of `make_dataset` (the remainder dropped)."""
    return source.num_examples // batch_size


def _random_crop_flip(images, size, seed, pad=4):
    """Pad by `pad`, random `size` crop and random horizontal flip, per
    image, from the stateless `seed` (shape `(2,)`).

    Works on one image `(S, S, C)` or a batch `(B, S, S, C)`.
    """
    single = len(images.shape) == 3
    if single:
        images = images[None]
    count = tf.shape(images)[0]
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    offsets = tf.random.stateless_uniform(
        (count, 2), seed, 0, 2 * pad + 1, dtype=tf.int32
    )
    window = tf.range(size)
    rows = offsets[:, :1] + window
    cols = offsets[:, 1:] + window
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    cropped = tf.gather(cropped, cols, axis=2, batch_dims=1)
    flip_seed = tf.random.experimental.stateless_fold_in(seed, 1)
    flip = tf.random.stateless_uniform((count, 1, 1, 1), flip_seed) < 0.5
    cropped = tf.where(flip, tf.reverse(cropped, axis=[2]), cropped)
    return cropped[0] if single else cropped


def representative_images(
    source, image_size, count, channels=None, crop_fraction=1.0
):
    """`count` evaluation-preprocessed images (float32) as one numpy array."""
    dataset = make_dataset(
        source,
        image_size,
        count,
        training=False,
        channels=channels,
        crop_fraction=crop_fraction,
    )
    return next(iter(dataset))[0].numpy()


def _to_channels(image, channels):
    have = image.shape[-1]
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return tf.image.grayscale_to_rgb(image)
    if have == 3 and channels == 1:
        return tf.image.rgb_to_grayscale(image)
    raise ValueError(f"Cannot convert {have}-channel images to {channels}.")


def _fit(image, size, crop_fraction=1.0):
    """Centre-crops `size` x `size`: with `crop_fraction == 1` small images
    are padded and the shorter side of large ones is resized to `size`; with
    `crop_fraction < 1` the shorter side is always resized to
    `size / crop_fraction` first.

    Works on one image or a batch.
    """
    height, width = tf.shape(image)[-3], tf.shape(image)[-2]
    short = tf.minimum(height, width)
    target = round(size / crop_fraction)

    def resize():
        scale = tf.cast(target, tf.float32) / tf.cast(short, tf.float32)
        new = tf.cast(
            tf.round(tf.cast(tf.stack([height, width]), tf.float32) * scale),
            tf.int32,
        )
        return tf.image.resize(image, new)

    if crop_fraction < 1:
        image = resize()
    else:
        image = tf.cond(short > size, resize, lambda: image)
    return tf.image.resize_with_crop_or_pad(image, size, size)


def _random_resized_crop(image, size, seed):
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        seed=seed,
        bounding_boxes=tf.zeros((1, 0, 4)),
        min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        use_image_if_no_bounding_boxes=True,
    )
    image = tf.slice(image, begin, crop_size)
    return tf.image.resize(image, (size, size))


def folder_source(directory, skip_unreadable=False, log=print):
    """An image folder split `directory/<class>/<image>` as a `Source`
    whose labels index its sorted class names (`class_names`)."""
    if not directory.is_dir():
        raise FileNotFoundError(
            f"Image folder {directory} not found. Expected "
            "<root>/<split>/<class>/<image> (e.g. root/train/cat/1.jpg)."
        )
    class_names = sorted(p.name for p in directory.iterdir() if p.is_dir())
    if not class_names:
        raise ValueError(f"{directory} has no class subfolders.")
    paths, labels = [], []
    for label, name in enumerate(class_names):
        for path in sorted((directory / name).iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(str(path))
                labels.append(label)
    if not paths:
        raise ValueError(f"{directory} holds no .jpg/.png/.bmp/.gif images.")
    channels, unreadable = decode_check(paths)
    if unreadable and not skip_unreadable:
        path, reason = unreadable[0]
        raise ValueError(
            f"{len(unreadable)} image(s) in {directory} cannot be decoded, "
            f"e.g. {path} ({reason}); remove them, or skip them with "
            "--config.data.skip_unreadable=True."
        )
    if unreadable:
        bad = {path for path, _ in unreadable}
        kept = [(p, lab) for p, lab in zip(paths, labels) if p not in bad]
        paths, labels = [p for p, _ in kept], [lab for _, lab in kept]
        log(f"[data] {directory}: skipped {len(bad)} unreadable image(s)")
        if not paths:
            raise ValueError(f"{directory}: no image can be decoded.")

    def decode(path, label):
        raw = tf.io.read_file(path)
        image = tf.io.decode_image(
            raw, channels=channels, expand_animations=False
        )
        return image, label

    dataset = tf.data.Dataset.from_tensor_slices(
        (paths, np.asarray(labels, np.int32))
    ).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return Source(
        dataset, len(paths), len(class_names), channels, tuple(class_names)
    )


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def decode_check(paths, workers=8):
    """`(channels of the first readable image, [(path, reason)] of those
    that cannot be decoded)`: every file decoded once, in threads."""

    def check(path):
        try:
            image = tf.io.decode_image(
                tf.io.read_file(path), expand_animations=False
            )
        except (tf.errors.OpError, ValueError) as error:
            return None, str(error).splitlines()[0].split(" [Op:")[0]
        if min(image.shape[:2]) < 1:
            return None, f"empty image {image.shape}"
        return int(image.shape[-1]), None

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(check, paths))
    unreadable = [(p, why) for p, (_, why) in zip(paths, results) if why]
    channels = next((c for c, _ in results if c), 3)
    return channels, unreadable


def align_classes(train, other, split):
    """`other` (an evaluation split) with its labels mapped to `train`'s
    classes by name, when both are named; unnamed splits are taken as
    they are.

    Raises:
        ValueError: `other` has classes that `train` lacks (or, unnamed,
            another number of classes).
    """
    if train.class_names is None or other.class_names is None:
        if other.num_classes != train.num_classes:
            raise ValueError(
                f"the {split} split has {other.num_classes} classes, the "
                f"train split {train.num_classes}."
            )
        return other
    if other.class_names == train.class_names:
        return other
    lacking = [n for n in other.class_names if n not in train.class_names]
    if lacking:
        raise ValueError(
            f"the {split} split has classes the train split lacks: "
            f"{', '.join(lacking[:5])} (train: "
            f"{', '.join(train.class_names[:10])}); a model cannot score "
            "classes it never saw."
        )
    mapping = tf.constant(
        [train.class_names.index(n) for n in other.class_names], tf.int32
    )
    dataset = other.dataset.map(
        lambda image, label: (image, tf.gather(mapping, label))
    )
    return dataclasses.replace(
        other,
        dataset=dataset,
        num_classes=train.num_classes,
        class_names=train.class_names,
    )


def check_classes(train):
    """Raises ValueError unless the train split has at least 2 classes."""
    if train.num_classes < 2:
        names = ", ".join(train.class_names or ()) or "one"
        raise ValueError(
            f"the train split has 1 class ({names}): a classifier needs at "
            "least 2."
        )


def _tfds_source(name, split, data_dir, manual_dir, download):
    import tensorflow_datasets as tfds

    kwargs = {}
    if manual_dir:
        kwargs["download_and_prepare_kwargs"] = {
            "download_config": tfds.download.DownloadConfig(
                manual_dir=manual_dir
            )
        }
    root = Path(data_dir or tfds.core.constants.DATA_DIR).expanduser()
    existed = (root / name).exists()
    try:
        dataset, info = tfds.load(
            name,
            split=split,
            data_dir=data_dir,
            as_supervised=True,
            with_info=True,
            download=download,
            **kwargs,
        )
    except Exception as error:  # tfds raises many types; all mean "not here"
        if not existed:  # leave no empty data set folder behind
            shutil.rmtree(root / name, ignore_errors=True)
        raise FileNotFoundError(
            f"Could not load tensorflow-datasets '{name}' split '{split}' "
            f"({type(error).__name__}: {str(error).splitlines()[0][:200]}). "
            "On a machine with internet run `tfds build "
            f"{name}` and copy its data_dir here (pass --config.data.data_dir); "
            "for imagenet2012 put the tar files in a folder and pass "
            "--config.data.manual_dir. Offline, use the embedded "
            "'fashion_mnist' or an image folder 'folder:/path'."
        ) from error
    features = info.features
    num_classes = features["label"].num_classes
    class_names = tuple(features["label"].names)
    channels = features["image"].shape[-1] or 3
    try:
        num_examples = info.splits[split].num_examples
    except KeyError:  # e.g. under tfds.testing.mock_data
        num_examples = int(dataset.cardinality())
        if num_examples < 0:
            num_examples = int(dataset.reduce(0, lambda count, _: count + 1))
    return Source(dataset, num_examples, num_classes, channels, class_names)
