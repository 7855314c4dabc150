"""The whole export: convert, verify, evaluate, time and diagnose one model.

`export_model` writes into `output_dir`, as one set (`export_set`):
`model_fp32.tflite`, `model_int8.tflite`, `export_report.json`,
`export_report.md`, `kernel_histogram.png`, `activation_memory.png` (the
deploy check's plot) and, last, `export_manifest.json`.
"""

import hashlib
import json

import keras
import numpy as np

from repopt_tf.atomic import write_bytes
from repopt_tf.atomic import write_text
from repopt_tf.data import make_dataset
from repopt_tf.data import representative_images
from repopt_tf.evaluation import keras_accuracy
from repopt_tf.export.batch_limits import check_fixed_batch
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
from repopt_tf.export.export_set import source_record
from repopt_tf.export.export_set import staged_export
from repopt_tf.export.litert_eval import latency
from repopt_tf.export.litert_eval import machine_info
from repopt_tf.export.litert_eval import machine_line
from repopt_tf.export.litert_eval import output_agreement
from repopt_tf.export.litert_eval import tflite_outputs
from repopt_tf.export.verify import check_full_integer
from repopt_tf.finite import check_model_finite
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
    source=None,
):
    """Exports `model` and returns the report dict (also written as JSON).

    RPG models are materialized first (ring -> plain kernels), models
    trained under a mixed-precision policy become float32 twins. Top-1
    accuracy is measured when the model is a classifier, the test data has
    its classes (and `measure_top1`: off when the data is a stand-in);
    int8-vs-fp32 agreement (`output_agreement`) always, on the first
    output. `crop_fraction`: see `make_dataset` (0.875 for ImageNet
    checkpoints). `batch_size` (a fixed input batch, None: dynamic; checked
    by `check_fixed_batch`), `fold_padding` and `conv_ops` convert the
    model's device form (`device_model`). The deploy check
    (`deploy_check`, TFLM when `run_micro` allows) runs on the first
    `deploy_images` test images (0: all). The files are written as one set
    (`staged_export`): a kill leaves the old set or the new one, and the
    report and manifest name `source` (the model file) and its SHA-256.
    """
    model = exportable(model, log)
    outputs = describe_outputs(model, log)
    check_fixed_batch(model, batch_size, representative)
    record = source_record(source)
    with staged_export(output_dir, record) as folder:
        report = _export_into(
            folder,
            model,
            train_source,
            test_source,
            dict(
                representative=representative,
                latency_runs=latency_runs,
                threads=threads,
                verbose=verbose,
                log=log,
                crop_fraction=crop_fraction,
                measure_top1=measure_top1 and outputs[0]["classifier"],
                batch_size=batch_size,
                fold_padding=fold_padding,
                conv_ops=conv_ops,
                run_micro=run_micro,
                deploy_images=deploy_images,
            ),
        )
        report = {"source": record, "outputs": outputs, **report}
        write_text(folder / "export_report.json", json.dumps(report, indent=2))
        write_text(folder / "export_report.md", markdown_report(report))
    return report


def exportable(model, log=print):
    """`model` as the converter takes it: RPG rings materialized, a
    mixed-precision model's float32 twin, its weights checked finite."""
    check_model_finite(model, f"model {model.name}")
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
    return model


def describe_outputs(model, log=print):
    """One row per model output: `{name, shape, classifier, measured}`.

    Only the first output is evaluated (agreement, top-1, deploy check);
    a classifier's output is `(batch, classes)`. What is not measured is
    said in the log and kept in the report.
    """
    rows = []
    for index, tensor in enumerate(model.outputs):
        shape = list(tensor.shape[1:])
        rows.append(
            {
                "name": tensor.name,
                "shape": shape,
                "classifier": len(shape) == 1,
                "measured": index == 0,
            }
        )
    if len(rows) > 1:
        log(
            f"the model has {len(rows)} outputs: all are converted, only the "
            f"first ({rows[0]['name']}, {rows[0]['shape']}) is evaluated; "
            f"not measured: {', '.join(r['name'] for r in rows[1:])}"
        )
    if not rows[0]["classifier"]:
        log(
            f"the first output has shape {rows[0]['shape']}: not a "
            "classifier, so top-1 is not measured; int8-vs-fp32 agreement "
            "compares the whole output"
        )
    return rows


