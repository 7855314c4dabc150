"""The deploy check's section as Markdown, one-line summaries and the
activation-memory plot: rendering, apart from `repopt_tf.export.deploy`'s
measuring."""

from pathlib import Path

import numpy as np

from repopt_tf.markdown import table


def activation_plot(plan, path, title=""):
    """A PNG of the activation bytes alive at each op, and each op's output,
    along the depth, with the peak marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = plan["per_op"]
    x = np.arange(len(rows))
    fig, axis = plt.subplots(figsize=(max(6.0, 0.18 * len(rows)), 3.6))
    axis.bar(
        x,
        [r["output_bytes"] / 1024 for r in rows],
        color="tab:gray",
        label="op output",
    )
    axis.plot(
        x,
        [r["live_bytes"] / 1024 for r in rows],
        color="tab:red",
        marker=".",
        label="alive at the op (planned)",
    )
    peak = max(range(len(rows)), key=lambda i: rows[i]["live_bytes"])
    axis.annotate(
        f"peak {rows[peak]['live_bytes'] / 1024:.1f} KiB at "
        f"{rows[peak]['op']} #{peak}",
        (peak, rows[peak]["live_bytes"] / 1024),
        textcoords="offset points",
        xytext=(10, -12),
        fontsize=8,
    )
    axis.set_xticks(x)
    axis.set_xticklabels([r["op"] for r in rows], rotation=90, fontsize=6)
    axis.set_ylabel("KiB (int8 activations)")
    axis.set_title(f"Activation memory along the depth {title}".strip())
    axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def deploy_markdown(section):
    """The deploy section of `export_report.md`."""
    lines = ["## Deploy check", "", _micro_line(section["micro"])]
    lines += ["", "Flags:", ""]
    lines += [f"- {f['message']}" for f in section["flags"]] or ["- none"]
    inventory = ", ".join(
        f"{o['op']} v{o['version']} x{o['count']}" for o in section["ops"]
    )
    lines += ["", f"Ops ({section['op_count']}): {inventory}.", ""]
    lines += _accuracy_lines(section["accuracy"])
    lines += _memory_lines(section["memory"])
    lines += _latency_lines(section)
    if section.get("plot"):
        lines += ["", f"![activation memory]({Path(section['plot']).name})"]
    return "\n".join(lines + [""])


def _micro_line(tflm):
    """What TFLite Micro did with the model, in one paragraph."""
    if not tflm.get("loads"):
        return f"TFLite Micro: {micro_status(tflm)}."
    vs, first = tflm["vs_reference"], tflm["first_difference"]
    detail = ""
    if vs and not tflm["bit_exact"]:
        detail = (
            f" (up to {vs['max_lsb']} LSB on "
            f"{100 * vs['outputs_differing']:.2f}% of outputs, top-1 "
            f"differs on {100 * vs['top1_disagreement']:.2f}% of images"
            + (f"; first at {first['op']} #{first['index']}" if first else "")
            + ")"
        )
    return (
        f"TFLite Micro {tflm['version']} ({tflm['build']}): loads, runs, "
        f"{micro_status(tflm)}{detail} on {tflm['images']} images. "
        f"Smallest working arena {tflm['arena']['arena_bytes']:,} B (one "
        f"byte less fails); TFLM reports head "
        f"{tflm['arena']['head_bytes']:,} B + tail "
        f"{tflm['arena']['tail_bytes']:,} B once allocated (the tail, "
        "structs and pointers, is smaller on a 32-bit MCU)."
    )


def _accuracy_lines(accuracy):
    rows = [
        ["XNNPACK (LiteRT default)", describe_top1(accuracy["xnnpack"])],
        ["LiteRT reference", describe_top1(accuracy["reference"])],
    ]
    if "micro" in accuracy:
        rows.append(["TFLite Micro", describe_top1(accuracy["micro"])])
    lines = [
        f"int8 top-1 on {accuracy['images']} images:",
        "",
        *table(["kernels", "int8"], rows),
    ]
    vs = accuracy.get("xnnpack_vs_reference")
    if vs:
        lines += [
            "",
            f"XNNPACK vs reference kernels: max {vs['max_lsb']} LSB, "
            f"{100 * vs['outputs_differing']:.2f}% of outputs differ, top-1 "
            f"differs on {100 * vs['top1_disagreement']:.2f}% of images.",
        ]
    return lines


def _memory_lines(memory):
    rows = [
        ("flash: .tflite file", memory["file_bytes"]),
        ("flash: weights in it", memory["weights_bytes"]),
    ]
    if memory["weights_outside_flatbuffer_bytes"]:
        outside = memory["weights_outside_flatbuffer_bytes"]
        rows.append(("weights outside the flatbuffer", outside))
    planned = f"peak activations, planned ({memory['peak_op']})"
    rows.append((planned, memory["peak_activation_bytes"]))
    rss = memory["litert_peak_rss_bytes"]
    for kernels, label in (
        ("xnnpack", "XNNPACK"),
        ("reference", "reference kernels"),
    ):
        if rss[kernels] is not None:
            rows.append((f"LiteRT peak RSS over idle, {label}", rss[kernels]))
    if memory["tflm_arena_bytes"]:
        rows.append(("TFLM arena (smallest)", memory["tflm_arena_bytes"]))
    cells = [(item, f"{value:,}") for item, value in rows]
    return ["", "Memory bill:", "", *table(["item", "bytes"], cells)]


def _latency_lines(section):
    rows = [
        [
            t["runtime"],
            t["threads"],
            f"{t['median_ms']:.3f}",
            f"{t['p90_ms']:.3f}",
            t["runs"],
        ]
        for t in section["latency_host"]
    ]
    return [
        "",
        f"Latency on this host ({section['host']}; a device is slower), "
        f"per invoke of batch {section.get('batch', 1)}, ms:",
        "",
        *table(["runtime", "threads", "median", "p90", "runs"], rows),
    ]


def describe_top1(result):
    """`top-1 0.8880` or `agreement with fp32 0.9950` (`_top1`'s result),
    or why there is none."""
    if "error" in result:
        return "not run (the kernels abort on this model)"
    if "top1" in result:
        return f"top-1 {result['top1']:.4f}"
    return f"agreement with fp32 {result['fp32_agreement']:.4f}"


def micro_status(tflm):
    """TFLM's verdict in a few words."""
    if "skipped" in tflm:
        return f"not run ({tflm['skipped']})"
    if not tflm["loads"]:
        return f"fails to load: {tflm['error']}"
    if tflm["bit_exact"] is None:
        return "runs (no reference-kernel outputs to compare with)"
    if tflm["bit_exact"]:
        return "bit-exact vs reference kernels"
    return (
        f"within {tflm['vs_reference']['max_lsb']} LSB of the reference kernels"
    )


def deploy_summary(section):
    """One line for the console."""
    tflm, memory = section["micro"], section["memory"]
    accuracy = section["accuracy"]
    arena = memory["tflm_arena_bytes"]
    return (
        f"deploy check: TFLM {micro_status(tflm)}"
        + (f", arena {arena:,} B" if arena else "")
        + f"; peak activations {memory['peak_activation_bytes']:,} B, flash "
        f"{memory['file_bytes']:,} B; int8 "
        f"{describe_top1(accuracy['reference'])} (reference kernels) / "
        f"{describe_top1(accuracy['xnnpack'])} (XNNPACK) on "
        f"{accuracy['images']} images; {len(section['flags'])} flags"
    )
