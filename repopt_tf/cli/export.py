"""Export a model to full-integer int8 TFLite and report on it.

    python export_tflite.py --workdir=runs/quickstart        # exports target/model.keras
    python export_tflite.py --model=runs/x/baseline_repvgg/model_fused.keras
    python export_tflite.py --checkpoint=RepOpt-VGG-B1-acc78.62.pth \\
        --data=imagenet2012 --manual_dir=/data/imagenet   # authors' .pth, no torch

Writes model_fp32.tflite, model_int8.tflite, export_report.json,
export_report.md, kernel_histogram.png and activation_memory.png next to
the model (for a checkpoint: into CHECKPOINT_STEM_tflite/ beside it; or
into --output_dir).
For a train.py model the data set is read from the run's config.json when
there is one (else --data). A PyTorch checkpoint (RepOpt-VGG target, RepVGG
train or deploy form) is imported without torch; its variant, classes and
form come from the file, a RepVGG training form is fused first. Converter
messages are hidden unless --verbose.
"""

from repopt_tf.cli import exit_unless_tensorflow

exit_unless_tensorflow("export_tflite.py (repopt-export)")

import sys
from pathlib import Path

from absl import app
from absl import flags

from repopt_tf.cli import define_lock_flag
from repopt_tf.cli import run_main
from repopt_tf.cli.flag_checks import check_positive_integers
from repopt_tf.cli.run_flags import define_run_flags
from repopt_tf.export.device_form import FOLD_MODES

define_run_flags()
flags.DEFINE_string(
    "checkpoint",
    None,
    "A PyTorch (.pth) or safetensors checkpoint, the authors' or timm's, to "
    "import and export.",
)
flags.DEFINE_string(
    "variant",
    None,
    "With --checkpoint: the variant (default: from the file's shapes).",
)
flags.DEFINE_bool("ema", False, "With --checkpoint: export its EMA weights.")
flags.DEFINE_integer(
    "image_size", 224, "With --checkpoint: input size.", lower_bound=8
)
flags.DEFINE_float(
    "crop_fraction",
    None,
    "Evaluation centre crop (default 0.875 for --checkpoint, "
    "else 1: fit the image).",
    lower_bound=0.1,
    upper_bound=1.0,
)
flags.DEFINE_string(
    "manual_dir", None, "imagenet2012 tar files (tensorflow-datasets)."
)
flags.DEFINE_string(
    "eval_split",
    None,
    "Evaluation split (default: validation for imagenet2012, else test).",
)
flags.DEFINE_integer(
    "representative", 300, "Representative training images.", lower_bound=1
)
flags.DEFINE_integer(
    "latency_runs", 100, "Timed invokes per latency setting.", lower_bound=1
)
flags.DEFINE_list("threads", ["1", "2"], "Thread counts for latency.")
check_positive_integers("threads")
flags.DEFINE_integer(
    "batch_size",
    0,
    "Fixed input batch of the exported models (1 for devices: no run-time "
    "shape ops); 0: dynamic.",
    lower_bound=0,
)
flags.DEFINE_enum(
    "fold_padding",
    "none",
    FOLD_MODES,
    "Replace the PAD before stride-2 convs by an exact 'same' conv with a "
    "zero-extended kernel: 'peak' where the PAD sets the activation peak, "
    "'all' everywhere (more weights and MACs, less arena).",
)
flags.DEFINE_bool(
    "conv_ops",
    True,
    "Convert Dense layers as 1x1 CONV_2D and the input Rescaling as a 1x1 "
    "DEPTHWISE_CONV_2D: TFLite Micro computes them bit for bit like LiteRT's "
    "reference kernels (their FULLY_CONNECTED kernels round differently) "
    "and XNNPACK runs them faster than MUL + ADD.",
)
flags.DEFINE_bool(
    "deploy_check",
    None,
    "Run the model in TFLite Micro in the deploy check (default: when "
    "tflite-micro is installed, the [micro] extra).",
)
flags.DEFINE_integer(
    "deploy_images",
    500,
    "Test images for the deploy check's runs (0: all evaluation images).",
    lower_bound=0,
)
define_lock_flag()
flags.mark_flags_as_mutual_exclusive(["checkpoint", "model", "workdir"])
FLAGS = flags.FLAGS

