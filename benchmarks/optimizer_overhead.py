"""Step time of RepOptSGD vs Keras SGD on the same model, side by side.

Both optimizers train identical copies of a RepOpt-VGG (default: S) in one process;
timed windows alternate between them after a warm-up, and the script prints
the median step time of each and the ratio RepOptSGD / SGD (target <= 1.03).

    python -m benchmarks.optimizer_overhead --batch=128 --windows=5
"""

import statistics

import keras
import numpy as np
from absl import app
from absl import flags

from benchmarks.step_timing import alternating_step_times
from repopt_tf import RepOptSGD
from repopt_tf import grad_mults_for_model
from repopt_tf.cli.flag_checks import require_models
from repopt_tf.models import build_model
from repopt_tf.models import extract_scales

flags.DEFINE_integer("batch", 128, "Batch size.", lower_bound=1)
flags.DEFINE_integer(
    "image_size", 32, "Input height and width.", lower_bound=16
)
flags.DEFINE_string("model", "repopt_vgg_s", "Variant (see list_models()).")
flags.DEFINE_integer(
    "steps", 10, "Training steps per timed window.", lower_bound=1
)
flags.DEFINE_integer(
    "windows", 5, "Timed windows per optimizer.", lower_bound=1
)
flags.DEFINE_integer("warmup", 3, "Untimed steps per optimizer.", lower_bound=0)
FLAGS = flags.FLAGS


def main(argv):
    del argv
    require_models("model", FLAGS.model)
    keras.utils.set_random_seed(0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    shape = (FLAGS.image_size, FLAGS.image_size, 3)
    scales = extract_scales(build_model(FLAGS.model, 10, shape, kind="hs"))
    models = {}
    for name in ("SGD", "RepOptSGD"):
        model = build_model(FLAGS.model, 10, shape)
        if name == "SGD":
            optimizer = keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True)
        else:
            optimizer = RepOptSGD(
                0.01,
                momentum=0.9,
                nesterov=True,
                weight_decay=4e-5,
                grad_mults=grad_mults_for_model(model, scales),
            )
        model.compile(optimizer=optimizer, loss=loss)
        models[name] = model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(FLAGS.batch, FLAGS.image_size, FLAGS.image_size, 3))
    x = x.astype(np.float32)
    y = rng.integers(0, 10, FLAGS.batch)
    times = alternating_step_times(
        models, (x, y), FLAGS.warmup, FLAGS.windows, FLAGS.steps
    )

    print(
        f"batch {FLAGS.batch}, {FLAGS.image_size}x{FLAGS.image_size}, "
        f"{FLAGS.windows} windows x {FLAGS.steps} steps"
    )
    for name, values in times.items():
        print(
            f"{name:>10}: median step {1e3 * statistics.median(values):.2f} ms"
            f" (min {1e3 * min(values):.2f}, max {1e3 * max(values):.2f})"
        )
    ratios = [a / b for a, b in zip(times["RepOptSGD"], times["SGD"])]
    print(
        f"ratio RepOptSGD/SGD: median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}; target <= 1.03)"
    )


if __name__ == "__main__":
    app.run(main)
