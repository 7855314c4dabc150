"""int8 PTQ of one model beside its fp32 TFLite form (Ding et al., Table 8).

`ptq_row` converts a model to full-integer int8 twice, with per-channel and
with per-tensor weight scales, and compares each with the fp32 TFLite model
on the same images: top-1, int8-vs-fp32 top-1 agreement and output RMSE
relative to the fp32 outputs' RMS, the worst per-layer int8 error
(QuantizationDebugger RMSE in quantization steps), the largest calibrated
activation range, and statistics of the block kernels as int8 sees them
(BN folded): mean std, centre/surround std (Table 11) and the largest
|w| / std. `ptq_table` writes rows as markdown. `benchmarks/table8_ptq.py`
and `benchmarks/paper_tables.py` use them.
"""

import numpy as np

from repopt_tf.data import make_dataset
from repopt_tf.data import representative_images
from repopt_tf.export.convert import convert_float32
from repopt_tf.export.convert import convert_int8
from repopt_tf.export.diagnostics import kernel_statistics
from repopt_tf.export.diagnostics import layer_quantization_error
from repopt_tf.export.litert_eval import output_agreement
from repopt_tf.export.litert_eval import tflite_outputs
from repopt_tf.markdown import table


def kernel_summary(model):
    """Means over the block kernels (stem excluded) of the std overall, at
    the centre tap and at the surrounding taps, their ratio, and the largest
    |w| / std (Table 11)."""
    rows = kernel_statistics(model)[1:]
    return {
        "kernel_std": float(np.mean([r["std"] for r in rows])),
        "std_centre": float(np.mean([r["std_centre"] for r in rows])),
        "std_surround": float(np.mean([r["std_surround"] for r in rows])),
        "centre_surround": float(
            np.mean([r["std_centre"] / r["std_surround"] for r in rows])
        ),
        "max_tail": max(r["max_abs_over_std"] for r in rows),
    }


def ptq_row(
    label,
    model,
    train,
    test,
    representative=300,
    crop_fraction=1.0,
    trained=True,
    log=None,
):
    """One model's fp32 and int8 PTQ numbers (module docstring) as a dict;
    top-1 only when `trained` and the test data has the model's classes."""
    size, channels = model.input_shape[1], model.input_shape[-1]
    calibration = representative_images(
        train, size, representative, channels, crop_fraction
    )
    images = make_dataset(
        test,
        size,
        128,
        training=False,
        channels=channels,
        crop_fraction=crop_fraction,
    )
    fp32, labels = tflite_outputs(convert_float32(model), images)
    row = {"model": label, "name": model.name, **kernel_summary(model)}
    with_labels = trained and test.num_classes == model.output_shape[-1]
    row["fp32_top1"] = (
        float((fp32.argmax(-1) == labels).mean()) if with_labels else None
    )
    for scheme, per_channel in (("per_channel", True), ("per_tensor", False)):
        int8, _ = tflite_outputs(
            convert_int8(model, calibration, per_channel=per_channel), images
        )
        row[f"{scheme}_top1"] = (
            float((int8.argmax(-1) == labels).mean()) if with_labels else None
        )
        agreement = output_agreement(fp32, int8)
        row[f"{scheme}_agreement"] = agreement["top1_agreement"]
        row[f"{scheme}_relative_rmse"] = agreement["relative_rmse"]
        errors = layer_quantization_error(
            model, calibration, per_channel=per_channel
        )
        row[f"{scheme}_worst_layer"] = errors[0]["layer"]
        row[f"{scheme}_worst_rmse"] = errors[0]["rmse/scale"]
        ranges = {  # conv (+ReLU) outputs, as calibrated
            r["layer"]: r["range"] for r in errors if r["op"] == "CONV_2D"
        }
        row["max_activation_range"] = max(ranges.values())
        row["activation_ranges"] = ranges
    if log:
        log(f"{label}: done")
    return row


def _points(row, scheme):
    if row["fp32_top1"] is None:
        return "-", "-"
    top1 = row[f"{scheme}_top1"]
    return f"{top1:.4f}", f"{100 * (top1 - row['fp32_top1']):+.2f}"


def ptq_table(rows, caption):
    """Markdown table of `ptq_row` dicts."""
    header = [
        "model",
        "fp32 top-1",
        "int8 per-channel (delta)",
        "int8 per-tensor (delta)",
        "agreement pc / pt",
        "output rel. RMSE pc / pt",
        "worst layer error pc / pt (steps)",
        "max activation range",
        "kernel std",
        "centre/surround",
        "max abs(w)/std",
    ]
    return "\n".join([caption, "", *table(header, map(_ptq_cells, rows))])


def _ptq_cells(r):
    pc, pt = _points(r, "per_channel"), _points(r, "per_tensor")
    fp32 = "-" if r["fp32_top1"] is None else f"{r['fp32_top1']:.4f}"

    def pair(key, digits):
        return (
            f"{r[f'per_channel_{key}']:.{digits}f} / "
            f"{r[f'per_tensor_{key}']:.{digits}f}"
        )

    return [
        r["model"],
        fp32,
        f"{pc[0]} ({pc[1]})",
        f"{pt[0]} ({pt[1]})",
        pair("agreement", 3),
        pair("relative_rmse", 3),
        pair("worst_rmse", 2),
        f"{r['max_activation_range']:.1f}",
        f"{r['kernel_std']:.4f}",
        f"{r['centre_surround']:.2f}",
        f"{r['max_tail']:.1f}",
    ]
