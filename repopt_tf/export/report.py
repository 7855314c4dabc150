"""The whole export: convert, verify, evaluate, time and diagnose one model.

`export_model` writes into `output_dir`, as one set (`export_set`):
`model_fp32.tflite`, `model_int8.tflite`, `export_report.json`,
`export_report.md`, `kernel_histogram.png`, `activation_memory.png` (the
deploy check's plot) and, last, `export_manifest.json`.
"""

import dataclasses
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
from repopt_tf.export.device_form import device_model
from repopt_tf.export.diagnostics import deploy_kernels
from repopt_tf.export.diagnostics import kernel_histograms
from repopt_tf.export.diagnostics import kernel_statistics
from repopt_tf.export.diagnostics import layer_quantization_error
from repopt_tf.export.export_set import source_record
from repopt_tf.export.export_set import staged_export
from repopt_tf.export.litert_eval import latency
from repopt_tf.export.litert_eval import machine_info
from repopt_tf.export.litert_eval import output_agreement
from repopt_tf.export.litert_eval import tflite_outputs
from repopt_tf.export.options import ExportOptions
from repopt_tf.export.render import markdown_report
from repopt_tf.export.verify import check_full_integer
from repopt_tf.finite import check_model_finite
from repopt_tf.models.rpg import materialize
from repopt_tf.models.rpg import ring_layers