def _export_into(folder, model, train_source, test_source, options):
    """Converts, evaluates and checks; writes into `folder` (staging) and
    returns the report's measured sections."""
    log, verbose = options["log"], options["verbose"]
    batch_size, threads = options["batch_size"], options["threads"]
    device, folded = device_model(
        model, batch_size, options["fold_padding"], options["conv_ops"]
    )
    if folded:
        log(f"padding folded into 'same' convs: {', '.join(folded)}")
    _, size, _, channels = model.input_shape
    images = dict(channels=channels, crop_fraction=options["crop_fraction"])
    calibration = representative_images(
        train_source, size, options["representative"], **images
    )
    log(f"converting with {len(calibration)} representative training images")
    fp32 = convert_float32(device, verbose)
    int8 = convert_int8(device, calibration, verbose)
    check_full_integer(int8)
    write_bytes(folder / "model_fp32.tflite", fp32)
    write_bytes(folder / "model_int8.tflite", int8)
    log("int8 model verified fully integer (int8 I/O, int8/int32 tensors)")

    test = make_dataset(test_source, size, 256, training=False, **images)
    count = test_source.num_examples
    log(f"running fp32 and int8 TFLite on {count} test images")
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
    top1 = (
        options["measure_top1"]
        and test_source.num_classes == model.output_shape[-1]
    )
    accuracy = None
    if top1:
        accuracy = _accuracy(model, test, fp32_outputs, int8_outputs, labels)
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
                    content,
                    calibration[0],
                    count,
                    xnnpack,
                    runs=options["latency_runs"],
                )
                timings.append({"model": name, **timing})
    log(
        f"latency measured: {len(timings)} settings x "
        f"{options['latency_runs']} runs, batch {batch_size or 1} per invoke"
    )

    count = min(options["deploy_images"] or len(labels), len(labels))
    log(f"deploy check on {count} test images")
    deploy = deploy_check(
        folder / "model_int8.tflite",
        _first_images(test, count),
        labels[:count] if top1 else None,
        fp32_outputs[:count],
        run_micro=options["run_micro"],
        threads=threads,
        latency_runs=options["latency_runs"],
        plot_path=folder / "activation_memory.png",
        log=log,
    )

    errors = layer_quantization_error(device, calibration, verbose=verbose)
    kernels = kernel_statistics(model)
    if kernels:
        histograms = {model.name: deploy_kernels(model)}
        kernel_histograms(histograms, folder / "kernel_histogram.png")
    return {
        "model": model.name,
        "input_shape": list(model.input_shape[1:]),
        "representative_images": len(calibration),
        "test_images": test_source.num_examples,
        "full_integer": True,
        "device_form": {
            "batch_size": batch_size,
            "fold_padding": options["fold_padding"],
            "folded_convs": folded,
            "conv_ops": options["conv_ops"],
        },
        "sizes_bytes": {"fp32": len(fp32), "int8": len(int8)},
        "sha256": {
            "fp32": hashlib.sha256(fp32).hexdigest(),
            "int8": hashlib.sha256(int8).hexdigest(),
        },
        "accuracy": accuracy,
        "agreement": agreement,
        "latency": timings,
        "quantization_error": errors,
        "kernel_statistics": kernels,
        "deploy": deploy,
        "machine": machine_info(),
    }


def _accuracy(model, test, fp32_outputs, int8_outputs, labels):
    accuracy = {
        "keras_fp32": keras_accuracy(model, test),
        "tflite_fp32": float((fp32_outputs.argmax(-1) == labels).mean()),
        "tflite_int8": float((int8_outputs.argmax(-1) == labels).mean()),
    }
    accuracy["int8_minus_fp32"] = (
        accuracy["tflite_int8"] - accuracy["keras_fp32"]
    )
    return accuracy


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
    outputs = report.get("outputs") or [{"classifier": True}]
    if a is None:
        why = (
            "test labels are not the model's classes"
            if outputs[0]["classifier"]
            else "not a classifier"
        )
        top1 = {
            "keras": "not measured",
            "fp32": "not measured",
            "int8": f"not measured ({why})",
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
        *_provenance(report),
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
        f"Latency per invoke, batch "
        f"{report['device_form']['batch_size'] or 1} (ms):",
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


def _provenance(report):
    """Markdown lines naming the model file and any unmeasured outputs."""
    lines = []
    source = report.get("source")
    if source:
        lines += [
            f"Made from `{source['path']}` (SHA-256 {source['sha256']}).",
            "",
        ]
    unmeasured = [o for o in report.get("outputs", []) if not o["measured"]]
    if unmeasured:
        names = ", ".join(f"{o['name']} {o['shape']}" for o in unmeasured)
        lines += [
            f"Converted but not measured (only the first output is): {names}.",
            "",
        ]
    return lines
