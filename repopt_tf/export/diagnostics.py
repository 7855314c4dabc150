"""Quantization diagnostics (Ding et al. §4.4, Fig. 3, Table 11).

- `kernel_statistics`: per 3x3 block kernel, the std over all taps, the
  centre tap and the 8 surrounding taps, and the largest |w| in stds (the
  tail a per-tensor int8 scale must cover), after folding the following BN
  (what int8 quantizes) and, for BN models, before it.
- `layer_quantization_error`: TF's QuantizationDebugger comparing each int8
  layer's output with its float counterpart on the same inputs.
- `kernel_histograms`: a PNG grid of kernel histograms (layers x models,
  centre and surround taps apart, log counts, shared ranges).
"""

import csv
import io
import re

import keras
import numpy as np
import tensorflow as tf

from repopt_tf.export.convert import int8_converter
from repopt_tf.models import block_convs
from repopt_tf.models.conv_layout import grouped_layout
from repopt_tf.models.family import is_3x3_conv
from repopt_tf.models.family import iter_layers
from repopt_tf.models.fusion import fold_layer
from repopt_tf.models.graph import consumers
from repopt_tf.quiet import quiet

_CONVS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def _std_parts(kernel):
    centre = kernel[1, 1]
    mask = np.ones((3, 3), bool)
    mask[1, 1] = False
    return {
        "std": float(kernel.std()),
        "std_centre": float(centre.std()),
        "std_surround": float(kernel[mask].std()),
        "max_abs_over_std": float(np.abs(kernel).max() / kernel.std()),
    }


def kernel_convs(model):
    """The convs whose kernels are diagnosed: the block convs of a library
    model (`block_convs`), else every 3x3 conv (depthwise too)."""
    return block_convs(model) or [
        layer
        for layer in iter_layers(model)
        if is_3x3_conv(layer, ".*", _CONVS)
    ]


def deploy_kernels(model):
    """`{layer: kernel}` of `kernel_convs` as int8 sees them (a BN that
    takes the conv's output folded in), in the `(3, 3, Cin per group,
    Cout)` layout (`grouped_layout`)."""
    kernels = {}
    users = consumers(model)
    for conv in kernel_convs(model):
        kernel = grouped_layout(conv, conv.kernel)
        following = users.get(conv.name, [])
        if len(following) == 1 and isinstance(
            following[0], keras.layers.BatchNormalization
        ):
            kernel, _ = fold_layer(kernel, following[0])
        kernels[conv.name] = kernel
    return kernels


def kernel_statistics(model):
    """Rows `{layer, std, std_centre, std_surround, [raw_*]}` per conv of
    `kernel_convs`."""
    rows = []
    deployed = deploy_kernels(model)
    for conv in kernel_convs(model):
        row = {"layer": conv.name, **_std_parts(deployed[conv.name])}
        if not conv.use_bias:
            raw = _std_parts(np.asarray(conv.kernel))
            row.update({f"raw_{k}": v for k, v in raw.items()})
        rows.append(row)
    return rows


def layer_quantization_error(
    model,
    representative_images,
    debug_images=None,
    verbose=False,
    per_channel=True,
):
    """Per-tensor int8 error rows, sorted by `rmse / scale` (worst first).

    Each row has the op, the tensor name, `rmse/scale` (RMS error in units
    of the tensor's quantization step; uniform rounding alone gives ~0.29),
    `range` (the calibrated activation range, 255 steps), `mean_error` and
    `max_abs_error`.
    """
    images = np.asarray(representative_images, np.float32)
    debug = np.asarray(
        debug_images if debug_images is not None else images[:50], np.float32
    )
    converter = int8_converter(model, images, per_channel)
    # The debugger needs float I/O to feed and compare layers.
    converter.inference_input_type = tf.float32
    converter.inference_output_type = tf.float32

    def debug_dataset():
        for image in debug:
            yield [image[None]]

    with quiet(verbose):
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=debug_dataset
        )
        debugger.run()
        dump = io.StringIO()
        debugger.layer_statistics_dump(dump)
    rows = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        scale = float(row["scale"]) or 1.0
        rows.append(
            {
                "op": row["op_name"],
                "layer": _layer_name(row["tensor_name"], model),
                "rmse/scale": float(
                    np.sqrt(float(row["mean_squared_error"])) / scale
                ),
                "range": 255.0 * scale,  # the int8 grid's span for this tensor
                "mean_error": float(row["mean_error"]),
                "max_abs_error": float(row["max_abs_error"]),
            }
        )
    return sorted(rows, key=lambda r: -r["rmse/scale"])