FALLBACK_WARNING = """
==============================================================================
WARNING: no --data given. Calibrating on Fashion-MNIST, grey images resized to
{size}x{size} RGB: NOT the data this checkpoint was trained on. int8 ranges are
calibrated on the wrong images and top-1 cannot be measured (other classes);
the report shows int8-vs-fp32 agreement on {limit} images only. For real numbers
pass --data=imagenet2012 --manual_dir=DIR, or --data=folder:/path/to/images.
==============================================================================
"""


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from repopt_tf.export import export_model
    from repopt_tf.quiet import quiet_logs
    from repopt_tf.run_lock import RunLockedError
    from repopt_tf.run_lock import run_lock

    quiet_logs(FLAGS.verbose)
    try:
        model, train, test, output_dir, source, options = _model_and_data()
        with run_lock(
            output_dir, "export_tflite.py", FLAGS.wait_for_lock, _log
        ):
            report = export_model(
                model,
                train,
                test,
                output_dir,
                log=_log,
                source=source,
                options=options,
            )
    except (ValueError, OSError, RunLockedError) as error:
        print(f"error: {error}", file=sys.stderr)  # OSError: missing files too
        return 1
    return _summary(report, output_dir)


def _options(**defaults):
    """`ExportOptions` from the flags (`defaults`: what the source sets)."""
    from repopt_tf.export.options import ExportOptions

    return ExportOptions(
        representative=FLAGS.representative,
        latency_runs=FLAGS.latency_runs,
        threads=tuple(int(t) for t in FLAGS.threads),
        verbose=FLAGS.verbose,
        batch_size=FLAGS.batch_size or None,
        fold_padding=FLAGS.fold_padding,
        conv_ops=FLAGS.conv_ops,
        run_micro=FLAGS.deploy_check,
        deploy_images=FLAGS.deploy_images,
        **defaults,
    )


def _log(message):
    print(f"[export] {message}", flush=True)


def _model_and_data():
    """`(model, train, test, output_dir, source file, ExportOptions)` from
    the flags: an imported checkpoint, or a trained `.keras` model."""
    from repopt_tf.cli.run_flags import load_trained_model

    if not FLAGS.checkpoint:
        path, model, train, test, output_dir = load_trained_model(_log)
        options = _options(crop_fraction=FLAGS.crop_fraction or 1.0)
        return model, train, test, output_dir, path, options
    from repopt_tf.checkpoints import model_from_checkpoint
    from repopt_tf.export.runs import load_export_data

    checkpoint = Path(FLAGS.checkpoint)
    model, loaded = model_from_checkpoint(
        checkpoint, FLAGS.variant, FLAGS.image_size, FLAGS.ema
    )
    _log(f"{loaded}")
    _log(
        f"model {model.name}: {model.count_params():,} parameters, "
        f"input {model.input_shape[1:]}, {model.output_shape[-1]} classes"
    )
    eval_limit = FLAGS.eval_limit
    if not FLAGS.data:
        eval_limit = eval_limit or 500
        print(
            FALLBACK_WARNING.format(size=FLAGS.image_size, limit=eval_limit),
            file=sys.stderr,
            flush=True,
        )
    train, test = load_export_data(
        FLAGS.data or "fashion_mnist",
        FLAGS.data_dir,
        FLAGS.manual_dir,
        FLAGS.eval_split,
        eval_limit,
    )
    output_dir = Path(
        FLAGS.output_dir
        or checkpoint.parent / f"{checkpoint.name.split('.')[0]}_tflite"
    )
    options = _options(
        crop_fraction=FLAGS.crop_fraction or 0.875,
        measure_top1=bool(FLAGS.data),
    )
    return model, train, test, output_dir, checkpoint, options


def _summary(report, output_dir):
    """Prints what was written and the deploy check's verdict; the exit
    status (1 when TFLite Micro cannot run the model)."""
    from repopt_tf.export.deploy_render import deploy_summary

    a, agreement = report["accuracy"], report["agreement"]
    quality = (
        f"int8 top-1 {a['tflite_int8']:.4f} vs fp32 {a['keras_fp32']:.4f} "
        f"({100 * a['int8_minus_fp32']:+.2f} points)"
        if a
        else f"int8 agrees with fp32 on {100 * agreement['top1_agreement']:.1f}% "
        "of top-1 predictions"
    )
    _log(
        f"wrote {output_dir}/model_int8.tflite "
        f"({report['sizes_bytes']['int8'] / 1024:.0f} KB, verified full integer): "
        f"{quality}; report in {output_dir}/export_report.md"
    )
    tflm = report["deploy"]["micro"]
    if tflm.get("loads") is False:
        print(
            f"error: TFLite Micro cannot run it: {tflm['error']}",
            file=sys.stderr,
        )
        return 1
    _log(deploy_summary(report["deploy"]))
    return 0


def run():
    """Console script `repopt-export`."""
    run_main(main, __name__)


if __name__ == "__main__":
    run()
