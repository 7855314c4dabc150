"""int8 PTQ of any set of models, side by side (Ding et al., Table 8).

Each model is converted to full-integer int8 TFLite twice, with per-channel
and with per-tensor weight scales, and compared with its fp32 TFLite form on
the same images: top-1 (when the data has the model's classes), int8-vs-fp32
top-1 agreement and output RMSE relative to the fp32 outputs' RMS (a random
model's arg-max can be constant, so agreement alone says little there), the
worst per-layer int8 error (QuantizationDebugger RMSE in
quantization steps), the largest calibrated activation range, and statistics
of the 3x3 kernels as int8 sees them (BN folded): mean std, centre/surround
std (Table 11) and the largest |w| / std (the tail a per-tensor scale must
cover).

    python -m benchmarks.table8_ptq                        # the quick start's three models
    python -m benchmarks.table8_ptq --models=RepOpt=RepOpt-VGG-B1-acc78.62.pth,\\
        RepVGG=RepVGG-B1-train.pth --data=imagenet2012 --manual_dir=/data/imagenet

`--models` takes `label=source` entries; a source is a `.keras` file, a
PyTorch checkpoint (imported without torch; RepVGG training forms are fused),
or `synthetic:VARIANT:FORM` (a random-initialised state dict in a reference
layout, e.g. `synthetic:repvgg_a0:repvgg_train`: shows the import path at full
size, says nothing about trained accuracy). With no `--models` the quick
start in --workdir is trained (or reused) and its RepOpt-VGG, plain VGG and
fused RepVGG are compared. Writes WORKDIR/table8_ptq.md and .json and
int8_kernel_histograms.png.
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]

import keras  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from benchmarks.ptq import ptq_row  # noqa: E402
from benchmarks.ptq import ptq_table  # noqa: E402
from repopt_tf.checkpoints import is_state_dict_file  # noqa: E402
from repopt_tf.checkpoints import model_from_checkpoint  # noqa: E402
from repopt_tf.checkpoints import model_from_state_dict  # noqa: E402
from repopt_tf.checkpoints import read_keras_model  # noqa: E402
from repopt_tf.cli.flag_checks import require_models  # noqa: E402
from repopt_tf.configs import quickstart  # noqa: E402
from repopt_tf.export.diagnostics import deploy_kernels  # noqa: E402
from repopt_tf.export.diagnostics import kernel_histograms  # noqa: E402
from repopt_tf.export.runs import load_export_data  # noqa: E402
from repopt_tf.models.repopt_vgg.fixtures import synthetic_state_dict  # noqa: E402
from repopt_tf.rundir import RunDir  # noqa: E402
from repopt_tf.training import Experiment  # noqa: E402
from repopt_tf.training import get_strategy  # noqa: E402

flags.DEFINE_list(
    "models",
    [],
    "label=source entries (see the docstring); "
    "default: the quick start's three models.",
)
flags.DEFINE_string(
    "workdir", "runs/quickstart", "Quick-start workdir; outputs go here."
)
flags.DEFINE_integer(
    "epochs",
    3,
    "Quick-start epochs per model (default models).",
    lower_bound=1,
)
flags.DEFINE_integer(
    "train_limit",
    None,
    "Quick-start training images (default: all).",
    lower_bound=1,
)
flags.DEFINE_string(
    "model", "repopt_vgg_s", "Quick-start variant (default models)."
)
flags.DEFINE_string(
    "data", "fashion_mnist", "Data: fashion_mnist, a tfds name or folder:/path."
)
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data_dir.")
flags.DEFINE_string("manual_dir", None, "imagenet2012 tar files.")
flags.DEFINE_string(
    "eval_split", None, "Evaluation split (default: test / validation)."
)
flags.DEFINE_integer(
    "eval_limit", 0, "Evaluate on the first N images (0: all).", lower_bound=0
)
flags.DEFINE_integer(
    "representative", 300, "Calibration images.", lower_bound=1
)
flags.DEFINE_integer(
    "image_size", 224, "Input size of imported checkpoints.", lower_bound=8
)
flags.DEFINE_float(
    "crop_fraction",
    None,
    "Evaluation centre crop (default: 0.875 at ImageNet sizes, else 1).",
    lower_bound=0.1,
    upper_bound=1.0,
)
FLAGS = flags.FLAGS

QUICKSTART_MODELS = (  # label, stage (its file: RunDir.model_path)
    ("RepOpt-VGG (RepOptSGD)", "target"),
    ("plain VGG (SGD)", "baseline_sgd"),
    ("RepVGG (SGD, fused)", "baseline_repvgg_fused"),
)


def load(source):
    """`(model, trained)` for a .keras path, a .pth or synthetic:VARIANT:FORM."""
    if source.startswith("synthetic:"):
        _, variant, form = source.split(":")
        state = synthetic_state_dict(variant, form)
        return model_from_state_dict(
            state, variant, FLAGS.image_size, source=source
        )[0], False
    if is_state_dict_file(source):
        return model_from_checkpoint(source, image_size=FLAGS.image_size)[
            0
        ], True
    return read_keras_model(source), True


def quickstart_entries(workdir):
    """`(label, model file)` of the quick start's three models, trained in
    `workdir` first (finished stages are reused)."""
    config = quickstart.get_config()
    config.model = FLAGS.model
    config.train.epochs = FLAGS.epochs
    if FLAGS.train_limit is not None:
        config.data.train_limit = FLAGS.train_limit
    Experiment(config, workdir, get_strategy()).run()
    return [
        (label, str(RunDir(workdir).model_path(stage)))
        for label, stage in QUICKSTART_MODELS
    ]


def measure(entries, train, test):
    """`ptq_row` and int8-view kernels of each `(label, source)`."""
    rows, kernels = [], {}
    for label, source in entries:
        model, trained = load(source)
        crop = FLAGS.crop_fraction or (
            0.875 if model.input_shape[1] >= 160 else 1.0
        )
        rows.append(
            ptq_row(
                label, model, train, test, FLAGS.representative, crop, trained
            )
        )
        kernels[label] = deploy_kernels(model)
        keras.backend.clear_session()
    return rows, kernels


def main(argv):
    del argv
    require_models("model", FLAGS.model)
    workdir = Path(FLAGS.workdir)
    entries = [entry.split("=", 1) for entry in FLAGS.models]
    if any(len(entry) != 2 for entry in entries):
        sys.exit(
            f"error: --models takes label=source entries, got {FLAGS.models}"
        )
    try:
        entries = entries or quickstart_entries(workdir)
        train, test = load_export_data(
            FLAGS.data,
            FLAGS.data_dir,
            FLAGS.manual_dir,
            FLAGS.eval_split,
            FLAGS.eval_limit,
        )
        rows, kernels = measure(entries, train, test)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    caption = (
        f"{FLAGS.data}: {FLAGS.representative} calibration images, "
        f"{test.num_examples} evaluation images"
    )
    text = ptq_table(rows, caption)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "table8_ptq.md").write_text(text + "\n")
    (workdir / "table8_ptq.json").write_text(json.dumps(rows, indent=2))
    if len({tuple(k) for k in kernels.values()}) == 1:  # same layers
        kernel_histograms(kernels, workdir / "int8_kernel_histograms.png")
    print(text)


if __name__ == "__main__":
    app.run(main)
