"""The whole export: convert, verify, evaluate, time and diagnose one model.

`export_model` writes into `output_dir`:
`model_fp32.tflite`, `model_int8.tflite`, `export_report.json`,
`export_report.md`, `kernel_histogram.png` and `activation_memory.png`
(the deploy check's plot).
"""

import json
from pathlib import Path

import keras
import numpy as np

from repopt_tf.atomic import write_bytes
from repopt_tf.atomic import write_text
from repopt_tf.data import make_dataset
from repopt_tf.data import representative_images
from repopt_tf.evaluation import keras_accuracy
from repopt_tf.export.convert import convert_float32
from repopt_tf.export.convert import convert_int8
from repopt_tf.export.convert import float32_model
from repopt_tf.export.deploy import deploy_check
from repopt_tf.export.deploy import deploy_markdown
from repopt_tf.export.device_form import device_model
from repopt_tf.export.diagnostics import deploy_kernels
from repopt_tf.export.diagnostics import kernel_histograms
from repopt_tf.export.diagnostics import kernel_statistics
from repopt_tf.export.diagnostics import layer_quantization_error
from repopt_tf.export.litert_eval import latency
from repopt_tf.export.litert_eval import machine_info
from repopt_tf.export.litert_eval import machine_line
from repopt_tf.export.litert_eval import output_agreement
from repopt_tf.export.litert_eval import tflite_outputs
from repopt_tf.export.verify import check_full_integer
from repopt_tf.models.rpg import materialize
from repopt_tf.models.rpg import ring_layers


