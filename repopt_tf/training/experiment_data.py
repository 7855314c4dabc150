"""The data of one train.py run: loaded and checked once, shared by its
stages (`repopt_tf.training.runner.Experiment`)."""

from repopt_tf.data import align_classes
from repopt_tf.data import check_classes
from repopt_tf.data import load_source
from repopt_tf.data import make_dataset
from repopt_tf.data import split_holdout
from repopt_tf.data import steps_per_epoch
from repopt_tf.data import take
from repopt_tf.training.log import log


class ExperimentData:
    """Train, validation and test data of `config.data` for a strategy.

    Test classes are mapped onto train's by name (`align_classes`), a split
    smaller than one global batch is trimmed to a multiple of the replicas,
    and one line says what was loaded.

    Raises:
        ValueError: fewer than two classes, test classes train lacks, or
            fewer training images than one global batch.
    """

    def __init__(self, config, strategy):
        data = config.data
        self.replicas = strategy.num_replicas_in_sync
        self.global_batch = config.train.batch_size * self.replicas
        train, validation, test = _load_splits(data)
        self.train_source = train
        self.test_source = self._splits_evenly(test, "test")
        channels = data.channels or train.channels
        self.input_shape = (data.image_size, data.image_size, channels)
        self.num_classes = train.num_classes
        self.steps_per_epoch = steps_per_epoch(train, self.global_batch)
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{train.num_examples} training images are fewer than one "
                f"global batch of {self.global_batch}."
            )
        self.dataset_args = dict(
            image_size=data.image_size,
            batch_size=self.global_batch,
            channels=channels,
        )
        self.test_data = make_dataset(
            self.test_source, training=False, **self.dataset_args
        )
        self.validation_data = None
        if validation is not None:
            validation = self._splits_evenly(validation, "validation")
            self.validation_data = make_dataset(
                validation, training=False, **self.dataset_args
            )
        log(self._summary(data, validation))

    def train_dataset(self, augment, seed, first_epoch, epochs):
        """The training batches from `first_epoch` on (seeded by epoch)."""
        return make_dataset(
            self.train_source,
            training=True,
            augment=augment,
            seed=seed,
            first_epoch=first_epoch,
            epochs=epochs - first_epoch,
            **self.dataset_args,
        )

    def _summary(self, data, validation):
        if data.validation == "holdout":
            held = (
                f"{validation.num_examples} validation (held out of train) / "
            )
        elif data.validation == "test":
            held = f"validation on the {data.eval_split} split / "
        else:
            held = "no validation / "
        return (
            f"data {data.name}: {self.train_source.num_examples} train / "
            f"{held}{self.test_source.num_examples} {data.eval_split} "
            f"images, {self.num_classes} classes, input {self.input_shape}"
        )

    def _splits_evenly(self, source, label):
        """`source`, trimmed to a multiple of the replica count when it is
        smaller than one global batch: Keras builds a distributed model from
        the replica mean of the first batch, which fails on an uneven split
        (keras/src/backend/tensorflow/trainer.py, `_maybe_symbolic_build`)."""
        replicas, count = self.replicas, source.num_examples
        if replicas == 1 or count >= self.global_batch or count % replicas == 0:
            return source
        kept = count - count % replicas
        if kept == 0:
            raise ValueError(
                f"{count} {label} images cannot be split over "
                f"{replicas} replicas."
            )
        log(
            f"{label}: {kept} of {count} images, a multiple of the "
            f"{replicas} replicas"
        )
        return take(source, kept)


def _load_splits(data):
    """`(train, validation or None, test)` sources of `config.data`: test
    classes aligned to train's by name, the validation split held out of
    train or the test split itself."""
    common = dict(
        data_dir=data.data_dir or None,
        manual_dir=data.manual_dir or None,
        download=data.download,
    )
    if data.name.startswith("folder:"):
        common["skip_unreadable"] = data.skip_unreadable
    train = load_source(
        data.name, "train", limit=data.train_limit or None, **common
    )
    check_classes(train)
    test = load_source(
        data.name, data.eval_split, limit=data.eval_limit or None, **common
    )
    test = align_classes(train, test, data.eval_split)
    validation = None
    if data.validation == "holdout":
        train, validation = split_holdout(train, data.validation_fraction)
    elif data.validation == "test":
        validation = test
    return train, validation, test
