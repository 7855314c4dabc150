"""The export report as Markdown (`markdown_report`), apart from the
measuring in `repopt_tf.export.report`."""

from repopt_tf.export.deploy_render import deploy_markdown
from repopt_tf.export.litert_eval import machine_line
from repopt_tf.markdown import table


def markdown_report(report):
    """The export report (`export_model`'s report.json) as Markdown."""
    lines = [
        f"# Export report: {report['model']}",
        "",
        f"Input {report['input_shape']} (raw pixels), "
        f"{report['representative_images']} representative images, "
        f"{report['test_images']} test images. Machine: "
        f"{machine_line(report['machine'])}.",
        "",
        *_provenance(report),
        *_accuracy_section(report),
        *_latency_section(report),
        *_quantization_error_section(report),
        *_kernel_section(report),
    ]
    return "\n".join(lines) + "\n" + deploy_markdown(report["deploy"])


def _top1_cells(report):
    """Keras fp32, TFLite fp32 and int8 top-1 as table cells."""
    a = report["accuracy"]
    if a is None:
        outputs = report.get("outputs") or [{"classifier": True}]
        why = (
            "test labels are not the model's classes"
            if outputs[0]["classifier"]
            else "not a classifier"
        )
        return "not measured", "not measured", f"not measured ({why})"
    return (
        f"{a['keras_fp32']:.4f}",
        f"{a['tflite_fp32']:.4f}",
        f"{a['tflite_int8']:.4f} ({100 * a['int8_minus_fp32']:+.2f} pts)",
    )


def _accuracy_section(report):
    keras, fp32, int8 = _top1_cells(report)
    sizes, agreement = report["sizes_bytes"], report["agreement"]
    rows = [
        ["Keras fp32", "-", keras],
        ["TFLite fp32", f"{sizes['fp32'] / 1024:.0f}", fp32],
        ["TFLite int8", f"{sizes['int8'] / 1024:.0f}", int8],
    ]
    return [
        *table(["model", "size (KB)", "top-1"], rows),
        "",
        f"int8 vs fp32 outputs: top-1 agreement "
        f"{agreement['top1_agreement']:.4f}, relative RMSE "
        f"{agreement['relative_rmse']:.4f}.",
        "",
    ]


def _latency_section(report):
    rows = [
        [
            t["model"],
            t["threads"],
            "on" if t["xnnpack"] else "off",
            f"{t['median_ms']:.3f}",
            f"{t['p90_ms']:.3f}",
        ]
        for t in report["latency"]
    ]
    header = ["model", "threads", "XNNPACK", "median", "p90"]
    batch = report["device_form"]["batch_size"] or 1
    return [
        f"Latency per invoke, batch {batch} (ms):",
        "",
        *table(header, rows),
    ]


def _quantization_error_section(report):
    rows = [
        [
            row["layer"],
            row["op"],
            f"{row['rmse/scale']:.3f}",
            f"{row['max_abs_error']:.4f}",
        ]
        for row in report["quantization_error"][:10]
    ]
    return [
        "",
        "Worst per-layer int8 error (RMS error / quantization step):",
        "",
        *table(["layer", "op", "rmse/scale", "max abs error"], rows),
    ]


def _kernel_section(report):
    if not report["kernel_statistics"]:
        return ["", "The model has no 3x3 convs: no kernel statistics.", ""]
    rows = [
        [
            row["layer"],
            f"{row['std']:.4f}",
            f"{row['std_centre']:.4f}",
            f"{row['std_surround']:.4f}",
        ]
        for row in report["kernel_statistics"]
    ]
    return [
        "",
        "3x3 kernel std as quantized (BN folded): overall / centre / surround:",
        "",
        *table(["layer", "std", "centre", "surround"], rows),
        "",
        "![kernel histogram](kernel_histogram.png)",
        "",
    ]


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