def export_model(
    model,
    train_source,
    test_source,
    output_dir,
    representative=300,
    latency_runs=100,
    threads=(1, 2),
    verbose=False,
    log=print,
    crop_fraction=1.0,
    measure_top1=True,
    batch_size=None,
    fold_padding="none",
    conv_ops=True,
    run_micro=None,
    deploy_images=500,
):
    """Exports `model` and returns the report dict (also written as JSON).

    RPG models are materialized first (ring -> plain kernels), models
    trained under a mixed-precision policy become float32 twins. Top-1
    accuracy is measured when the test data has the model's classes (and
    `measure_top1`: off when the data is a stand-in); int8-vs-fp32 agreement
    (`output_agreement`) always. `crop_fraction`: see `make_dataset` (0.875
    for ImageNet checkpoints). `batch_size` (a fixed input batch, None:
    dynamic), `fold_padding` and `conv_ops` convert the model's device
    form (`device_model`). The deploy check (`deploy_check`, TFLM when
    `run_micro` allows) runs on the first `deploy_images` test images (0:
    all).
    """
    if ring_layers(model):
        model = materialize(model)
        log("RPG model materialized: ring layers -> plain Conv2D/Dense")
    twin = float32_model(model)
    if twin is not model:
        model = twin
        log("mixed-precision model: exporting its float32 twin")
    first = next(
        (
            layer
            for layer in model.layers
            if layer.__class__.__name__ != "InputLayer"
        ),
        None,
    )
    if not isinstance(
        first, keras.layers.Rescaling | keras.layers.Normalization
    ):
        log(
            "the model does not start with a Rescaling or Normalization "
            "layer: it is calibrated and evaluated on raw 0-255 pixels; put "
            "its preprocessing inside the model so the .tflite takes camera "
            "pixels"
        )
    device, folded = device_model(model, batch_size, fold_padding, conv_ops)
    if folded:
        log(f"padding folded into 'same' convs: {', '.join(folded)}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    _, size, _, channels = model.input_shape
    calibration = representative_images(
        train_source,
        size,
        representative,
        channels=channels,
        crop_fraction=crop_fraction,
    )
    log(f"converting with {len(calibration)} representative training images")
    fp32 = convert_float32(device, verbose)
    int8 = convert_int8(device, calibration, verbose)
    check_full_integer(int8)
    write_bytes(output_dir / "model_fp32.tflite", fp32)
    write_bytes(output_dir / "model_int8.tflite", int8)
    log("int8 model verified fully integer (int8 I/O, int8/int32 tensors)")

    test = make_dataset(
        test_source,
        size,
        256,
        training=False,
        channels=channels,
        crop_fraction=crop_fraction,
    )
    log(
        f"running fp32 and int8 TFLite on {test_source.num_examples} test images"
    )
    count = test_source.num_examples
    fp32_outputs, labels = tflite_outputs(
        fp32, test, lambda m: log(f"fp32 TFLite: {m}"), count
    )
    int8_outputs, _ = tflite_outputs(
        int8, test, lambda m: log(f"int8 TFLite: {m}"), count
    )
    agreement = output_agreement(fp32_outputs, int8_outputs)
    log(
        "int8 vs fp32: top-1 agreement {top1_agreement:.4f}, relative RMSE "
        "{relative_rmse:.4f}".format(**agreement)
    )
    accuracy = None
    classes = model.output_shape[-1]
    top1 = measure_top1 and test_source.num_classes == classes
    if top1:
        accuracy = {
            "keras_fp32": keras_accuracy(model, test),
            "tflite_fp32": float((fp32_outputs.argmax(-1) == labels).mean()),
            "tflite_int8": float((int8_outputs.argmax(-1) == labels).mean()),
        }
        accuracy["int8_minus_fp32"] = (
            accuracy["tflite_int8"] - accuracy["keras_fp32"]
        )
        log(
            "top-1: keras fp32 {keras_fp32:.4f}, tflite fp32 {tflite_fp32:.4f}, "
            "tflite int8 {tflite_int8:.4f} (delta {int8_minus_fp32:+.4f})".format(
                **accuracy
            )
        )
    else:
        log("top-1 not measured: the test labels are not the model's classes")

    timings = []
    for name, content in (("fp32", fp32), ("int8", int8)):
        for count in threads:
            for xnnpack in (True, False):
                timing = latency(
                    content, calibration[0], count, xnnpack, runs=latency_runs
                )
                timings.append({"model": name, **timing})
    log(f"latency measured: {len(timings)} settings x {latency_runs} runs")

    count = min(deploy_images or len(labels), len(labels))
    log(f"deploy check on {count} test images")
    deploy = deploy_check(
        output_dir / "model_int8.tflite",
        _first_images(test, count),
        labels[:count] if top1 else None,
        fp32_outputs[:count],
        run_micro=run_micro,
        threads=threads,
        latency_runs=latency_runs,
        plot_path=output_dir / "activation_memory.png",
        log=log,
    )

    errors = layer_quantization_error(device, calibration, verbose=verbose)
    kernels = kernel_statistics(model)
    histogram = output_dir / "kernel_histogram.png"
    if kernels:
        kernel_histograms({model.name: deploy_kernels(model)}, histogram)
    else:
        histogram.unlink(missing_ok=True)  # not an older export's
    report = {
        "model": model.name,
        "input_shape": list(model.input_shape[1:]),
        "representative_images": len(calibration),
        "test_images": test_source.num_examples,
        "full_integer": True,
        "device_form": {
            "batch_size": batch_size,
            "fold_padding": fold_padding,
            "folded_convs": folded,
            "conv_ops": conv_ops,
        },
        "sizes_bytes": {"fp32": len(fp32), "int8": len(int8)},
        "accuracy": accuracy,
        "agreement": agreement,
        "latency": timings,
        "quantization_error": errors,
        "kernel_statistics": kernels,
        "deploy": deploy,
        "machine": machine_info(),
    }
    write_text(output_dir / "export_report.json", json.dumps(report, indent=2))
    write_text(output_dir / "export_report.md", markdown_report(report))
    return report


def _first_images(dataset, count):
    """The first `count` images of a batched `(images, labels)` dataset."""
    images, seen = [], 0
    for batch, _ in dataset:
        images.append(batch.numpy()[: count - seen])
        seen += len(images[-1])
        if seen >= count:
            break
    return np.concatenate(images)


def markdown_report(report):
    a, agreement = report["accuracy"], report["agreement"]
    if a is None:
        top1 = {
            "keras": "not measured",
            "fp32": "not measured",
            "int8": "not measured (test labels are not the model's classes)",
        }
    else:
        top1 = {
            "keras": f"{a['keras_fp32']:.4f}",
            "fp32": f"{a['tflite_fp32']:.4f}",
            "int8": f"{a['tflite_int8']:.4f} "
            f"({100 * a['int8_minus_fp32']:+.2f} pts)",
        }
    lines = [
        f"# Export report: {report['model']}",
        "",
        f"Input {report['input_shape']} (raw pixels), "
        f"{report['representative_images']} representative images, "
        f"{report['test_images']} test images. Machine: "
        f"{machine_line(report['machine'])}.",
        "",
        "| model | size (KB) | top-1 |",
        "| --- | --- | --- |",
        f"| Keras fp32 | - | {top1['keras']} |",
        f"| TFLite fp32 | {report['sizes_bytes']['fp32'] / 1024:.0f} | "
        f"{top1['fp32']} |",
        f"| TFLite int8 | {report['sizes_bytes']['int8'] / 1024:.0f} | "
        f"{top1['int8']} |",
        "",
        f"int8 vs fp32 outputs: top-1 agreement "
        f"{agreement['top1_agreement']:.4f}, relative RMSE "
        f"{agreement['relative_rmse']:.4f}.",
        "",
        "Batch-1 latency (ms):",
        "",
        "| model | threads | XNNPACK | median | p90 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for t in report["latency"]:
        lines.append(
            f"| {t['model']} | {t['threads']} | "
            f"{'on' if t['xnnpack'] else 'off'} | "
            f"{t['median_ms']:.3f} | {t['p90_ms']:.3f} |"
        )
    lines += [
        "",
        "Worst per-layer int8 error (RMS error / quantization step):",
        "",
        "| layer | op | rmse/scale | max abs error |",
        "| --- | --- | --- | --- |",
    ]
    for row in report["quantization_error"][:10]:
        lines.append(
            f"| {row['layer']} | {row['op']} | {row['rmse/scale']:.3f} "
            f"| {row['max_abs_error']:.4f} |"
        )
    if not report["kernel_statistics"]:
        lines += ["", "The model has no 3x3 convs: no kernel statistics.", ""]
        return "\n".join(lines) + "\n" + deploy_markdown(report["deploy"])
    lines += [
        "",
        "3x3 kernel std as quantized (BN folded): overall / centre / surround:",
        "",
        "| layer | std | centre | surround |",
        "| --- | --- | --- | --- |",
    ]
    for row in report["kernel_statistics"]:
        lines.append(
            f"| {row['layer']} | {row['std']:.4f} | "
            f"{row['std_centre']:.4f} | {row['std_surround']:.4f} |"
        )
    lines += ["", "![kernel histogram](kernel_histogram.png)", ""]
    return "\n".join(lines) + "\n" + deploy_markdown(report["deploy"])
