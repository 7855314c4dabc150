"""Quantization diagnostics (Ding et al. §4.4, Fig. 3, Table 11).

- `kernel_statistics`: per 3x3 block kernel, the std over all taps, the
  centre tap and the 8 surrounding taps, after folding the following BN (what
  int8 quantizes) and, for BN models, before it.
- `layer_quantization_error`: TF's QuantizationDebugger comparing each int8
  layer's output with its float counterpart on the same inputs.
- `kernel_histograms`: PNG histograms of one layer's kernel per model.
"""

import csv
import io
import re

import numpy as np
import tensorflow as tf

from repopt_tf.export.convert import int8_converter
from repopt_tf.quiet import quiet
from repopt_tf.models.hyper_search import block_convs
from repopt_tf.models.repvgg import fold_batch_norm


def _std_parts(kernel):
    centre = kernel[1, 1]
    mask = np.ones((3, 3), bool)
    mask[1, 1] = False
    return {
        "std": float(kernel.std()),
        "std_centre": float(centre.std()),
        "std_surround": float(kernel[mask].std()),
    }


def deploy_kernels(model):
    """`{layer: kernel}` of the block convs as int8 sees them (BN folded)."""
    kernels = {}
    names = {layer.name for layer in model.layers}
    for conv in block_convs(model):
        kernel = np.asarray(conv.kernel)
        bn_name = conv.name[: -len("_conv")] + "_bn"
        if bn_name in names:
            kernel, _ = fold_batch_norm(kernel, model.get_layer(bn_name))
        kernels[conv.name] = kernel
    return kernels


def kernel_statistics(model):
    """Rows `{layer, std, std_centre, std_surround, [raw_*]}` per block."""
    rows = []
    deployed = deploy_kernels(model)
    for conv in block_convs(model):
        row = {"layer": conv.name, **_std_parts(deployed[conv.name])}
        if not conv.use_bias:
            raw = _std_parts(np.asarray(conv.kernel))
            row.update({f"raw_{k}": v for k, v in raw.items()})
        rows.append(row)
    return rows


def layer_quantization_error(model, representative_images, debug_images=None,
                             verbose=False, per_channel=True):
    """Per-tensor int8 error rows, sorted by `rmse / scale` (worst first).

    Each row has the op, the tensor name, `rmse/scale` (RMS error in units
    of the tensor's quantization step; uniform rounding alone gives ~0.29),
    `range` (the calibrated activation range, 255 steps), `mean_error` and
    `max_abs_error`.
    """
    images = np.asarray(representative_images, np.float32)
    debug = np.asarray(debug_images if debug_images is not None else images[:50],
                       np.float32)
    converter = int8_converter(model, images, per_channel)
    # The debugger needs float I/O to feed and compare layers.
    converter.inference_input_type = tf.float32
    converter.inference_output_type = tf.float32

    def debug_dataset():
        for image in debug:
            yield [image[None]]

    with quiet(verbose):
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=debug_dataset)
        debugger.run()
        dump = io.StringIO()
        debugger.layer_statistics_dump(dump)
    rows = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        scale = float(row["scale"]) or 1.0
        rows.append({
            "op": row["op_name"],
            "layer": _layer_name(row["tensor_name"]),
            "rmse/scale": float(np.sqrt(float(row["mean_squared_error"])) / scale),
            "range": 255.0 * scale,  # the int8 grid's span for this tensor
            "mean_error": float(row["mean_error"]),
            "max_abs_error": float(row["max_abs_error"]),
        })
    return sorted(rows, key=lambda r: -r["rmse/scale"])


def _layer_name(tensor_name):
    """`model_1/stage2_block0_relu_1/Relu;...` -> `stage2_block0_relu`."""
    parts = tensor_name.split(";")[0].split("/")
    return re.sub(r"_\d+$", "", parts[1] if len(parts) > 1 else parts[0])


def kernel_histograms(kernels_by_model, path, layer=None, bins=100, limit=None):
    """Writes a PNG with one histogram per model of a layer's kernel values.

    `kernels_by_model` maps a model label to its `{layer: kernel}`; `layer`
    defaults to the middle block layer of the first model.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(kernels_by_model.values()))
    layer = layer or list(first)[len(first) // 2]
    fig, axes = plt.subplots(1, len(kernels_by_model),
                             figsize=(4.5 * len(kernels_by_model), 3.4))
    axes = np.atleast_1d(axes)
    for axis, (label, kernels) in zip(axes, kernels_by_model.items()):
        values = kernels[layer].reshape(-1)
        span = limit or float(np.percentile(np.abs(values), 99.5))
        axis.hist(values, bins=bins, range=(-span, span), color="tab:blue")
        axis.set_title(f"{label}\n{layer}: std {values.std():.4f}", fontsize=9)
        axis.set_xlabel("weight")
    axes[0].set_ylabel("count")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
