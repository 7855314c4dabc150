"""Batch-1 LiteRT latency and size of deployable models, fp32 vs int8.

Each model is built in its deploy form (the RepOpt target: plain convs whose
BNs the converter folds), converted to fp32 and to full-integer int8 TFLite
(verified every op int8), and timed side by side with XNNPACK at each thread
count in one run; a table of median / p90 ms, the int8 speed-up and the file
sizes is printed with the machine it ran on. Weights are random (latency and
size do not depend on them); calibration uses random images.

    python -m benchmarks.edge_latency
    python -m benchmarks.edge_latency --models=repopt_ghostnet_1_0x --threads=1,2,4
"""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from repopt_tf.cli.flag_checks import check_positive_integers  # noqa: E402
from repopt_tf.cli.flag_checks import require_models  # noqa: E402
from repopt_tf.export import check_full_integer  # noqa: E402
from repopt_tf.export import convert_float32  # noqa: E402
from repopt_tf.export import convert_int8  # noqa: E402
from repopt_tf.export.litert_eval import latency  # noqa: E402
from repopt_tf.export.litert_eval import machine_info  # noqa: E402
from repopt_tf.export.litert_eval import machine_line  # noqa: E402
from repopt_tf.models import build_model  # noqa: E402

flags.DEFINE_list(
    "models",
    ["repopt_ghostnet_0_5x", "repopt_ghostnet_1_0x", "repopt_vgg_a0"],
    "Variants (build_model names), built as kind='plain'.",
)
flags.DEFINE_integer(
    "image_size", 224, "Input height and width.", lower_bound=32
)
flags.DEFINE_list("threads", ["1", "2"], "XNNPACK thread counts.")
flags.DEFINE_integer(
    "runs", 50, "Timed invokes per measurement.", lower_bound=1
)
flags.DEFINE_integer(
    "calibration", 32, "Random calibration images.", lower_bound=1
)
check_positive_integers("threads")
FLAGS = flags.FLAGS


def measure(variant, rng):
    size = FLAGS.image_size
    model = build_model(variant, 1000, (size, size, 3))
    images = rng.uniform(0, 255, (FLAGS.calibration, size, size, 3))
    images = images.astype(np.float32)
    files = {
        "fp32": convert_float32(model),
        "int8": convert_int8(model, images),
    }
    check_full_integer(files["int8"])
    row = {
        "model": variant,
        "params": model.count_params(),
        **{f"{k}_mb": len(v) / 2**20 for k, v in files.items()},
    }
    for threads in (int(t) for t in FLAGS.threads):
        for kind, content in files.items():
            timing = latency(
                content, images[0], num_threads=threads, runs=FLAGS.runs
            )
            row[f"{kind}_{threads}t"] = timing
    return row


def table(rows):
    threads = [int(t) for t in FLAGS.threads]
    head = (
        ["model", "params", "fp32 MB", "int8 MB"]
        + [
            f"{kind} {t}T ms (p90)"
            for t in threads
            for kind in ("fp32", "int8")
        ]
        + [f"int8 speed-up {t}T" for t in threads]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        cells = [
            row["model"],
            f"{row['params'] / 1e6:.2f}M",
            f"{row['fp32_mb']:.2f}",
            f"{row['int8_mb']:.2f}",
        ]
        for t in threads:
            for kind in ("fp32", "int8"):
                timing = row[f"{kind}_{t}t"]
                cells.append(
                    f"{timing['median_ms']:.2f} ({timing['p90_ms']:.2f})"
                )
        cells += [
            f"{row[f'fp32_{t}t']['median_ms'] / row[f'int8_{t}t']['median_ms']:.2f}x"
            for t in threads
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv):
    del argv
    require_models("models", FLAGS.models)
    rng = np.random.default_rng(0)
    rows = []
    for variant in FLAGS.models:
        print(f"[edge_latency] {variant}: converting and timing", flush=True)
        rows.append(measure(variant, rng))
    print(
        f"\nbatch 1, {FLAGS.image_size}x{FLAGS.image_size}x3, XNNPACK, "
        f"{FLAGS.runs} runs; {machine_line(machine_info())}\n"
    )
    print(table(rows))


if __name__ == "__main__":
    app.run(main)