def export_model(
    model,
    train_source,
    test_source,
    output_dir,
    log=print,
    source=None,
    options=None,
    **settings,
):
    """Exports `model` and returns the report dict (also written as JSON).

    RPG models are materialized first (ring -> plain kernels), models
    trained under a mixed-precision policy become float32 twins. Top-1
    accuracy is measured when the model is a classifier, the test data has
    its classes (and `measure_top1`: off when the data is a stand-in);
    int8-vs-fp32 agreement (`output_agreement`) always, on the first
    output. A fixed `batch_size` is checked by `check_fixed_batch`. The
    files are written as one set (`staged_export`): a kill leaves the old
    set or the new one, and the report and manifest name `source` (the
    model file) and its SHA-256.

    Args:
        model: a Keras model taking raw 0-255 pixels.
        train_source: a `repopt_tf.data.Source` of calibration images.
        test_source: a `repopt_tf.data.Source` of evaluation images.
        output_dir: where the set is written.
        log: a function taking a progress line.
        source: the model's file, recorded with its hash (or None).
        options: an `ExportOptions`; or its fields as keywords
            (`representative=300`, `batch_size=1`, ...).

    Returns:
        The report dict (`export_report.json`).

    Raises:
        ValueError: a model or setting that cannot be exported, named.

    Examples:
        >>> import tempfile
        >>> from repopt_tf import build_model, export_model
        >>> from repopt_tf.data import load_source
        >>> model = build_model("repopt_vgg_tiny", 10, (28, 28, 1))
        >>> train = load_source("fashion_mnist", "train", limit=64)
        >>> test = load_source("fashion_mnist", "test", limit=32)
        >>> report = export_model(model, train, test, tempfile.mkdtemp(),
        ...     log=lambda line: None, representative=16, latency_runs=2,
        ...     threads=(1,), deploy_images=0)
        >>> report["full_integer"], report["outputs"][0]["classifier"]
        (True, True)

    References:
        Jacob et al., 2018, "Quantization and Training of Neural Networks
        for Efficient Integer-Arithmetic-Only Inference",
        https://arxiv.org/abs/1712.05877 (the int8 scheme TFLite uses);
        Ding et al., 2023, Sec. 4.4 (RepOpt-VGG's int8 accuracy),
        https://arxiv.org/abs/2205.15242.
    """
    options = dataclasses.replace(options or ExportOptions(), **settings)
    model = exportable(model, log)
    outputs = describe_outputs(model, log)
    check_fixed_batch(model, options.batch_size, options.representative)
    record = source_record(source)
    with staged_export(output_dir, record) as folder:
        report = _measure(
            folder, model, outputs, train_source, test_source, options, log
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


def _measure(folder, model, outputs, train_source, test_source, options, log):
    """The export's steps, writing into `folder` (staging); returns the
    report's measured sections."""
    device, folded = device_model(
        model, options.batch_size, options.fold_padding, options.conv_ops
    )
    if folded:
        log(f"padding folded into 'same' convs: {', '.join(folded)}")
    calibration, fp32, int8 = _convert(
        folder, model, device, train_source, options, log
    )
    test, fp32_outputs, labels, agreement, accuracy = _evaluate(
        model, outputs, fp32, int8, test_source, options, log
    )
    count = min(options.deploy_images or len(labels), len(labels))
    log(f"deploy check on {count} test images")
    deploy = deploy_check(
        folder / "model_int8.tflite",
        _first_images(test, count),
        labels[:count] if accuracy else None,
        fp32_outputs[:count],
        run_micro=options.run_micro,
        threads=options.threads,
        latency_runs=options.latency_runs,
        plot_path=folder / "activation_memory.png",
        log=log,
    )
    return {
        "model": model.name,
        "input_shape": list(model.input_shape[1:]),
        "representative_images": len(calibration),
        "test_images": test_source.num_examples,
        "full_integer": True,
        "device_form": {
            "batch_size": options.batch_size,
            "fold_padding": options.fold_padding,
            "folded_convs": folded,
            "conv_ops": options.conv_ops,
        },
        "sizes_bytes": {"fp32": len(fp32), "int8": len(int8)},
        "sha256": {
            "fp32": hashlib.sha256(fp32).hexdigest(),
            "int8": hashlib.sha256(int8).hexdigest(),
        },
        "accuracy": accuracy,
        "agreement": agreement,
        "latency": _latency(fp32, int8, calibration[0], options, log),
        **_diagnose(folder, model, device, calibration, options.verbose),
        "deploy": deploy,
        "machine": machine_info(),
    }


def _convert(folder, model, device, train_source, options, log):
    """Calibrates, converts and verifies; writes both `.tflite` files;
    returns `(calibration images, fp32 bytes, int8 bytes)`."""
    _, size, _, channels = model.input_shape
    calibration = representative_images(
        train_source,
        size,
        options.representative,
        channels=channels,
        crop_fraction=options.crop_fraction,
    )
    log(f"converting with {len(calibration)} representative training images")
    fp32 = convert_float32(device, options.verbose)
    int8 = convert_int8(device, calibration, options.verbose)
    check_full_integer(int8)
    write_bytes(folder / "model_fp32.tflite", fp32)
    write_bytes(folder / "model_int8.tflite", int8)
    log("int8 model verified fully integer (int8 I/O, int8/int32 tensors)")
    return calibration, fp32, int8


def _evaluate(model, outputs, fp32, int8, test_source, options, log):
    """fp32 and int8 TFLite on the test images: `(test dataset, fp32
    outputs, labels, agreement, accuracy or None)`."""
    _, size, _, channels = model.input_shape
    test = make_dataset(
        test_source,
        size,
        256,
        training=False,
        channels=channels,
        crop_fraction=options.crop_fraction,
    )
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
        options.measure_top1
        and outputs[0]["classifier"]
        and test_source.num_classes == model.output_shape[-1]
    )
    if not top1:
        log("top-1 not measured: the test labels are not the model's classes")
        return test, fp32_outputs, labels, agreement, None
    accuracy = _accuracy(model, test, fp32_outputs, int8_outputs, labels)
    log(
        "top-1: keras fp32 {keras_fp32:.4f}, tflite fp32 {tflite_fp32:.4f}, "
        "tflite int8 {tflite_int8:.4f} (delta {int8_minus_fp32:+.4f})".format(
            **accuracy
        )
    )
    return test, fp32_outputs, labels, agreement, accuracy


def _latency(fp32, int8, sample, options, log):
    """Per-invoke latency rows: fp32/int8 x threads x XNNPACK on/off."""
    timings = []
    for name, content in (("fp32", fp32), ("int8", int8)):
        for count in options.threads:
            for xnnpack in (True, False):
                timing = latency(
                    content, sample, count, xnnpack, runs=options.latency_runs
                )
                timings.append({"model": name, **timing})
    log(
        f"latency measured: {len(timings)} settings x "
        f"{options.latency_runs} runs, batch {options.batch_size or 1} "
        "per invoke"
    )
    return timings


def _diagnose(folder, model, device, calibration, verbose):
    """Per-layer int8 error and 3x3 kernel statistics (and histogram)."""
    errors = layer_quantization_error(device, calibration, verbose=verbose)
    kernels = kernel_statistics(model)
    if kernels:
        histograms = {model.name: deploy_kernels(model)}
        kernel_histograms(histograms, folder / "kernel_histogram.png")
    return {"quantization_error": errors, "kernel_statistics": kernels}


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
