"""QAT fine-tuning and int8 export of a trained plain model (optional extra).

    bash scripts/setup_qat.sh
    .venv/bin/python -m repopt_tf.qat --workdir=runs/quickstart --epochs=2

Builds the tf_keras twin of the model (weights copied by name and checked
equal), fine-tunes it with TFMOT quantization-aware training, converts it to a
full-integer int8 `.tflite` and writes `model_int8_qat.tflite`,
`qat_report.json` and `qat_report.md` beside the model (or into
--output_dir). The report puts QAT beside its fair baselines: fp32 before,
fp32 fine-tuned for the same epochs without fake quantization, and int8 PTQ.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from repopt_tf.cli.run_flags import define_run_flags  # noqa: E402
from repopt_tf.cli.run_flags import load_trained_model  # noqa: E402
from repopt_tf.markdown import table  # noqa: E402

define_run_flags()
flags.DEFINE_integer("epochs", 2, "QAT fine-tuning epochs.", lower_bound=1)
flags.DEFINE_float(
    "learning_rate", 1e-3, "QAT SGD learning rate.", lower_bound=0
)
flags.DEFINE_integer("batch_size", 128, "Batch size.", lower_bound=1)
flags.DEFINE_integer(
    "train_limit",
    0,
    "Fine-tune on the first N images (0: all).",
    lower_bound=0,
)
flags.DEFINE_integer(
    "representative", 300, "Representative images.", lower_bound=1
)
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        import tensorflow_model_optimization  # noqa: F401
    except ImportError:
        print(
            "error: QAT needs the optional extra: run `bash scripts/setup_qat.sh` "
            "(or pip install 'repopt-tf[qat]').",
            file=sys.stderr,
        )
        return 1
    from repopt_tf.quiet import quiet_logs

    quiet_logs(FLAGS.verbose)
    from repopt_tf.qat import tf_keras_twin
    from repopt_tf.qat import weights_equal

    try:
        model_path, model, train, test, output_dir = load_trained_model(
            lambda message: print(f"[qat] {message}", flush=True)
        )
        twin = tf_keras_twin(model)
    except (ValueError, OSError) as error:  # FileNotFoundError is an OSError
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not weights_equal(model, twin):
        print(
            "error: the tf_keras twin's weights differ from the model's.",
            file=sys.stderr,
        )
        return 1
    _qat_study(model_path, model, twin, train, test, output_dir)
    return 0


def _qat_study(model_path, model, twin, train, test, output_dir):
    """Fine-tunes with fake quantization and without, converts, measures
    fp32 / PTQ int8 / QAT int8 and writes the report and the model."""
    from repopt_tf.atomic import write_bytes
    from repopt_tf.atomic import write_text
    from repopt_tf.data import make_dataset
    from repopt_tf.data import representative_images
    from repopt_tf.data import steps_per_epoch
    from repopt_tf.data import take

    _, size, _, channels = model.input_shape
    if FLAGS.train_limit:
        train = take(train, FLAGS.train_limit)
    train_data = make_dataset(
        train, size, FLAGS.batch_size, training=True, channels=channels
    )
    test_data = make_dataset(test, size, 256, training=False, channels=channels)
    print(
        f"[qat] {model_path}: twin built, weights equal; fine-tuning "
        f"{FLAGS.epochs} epochs",
        flush=True,
    )
    calibration = representative_images(
        train, size, FLAGS.representative, channels=channels
    )
    steps = steps_per_epoch(train, FLAGS.batch_size)
    content = _quantize_aware(twin, train_data, calibration, steps)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_bytes(output_dir / "model_int8_qat.tflite", content)
    tuned = _float_baseline(model, train_data, steps)
    print("[qat] evaluating", flush=True)
    report = _measure(model_path, model, tuned, content, calibration, test_data)
    write_text(output_dir / "qat_report.json", json.dumps(report, indent=2))
    write_text(output_dir / "qat_report.md", qat_table(report) + "\n")
    print(qat_table(report))
    print(f"[qat] wrote {output_dir}/model_int8_qat.tflite")


def _quantize_aware(twin, train_data, calibration, steps):
    """QAT fine-tuning of the tf_keras twin, converted to full-integer int8."""
    from repopt_tf.export import check_full_integer
    from repopt_tf.qat.finetune import convert_qat_int8
    from repopt_tf.qat.finetune import quantize_aware_finetune

    qat_model = quantize_aware_finetune(
        twin,
        train_data,
        FLAGS.epochs,
        calibration,
        FLAGS.learning_rate,
        steps_per_epoch=steps,
    )
    content = convert_qat_int8(qat_model, calibration)
    check_full_integer(content)
    return content


def _float_baseline(model, train_data, steps):
    """QAT's fair baseline: a fresh fp32 twin fine-tuned as long without
    fake quantization."""
    from repopt_tf.qat import tf_keras_twin
    from repopt_tf.qat.finetune import float_finetune

    print(
        f"[qat] fine-tuning the fp32 twin {FLAGS.epochs} epochs without "
        "fake quantization (the baseline)",
        flush=True,
    )
    return float_finetune(
        tf_keras_twin(model),
        train_data,
        FLAGS.epochs,
        FLAGS.learning_rate,
        steps_per_epoch=steps,
    )


def _measure(model_path, model, tuned, content, calibration, test_data):
    """Top-1 of fp32, fine-tuned fp32, PTQ and QAT int8, and the two gaps."""
    from repopt_tf.evaluation import keras_accuracy
    from repopt_tf.export import convert_int8
    from repopt_tf.export import tflite_accuracy

    tuned_metrics = tuned.evaluate(test_data, verbose=0, return_dict=True)
    report = {
        "model": str(model_path),
        "epochs": FLAGS.epochs,
        "learning_rate": FLAGS.learning_rate,
        "keras_fp32": keras_accuracy(model, test_data),
        "fp32_finetuned": float(tuned_metrics["accuracy"]),
        "tflite_int8_ptq": tflite_accuracy(
            convert_int8(model, calibration), test_data
        ),
        "tflite_int8_qat": tflite_accuracy(content, test_data),
    }
    report["ptq_minus_fp32"] = report["tflite_int8_ptq"] - report["keras_fp32"]
    report["qat_minus_fp32_finetuned"] = (
        report["tflite_int8_qat"] - report["fp32_finetuned"]
    )
    return report


def qat_table(report):
    """QAT beside its baselines: each int8 row against the fp32 it came from."""
    a, epochs = report, report["epochs"]
    rows = [
        ["Keras fp32 (before)", f"{a['keras_fp32']:.4f}", ""],
        [
            "TFLite int8 PTQ",
            f"{a['tflite_int8_ptq']:.4f}",
            f"{100 * a['ptq_minus_fp32']:+.2f} pts vs fp32 before",
        ],
        [
            f"fp32 fine-tuned {epochs} epochs (no fake quant)",
            f"{a['fp32_finetuned']:.4f}",
            "",
        ],
        [
            f"TFLite int8 QAT, {epochs} epochs",
            f"{a['tflite_int8_qat']:.4f}",
            f"{100 * a['qat_minus_fp32_finetuned']:+.2f} pts vs fp32 fine-tuned",
        ],
    ]
    return "\n".join(table(["model", "top-1", "vs"], rows))


if __name__ == "__main__":
    app.run(main)
