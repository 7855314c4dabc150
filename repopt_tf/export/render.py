"""The export report as Markdown (`markdown_report`), apart from the
measuring in `repopt_tf.export.report`."""

from repopt_tf.export.deploy_render import deploy_markdown
from repopt_tf.export.litert_eval import machine_line


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