def _layer_name(tensor_name, model):
    """`model_1/stage2_block0_relu_1/Relu;...` -> `stage2_block0_relu`; the
    model's output tensor (`StatefulPartitionedCall_1:0`) -> its last
    layer's name."""
    parts = tensor_name.split(";")[0].split("/")
    if len(parts) == 1:
        return f"{model.layers[-1].name} (output)"
    return re.sub(r"_\d+$", "", parts[1])


def histogram_layers(kernels, count=3):
    """Up to `count` block layers spread over the depth: first, middle, last
    (the stem excluded when there are others)."""
    names = list(kernels)[1:] or list(kernels)
    if len(names) <= count:
        return names
    picks = np.linspace(0, len(names) - 1, count).round().astype(int)
    return [names[i] for i in picks]


def kernel_histograms(kernels_by_model, path, layers=None, bins=80):
    """Writes a PNG grid of kernel histograms: a row per layer, a column per
    model, the centre tap and the 8 surrounding taps drawn separately.

    `kernels_by_model` maps a label to `{layer: (3, 3, Cin, Cout) kernel}` as
    int8 sees it (`deploy_kernels`); `layers` defaults to
    `histogram_layers` of the first model. Nothing is clipped: every panel
    of a row spans the row's largest |w|, the count axis is logarithmic (the
    tails that decide a per-tensor int8 scale stay visible), and dotted lines
    mark one per-tensor int8 step (max |w| / 127) of that kernel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(kernels_by_model.values()))
    layers = layers or histogram_layers(first)
    labels = list(kernels_by_model)
    fig, axes = plt.subplots(
        len(layers),
        len(labels),
        squeeze=False,
        figsize=(4.2 * len(labels), 2.8 * len(layers)),
    )
    for row, layer in enumerate(layers):
        span = max(
            float(np.abs(k[layer]).max()) for k in kernels_by_model.values()
        )
        edges = np.linspace(-span, span, bins + 1)
        for column, label in enumerate(labels):
            kernel = kernels_by_model[label][layer]
            _histogram_panel(axes[row, column], kernel, edges)
            parts = _std_parts(kernel)
            axes[row, column].set_title(
                f"{label}\n{layer}: std {parts['std']:.4f}, "
                f"max|w|/std {parts['max_abs_over_std']:.0f}",
                fontsize=8,
            )
        axes[row, 0].set_ylabel("count (log)")
    for axis in axes[-1]:
        axis.set_xlabel("weight (dotted: one per-tensor int8 step)", fontsize=8)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _histogram_panel(axis, kernel, edges):
    """One kernel's centre and surrounding taps over `edges`, log counts,
    dotted lines at one per-tensor int8 step."""
    surround = np.ones((3, 3), bool)
    surround[1, 1] = False
    for taps, color, label in (
        (kernel[surround], "tab:blue", "8 surrounding taps"),
        (kernel[1, 1], "tab:red", "centre tap"),
    ):
        axis.hist(
            taps.reshape(-1), edges, histtype="step", color=color, label=label
        )
    step = float(np.abs(kernel).max()) / 127
    for x in (-step, step):
        axis.axvline(x, color="black", linestyle=":", linewidth=0.8)
    axis.set_yscale("log")
    axis.set_xlim(edges[0], edges[-1])
