"""Export a trained model to full-integer int8 TFLite and report on it.

    python export_tflite.py --workdir=runs/quickstart        # exports target/model.keras
    python export_tflite.py --model=runs/x/baseline_repvgg/model_fused.keras

Writes model_fp32.tflite, model_int8.tflite, export_report.json,
export_report.md and kernel_histogram.png next to the model (or into
--output_dir). The data set is read from the run's config.json when there is
one (else --data). Converter messages are hidden unless --verbose.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

flags.DEFINE_string("workdir", None, "A train.py workdir (uses target/model.keras).")
flags.DEFINE_string("model", None, "Path of a .keras model (overrides --workdir).")
flags.DEFINE_string("output_dir", None, "Where to write (default: the model's folder).")
flags.DEFINE_string("data", None, "Data set (default: the run's config, else fashion_mnist).")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets / Fashion-MNIST folder.")
flags.DEFINE_integer("representative", 300, "Representative training images.", lower_bound=1)
flags.DEFINE_integer("eval_limit", 0, "Evaluate on the first N test images (0: all).", lower_bound=0)
flags.DEFINE_integer("latency_runs", 100, "Timed invokes per latency setting.", lower_bound=1)
flags.DEFINE_list("threads", ["1", "2"], "Thread counts for latency.")
flags.DEFINE_bool("verbose", False, "Show the converter's messages.")
FLAGS = flags.FLAGS

def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        threads = [int(t) for t in FLAGS.threads]
    except ValueError:
        print(f"error: --threads must be integers, got {FLAGS.threads}", file=sys.stderr)
        return 1
    import keras

    import repopt_tf.models  # noqa: F401  (registers custom layers)
    from repopt_tf.export import export_model
    from repopt_tf.export.runs import load_run_data
    from repopt_tf.export.runs import locate_model

    try:
        model_path = locate_model(FLAGS.workdir, FLAGS.model)
        print(f"[export] model {model_path}")
        model = keras.models.load_model(model_path, compile=False)
        train, test = load_run_data(model_path, FLAGS.data, FLAGS.data_dir,
                                    FLAGS.eval_limit)
        output_dir = Path(FLAGS.output_dir or model_path.parent)
        report = export_model(
            model, train, test, output_dir, representative=FLAGS.representative,
            latency_runs=FLAGS.latency_runs, threads=threads,
            verbose=FLAGS.verbose, log=lambda m: print(f"[export] {m}", flush=True),
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    a = report["accuracy"]
    print(f"[export] wrote {output_dir}/model_int8.tflite "
          f"({report['sizes_bytes']['int8'] / 1024:.0f} KB): int8 top-1 "
          f"{a['tflite_int8']:.4f} vs fp32 {a['keras_fp32']:.4f} "
          f"({100 * a['int8_minus_fp32']:+.2f} points); report in "
          f"{output_dir}/export_report.md")
    return 0


if __name__ == "__main__":
    app.run(main)
