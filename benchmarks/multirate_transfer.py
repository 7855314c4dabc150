"""Multirate fine-tuning vs full and head-only fine-tuning, side by side.

Pretrains a RepOpt-VGG variant on Fashion-MNIST classes 0-4, then fine-tunes
copies (same fresh head) on classes 5-9 with: every layer (SGD), the head
only (backbone frozen), and multirate with fast = head for each k and with
linear drift on and off. Prints wall-clock per epoch (median over epochs),
its ratio to full fine-tuning and test accuracy on classes 5-9, and writes
WORKDIR/multirate_transfer.md.

    python -m benchmarks.multirate_transfer --workdir=runs/multirate
"""

import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from repopt_tf.cli.flag_checks import check_positive_integers  # noqa: E402
from repopt_tf.cli.flag_checks import require_models  # noqa: E402
from repopt_tf.data import Source  # noqa: E402
from repopt_tf.data import load_fashion_mnist  # noqa: E402
from repopt_tf.data import make_dataset  # noqa: E402
from repopt_tf.data import steps_per_epoch  # noqa: E402
from repopt_tf.evaluation import keras_accuracy  # noqa: E402
from repopt_tf.markdown import table  # noqa: E402
from repopt_tf.markdown import table_row  # noqa: E402
from repopt_tf.models import build_model  # noqa: E402
from repopt_tf.multirate import MultirateModel  # noqa: E402
from repopt_tf.multirate import MultirateOptimizer  # noqa: E402

flags.DEFINE_string("workdir", "runs/multirate", "Output folder.")
flags.DEFINE_string("model", "repopt_vgg_s", "Variant.")
flags.DEFINE_integer(
    "pretrain_epochs", 3, "Epochs on classes 0-4.", lower_bound=1
)
flags.DEFINE_integer(
    "epochs", 3, "Fine-tuning epochs on classes 5-9.", lower_bound=1
)
flags.DEFINE_integer(
    "train_limit", 10000, "Images per phase (0: all).", lower_bound=0
)
flags.DEFINE_list("ks", ["5", "10"], "Multirate k values.")
flags.DEFINE_float(
    "lr", 0.01, "Fine-tuning LR; multirate's fast step h/k.", lower_bound=0
)
flags.DEFINE_integer("batch", 128, "Batch size.", lower_bound=1)
check_positive_integers("ks")
FLAGS = flags.FLAGS
LOSS = keras.losses.CategoricalCrossentropy(from_logits=True)
HEAD = "classifier"


def class_source(split, classes, limit=0):
    images, labels = load_fashion_mnist(split)
    keep = np.isin(labels, classes)
    images, labels = images[keep], labels[keep] - min(classes)
    if limit:
        images, labels = images[:limit], labels[:limit]
    dataset = tf.data.Dataset.from_tensor_slices((images[..., None], labels))
    return Source(dataset, len(labels), len(classes), 1)


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)

    def on_train_begin(self, logs=None):
        self.seconds = []


def phase_data():
    """Training batches and steps per phase (pre: classes 0-4, fine: 5-9),
    and the test batches of classes 5-9."""
    sources = {
        phase: class_source("train", classes, FLAGS.train_limit)
        for phase, classes in (("pre", range(5)), ("fine", range(5, 10)))
    }
    data = {
        phase: make_dataset(source, 28, FLAGS.batch, training=True, seed=0)
        for phase, source in sources.items()
    }
    steps = {
        phase: steps_per_epoch(source, FLAGS.batch)
        for phase, source in sources.items()
    }
    test = make_dataset(
        class_source("test", range(5, 10)), 28, 256, training=False
    )
    return data, steps, test


def pretrained_starts(data, steps):
    """`start(model_class)`: a copy of the model pretrained on classes 0-4,
    with the same fresh head each time."""
    shape = (28, 28, 1)
    keras.utils.set_random_seed(0)
    pretrained = build_model(FLAGS.model, 5, shape)
    pretrained.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
        loss=LOSS,
    )
    pretrained.fit(
        data["pre"],
        epochs=FLAGS.pretrain_epochs,
        steps_per_epoch=steps["pre"],
        verbose=2,
    )
    keras.utils.set_random_seed(1)
    fresh_head = (
        build_model(FLAGS.model, 5, shape).get_layer(HEAD).get_weights()
    )

    def start(model_class=keras.Model):
        clone = keras.models.clone_model(pretrained)
        clone.set_weights(pretrained.get_weights())
        clone.get_layer(HEAD).set_weights(fresh_head)
        return model_class(clone.inputs, clone.outputs)

    return start


def fine_tuned(start, label, k, drift):
    """The model and optimizer of one method (`k` None: plain SGD, all
    layers or the head only)."""
    if k is None:
        model = start()
        if label == "head only":
            for layer in model.layers:
                layer.trainable = layer.name == HEAD
        return model, keras.optimizers.SGD(FLAGS.lr, momentum=0.9)
    optimizer = MultirateOptimizer(
        keras.optimizers.SGD(FLAGS.lr, momentum=0.9),
        k=k,
        slow_variables=rf"^(?!{HEAD}/)",
        linear_drift=drift,
    )
    return start(MultirateModel), optimizer


def main(argv):
    del argv
    require_models("model", FLAGS.model)
    data, steps, test = phase_data()
    start = pretrained_starts(data, steps)
    runs = [("full fine-tuning", None, None), ("head only", None, None)]
    runs += [
        (f"multirate k={k}, drift {'on' if d else 'off'}", int(k), d)
        for k in FLAGS.ks
        for d in (True, False)
    ]
    rows, full_time = [], None
    for label, k, drift in runs:
        model, optimizer = fine_tuned(start, label, k, drift)
        model.compile(optimizer=optimizer, loss=LOSS)
        timer = EpochTimer()
        model.fit(
            data["fine"],
            epochs=FLAGS.epochs,
            steps_per_epoch=steps["fine"],
            verbose=0,
            callbacks=[timer],
        )
        # The first epoch includes tracing; report the median of the rest.
        per_epoch = statistics.median(timer.seconds[1:] or timer.seconds)
        full_time = full_time or per_epoch
        accuracy = keras_accuracy(model, test)
        rows.append(
            [
                label,
                f"{per_epoch:.1f}",
                f"{per_epoch / full_time:.2f}",
                f"{accuracy:.4f}",
            ]
        )
        print(table_row(rows[-1]), flush=True)
    write_report(rows)


def write_report(rows):
    text = "\n".join(
        [
            f"{FLAGS.model}: pretrained {FLAGS.pretrain_epochs} epochs on classes "
            f"0-4, fine-tuned {FLAGS.epochs} epochs on classes 5-9 "
            f"({FLAGS.train_limit or 'all'} images each), batch {FLAGS.batch}, SGD "
            f"momentum 0.9, lr (fast step h/k) {FLAGS.lr}; test: classes 5-9.",
            "",
            *table(["method", "s / epoch", "vs full", "test accuracy"], rows),
        ]
    )
    workdir = Path(FLAGS.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "multirate_transfer.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    app.run(main)
