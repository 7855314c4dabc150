"""int8 on the device: this library's export against the path users take
today, torch -> ONNX -> onnx2tf, on the same checkpoint.

    python -m benchmarks.vs_onnx2tf --torch_python=/tmp/timmenv/bin/python \\
        --onnx2tf_python=/tmp/o2tfenv/bin/python

The other side runs in throwaway environments (never dependencies of this
library): `--torch_python` with torch, timm and onnx; `--onnx2tf_python`
with onnx2tf and its pinned TensorFlow (they may be the same). Steps, in a
work folder (`--workdir`):

1. here: calibration and evaluation images (Fashion-MNIST resized to
   224x224 RGB, raw pixels) as `.npy`;
2. torch side (`--torch_side=DIR`): timm's `repvgg_a0` with random weights
   and BN statistics (seeded) saved as `repvgg_a0.safetensors` (training
   form), reparameterized by timm, exported to ONNX (batch 1), and its fp32
   logits on the evaluation images;
3. onnx2tf side (`--onnx2tf_side=DIR`): `onnx2tf -oiqt` with the same
   calibration images (normalised with ImageNet's mean and std, as the ONNX
   model expects) -> `*_full_integer_quant.tflite` (int8 I/O);
4. here: the same `.safetensors` through `export_tflite`'s path
   (`model_from_checkpoint`, fused, batch 1, `conv_ops`; `--fold_padding`
   as given), then the two graphs op by op (PAD, CONV_2D padding / stride /
   fused activation), their sizes, their latency with XNNPACK at each thread
   count in interleaved windows (min / median / max, and the ratio), and
   their fidelity to torch's fp32 logits.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CHECKPOINT = "repvgg_a0.safetensors"


def torch_side(folder):
    """Step 2, in the torch environment (no repopt_tf here)."""
    import numpy as np
    import timm
    import torch
    from safetensors.torch import save_file
    from timm.utils.model import reparameterize_model

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = timm.create_model("repvgg_a0", pretrained=False).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.3, 0.3, generator=generator)
                module.running_mean.uniform_(-0.2, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / CHECKPOINT), metadata={"format": "pt"})
    deploy = reparameterize_model(model)
    images = np.load(folder / "eval.npy")
    x = torch.from_numpy(_normalised(images)).permute(0, 3, 1, 2)
    with torch.no_grad():
        np.save(folder / "torch_logits.npy", deploy(x).numpy())
    torch.onnx.export(
        deploy,
        x[:1],
        str(folder / "repvgg_a0.onnx"),
        input_names=["input"],
        output_names=["logits"],
        opset_version=17,
        dynamo=False,
    )


def onnx2tf_side(folder):
    """Step 3, in the onnx2tf environment."""
    import numpy as np

    calibration = (np.load(folder / "calibration.npy") / 255.0).astype(
        "float32"
    )
    np.save(folder / "calibration01.npy", calibration)
    # onnx2tf checks its conversion on 20 sample images it downloads unless
    # this file is in its working folder: ours, at its 128x128.
    rows = np.arange(128) * calibration.shape[1] // 128
    np.save(
        folder / "calibration_image_sample_data_20x128x128x3_float32.npy",
        calibration[:20][:, rows][:, :, rows],
    )
    bin_dir = str(Path(sys.executable).parent)  # onnx2tf calls onnxsim
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ.get('PATH', '')}")
    subprocess.run(
        [
            str(Path(sys.executable).with_name("onnx2tf")),
            "-i",
            str(folder / "repvgg_a0.onnx"),
            "-o",
            str(folder / "onnx2tf"),
            "-oiqt",
            "-cind",
            "input",
            str(folder / "calibration01.npy"),
            json.dumps([[[list(MEAN)]]]),
            json.dumps([[[list(STD)]]]),
        ],
        check=True,
        cwd=folder,
        env=env,
    )


def _normalised(images):
    import numpy as np

    return ((images / 255.0 - np.array(MEAN)) / np.array(STD)).astype("float32")


def main():
    """A side's step when named (`--torch_side DIR`, `--onnx2tf_side DIR`:
    no absl there), else the comparison with its flags."""
    for side, step in (
        ("--torch_side", torch_side),
        ("--onnx2tf_side", onnx2tf_side),
    ):
        if side in sys.argv:
            return step(Path(sys.argv[sys.argv.index(side) + 1]))
    from absl import app

    _define_flags()
    app.run(compare)


def _define_flags():
    from absl import flags

    flags.DEFINE_string(
        "torch_python", sys.executable, "Python with torch, timm, onnx."
    )
    flags.DEFINE_string(
        "onnx2tf_python", sys.executable, "Python with onnx2tf."
    )
    flags.DEFINE_string("workdir", "runs/vs_onnx2tf", "Work folder.")
    flags.DEFINE_string("output", None, "Also write the tables here.")
    flags.DEFINE_integer(
        "calibration", 100, "Calibration images.", lower_bound=1
    )
    flags.DEFINE_integer("images", 100, "Evaluation images.", lower_bound=1)
    flags.DEFINE_list("threads", ["1", "2"], "XNNPACK thread counts.")
    flags.DEFINE_integer("windows", 5, "Interleaved windows.", lower_bound=1)
    flags.DEFINE_integer("runs", 20, "Invokes per window.", lower_bound=1)
    flags.DEFINE_enum(
        "fold_padding",
        "none",
        ["none", "peak", "all"],
        "Our export's --fold_padding.",
    )


def compare(argv):
    """Steps 1 and 4 (this library's environment)."""
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    from absl import flags

    from repopt_tf.export.litert_eval import machine_info
    from repopt_tf.export.litert_eval import machine_line

    FLAGS = flags.FLAGS
    folder = Path(FLAGS.workdir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    calibration, evaluation = write_images(
        folder, FLAGS.calibration, FLAGS.images
    )
    run_sides(folder, FLAGS.torch_python, FLAGS.onnx2tf_python)
    ours, folded = our_int8(folder, calibration, FLAGS.fold_padding)
    theirs = next((folder / "onnx2tf").glob("*_full_integer_quant.tflite"))
    files = {"this library": ours, "onnx2tf": theirs.read_bytes()}
    inputs = {"this library": evaluation, "onnx2tf": _normalised(evaluation)}
    reference = np.load(folder / "torch_logits.npy")
    table, graphs = graph_table(files, inputs, reference)
    lines = [
        f"Machine: {machine_line(machine_info())}. Folded convs: "
        f"{folded or 'none'}.",
        "",
        *table,
        "",
        "Ops in order (CONV_2D: padding, stride):",
        "",
        *(f"- {name}: {op_order(graph)}" for name, graph in graphs.items()),
        "",
        "Latency, batch 1, XNNPACK, ms over interleaved windows "
        "(min / median / max):",
        "",
        *latency_table(files, inputs, FLAGS.threads, FLAGS.windows, FLAGS.runs),
        "",
        f"The onnx2tf model's input normalisation and quantization in numpy "
        f"(one 224x224x3 frame, the app's work) takes "
        f"{app_preprocessing_ms(files['onnx2tf'], evaluation[0]):.2f} ms more "
        "per frame.",
    ]
    text = "\n".join(lines)
    print(text)
    if FLAGS.output:
        Path(FLAGS.output).write_text(text + "\n")


def write_images(folder, calibration, images):
    """Step 1: `calibration.npy` and `eval.npy` in `folder` (Fashion-MNIST
    at 224x224 RGB, raw pixels); returns both arrays."""
    import numpy as np

    from repopt_tf.data import load_source
    from repopt_tf.data import representative_images

    train = load_source("fashion_mnist", "train")
    test = load_source("fashion_mnist", "test", limit=images)
    arrays = (
        representative_images(train, 224, calibration, channels=3),
        representative_images(test, 224, images, channels=3),
    )
    for name, array in zip(("calibration", "eval"), arrays):
        np.save(folder / f"{name}.npy", array)
    return arrays


def run_sides(folder, torch_python, onnx2tf_python):
    """Steps 2 and 3, each in its own environment."""
    root = Path(__file__).resolve().parents[1]
    for python, side in (
        (torch_python, "--torch_side"),
        (onnx2tf_python, "--onnx2tf_side"),
    ):
        print(f"[vs_onnx2tf] {side[2:]} with {python}", flush=True)
        subprocess.run(
            [python, "-m", "benchmarks.vs_onnx2tf", side, str(folder)],
            check=True,
            cwd=root,
        )


def our_int8(folder, calibration, fold_padding):
    """Step 4's export: the checkpoint through `export_tflite`'s path, as
    `ours_int8.tflite`; returns its bytes and the folded convs."""
    from repopt_tf.checkpoints import model_from_checkpoint
    from repopt_tf.export import convert_int8
    from repopt_tf.export.device_form import device_model

    model, _ = model_from_checkpoint(folder / CHECKPOINT, fuse=True)
    device, folded = device_model(model, 1, fold_padding, conv_ops=True)
    ours = convert_int8(device, calibration)
    (folder / "ours_int8.tflite").write_bytes(ours)
    return ours, folded


def graph_table(files, inputs, reference):
    """The size, op counts and fidelity of each `.tflite` in `files` (name ->
    bytes) on its `inputs` against the `reference` logits; returns the table
    lines and each file's `TFLiteGraph`."""
    from repopt_tf.export.litert_eval import TFLiteModel
    from repopt_tf.export.litert_eval import output_agreement
    from repopt_tf.export.tflite_graph import TFLiteGraph
    from repopt_tf.markdown import table

    graphs = {name: TFLiteGraph(content) for name, content in files.items()}
    rows = []
    for name, content in files.items():
        ops = graphs[name].ops
        convs = [op.options for op in ops if op.name == "CONV_2D"]
        agreement = output_agreement(
            reference, TFLiteModel(content)(inputs[name])
        )
        rows.append(
            [
                name,
                f"{len(content) / 1024:.0f}",
                len(ops),
                sum(op.name == "PAD" for op in ops),
                f"{sum(o[0] == 'SAME' for o in convs)} / "
                f"{sum(o[0] == 'VALID' for o in convs)}",
                sum(o[2] == "RELU" for o in convs),
                f"{agreement['top1_agreement']:.4f}",
                f"{agreement['relative_rmse']:.4f}",
            ]
        )
    header = [
        "export",
        ".tflite KB",
        "ops",
        "PAD",
        "CONV_2D SAME / VALID",
        "fused ReLU",
        "int8 vs torch fp32: top-1 agreement",
        "relative RMSE",
    ]
    return table(header, rows), graphs


def latency_table(files, inputs, threads, windows, runs):
    """Batch-1 latency of `this library` against `onnx2tf` (keys of
    `files`) at each thread count, over interleaved windows of `runs`
    invokes: the table lines."""
    import numpy as np

    from repopt_tf.markdown import table

    rows = []
    for count in threads:
        medians = _interleaved_medians(files, inputs, int(count), windows, runs)
        ours, theirs = medians["this library"], medians["onnx2tf"]
        ratio = np.median(ours) / np.median(theirs)
        rows.append([count, _spread(ours), _spread(theirs), f"{ratio:.2f}"])
    header = ["threads", "this library", "onnx2tf", "ours / theirs (median)"]
    return table(header, rows)


def _interleaved_medians(files, inputs, threads, windows, runs):
    """Each file's median invoke time (ms) per window, the files taking
    turns window by window."""
    from repopt_tf.export.litert_eval import TFLiteModel
    from repopt_tf.export.litert_eval import time_invokes

    runners = {
        name: TFLiteModel(content, num_threads=threads)
        for name, content in files.items()
    }
    for name, runner in runners.items():
        runner(inputs[name][:1])  # set the input once
    medians = {name: [] for name in runners}
    for _ in range(windows):
        for name, runner in runners.items():
            timing = time_invokes(
                runner.interpreter.invoke, warmup=2, runs=runs
            )
            medians[name].append(timing["median_ms"])
    return medians


def app_preprocessing_ms(content, frame):
    """What onnx2tf's model leaves to the app per frame, in ms (median):
    normalising and quantizing its input, which ours does in the graph."""
    from repopt_tf.export.litert_eval import TFLiteModel
    from repopt_tf.export.litert_eval import quantize
    from repopt_tf.export.litert_eval import time_invokes

    detail = TFLiteModel(content).input_detail
    timing = time_invokes(
        lambda: quantize(_normalised(frame), detail), warmup=2, runs=50
    )
    return timing["median_ms"]


def op_order(graph):
    """The ops of `graph` in order, CONV_2D with its padding and stride
    (`CONV_2D(S2)`: SAME, stride 2)."""
    return ", ".join(
        f"CONV_2D({op.options[0][0]}{op.options[1][0]})"
        if op.name == "CONV_2D"
        else op.name
        for op in graph.ops
    )


def _spread(values):
    import numpy as np

    return f"{min(values):.2f} / {np.median(values):.2f} / {max(values):.2f}"


if __name__ == "__main__":
    main()
