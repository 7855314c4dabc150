"""Will this int8 model run on the device, the same, and in what memory?

`deploy_check(path, images, labels)` checks a full-integer `.tflite` file
the way a device sees it and returns a report section (`deploy_markdown`
writes it for people):

- graph: op inventory with versions and the flags of
  `TFLiteGraph.flags` (shape ops, dynamic input, weights outside the
  flatbuffer, float tensors), and whether the activation peak is a PAD
  copy that `--fold_padding` removes;
- TFLite Micro (the `[micro]` extra): loads, the smallest working arena
  (`micro.smallest_arena`), outputs on the images bit for bit against
  LiteRT's reference kernels (else the max LSB difference and the first op
  that differs), or the op TFLM lacks;
- int8 top-1 (or, without labels, agreement with `fp32_outputs`) under the
  reference kernels beside XNNPACK's, and XNNPACK's max LSB difference and
  top-1 disagreement against the reference kernels;
- memory bill: flash (file, weights), peak activation bytes as planned
  (`TFLiteGraph.activation_plan`), LiteRT's peak RSS over an idle process
  (`litert_memory`), TFLM's arena;
- host latency (this machine, not a device's): TFLM, LiteRT reference
  kernels and XNNPACK at each thread count;
- a plot of the activation bytes alive at each op along the depth.
"""

import functools
import platform
from pathlib import Path

import numpy as np

from repopt_tf.export import micro
from repopt_tf.export.deploy_render import activation_plot
from repopt_tf.export.litert_eval import TFLiteModel
from repopt_tf.export.litert_eval import latency
from repopt_tf.export.litert_eval import quantize
from repopt_tf.export.litert_eval import time_invokes
from repopt_tf.export.litert_memory import litert_peak_rss
from repopt_tf.export.tflite_graph import TFLiteGraph


def host_build():
    bits = platform.architecture()[0]
    return f"{bits.removesuffix('bit')}-bit host build ({platform.machine()}), not a device build"


def _flat(outputs):
    """`(N, ...)` outputs as `(N, features)`: a classifier's are already;
    a feature map's are compared value by value, arg-max over all."""
    return outputs.reshape(len(outputs), -1)


def _differences(a, b):
    """`{"max_lsb", "outputs_differing", "top1_disagreement"}` of two raw
    integer output arrays."""
    delta = np.abs(a.astype(np.int64) - b.astype(np.int64))
    return {
        "max_lsb": int(delta.max()) if delta.size else 0,
        "outputs_differing": float((delta > 0).mean()) if delta.size else 0.0,
        "top1_disagreement": float((a.argmax(-1) != b.argmax(-1)).mean()),
    }


def _first_difference(content, image, arena_bytes, batch=1):
    """The first op whose outputs differ between TFLM and LiteRT's
    reference kernels on one int8 image (in a `batch` of zeros for a
    fixed-batch model): `{"op", "index", "max_lsb"}`."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.interpreter import OpResolverType

    reference = Interpreter(
        model_content=content,
        experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
        experimental_preserve_all_tensors=True,
    )
    reference.allocate_tensors()
    chunk = next(micro.padded_chunks(image[None], batch))
    reference.set_tensor(reference.get_input_details()[0]["index"], chunk)
    reference.invoke()
    device = micro.load(content, arena_bytes, preserve_all_tensors=True)
    device.set_input(chunk, 0)
    device.invoke()
    for op in reference._get_ops_details():  # LiteRT's only op-level view
        for index in op["outputs"]:
            want = reference.get_tensor(index).reshape(-1).astype(np.int64)
            got = micro.tensor(device, index).astype(np.int64)
            if want.shape == got.shape and (want != got).any():
                return {
                    "op": op["op_name"],
                    "index": int(op["index"]),
                    "max_lsb": int(np.abs(want - got).max()),
                }
    return None


def _micro_section(
    path, content, images_q, reference_raw, plan, runs, log, batch=1
):
    """TFLM's part of the check (see the module docstring); `batch`: the
    model's fixed input batch."""
    section = {
        "version": micro.micro_version(),
        "build": host_build(),
        "images": len(images_q),
    }
    try:
        arena = micro.smallest_arena(path, plan["peak_bytes"])
    except micro.MicroError as error:
        return {**section, "loads": False, "error": str(error)}
    log(
        f"TFLM: loads; smallest arena {arena['arena_bytes']:,} B "
        f"(head {arena['head_bytes']:,}, tail {arena['tail_bytes']:,})"
    )
    interpreter = micro.load(content, arena["arena_bytes"])
    outputs = micro.run(interpreter, images_q, batch)
    interpreter.set_input(next(micro.padded_chunks(images_q, batch)), 0)
    timing = time_invokes(interpreter.invoke, warmup=1, runs=runs, budget_s=10)
    result = {
        **section,
        "loads": True,
        "arena": arena,
        "outputs": outputs,
        "latency": timing,
        "bit_exact": None,  # unknown without the reference kernels' outputs
        "vs_reference": None,
        "first_difference": None,
    }
    if reference_raw is None:
        return result
    compared = _vs_reference(
        content, images_q, outputs, reference_raw, arena, batch
    )
    diff, first = compared["vs_reference"], compared["first_difference"]
    if not diff["max_lsb"]:
        said = "bit-exact"
    else:
        said = (
            f"max {diff['max_lsb']} LSB on {100 * diff['outputs_differing']:.2f}"
            "% of outputs"
            + (f", first at {first['op']} #{first['index']}" if first else "")
        )
    log(f"TFLM vs LiteRT reference kernels: {said} on {len(images_q)} images")
    return {**result, **compared}


def _vs_reference(content, images_q, outputs, reference_raw, arena, batch):
    """TFLM's outputs against the LiteRT reference kernels': the
    differences, and where the first differing image first differs."""
    diff = _differences(outputs, reference_raw)
    first = None
    if diff["max_lsb"]:
        image = int(np.argmax(np.any(outputs != reference_raw, axis=-1)))
        # Every tensor kept: an ample arena, not the smallest.
        first = _first_difference(
            content,
            images_q[image],
            4 * arena["arena_bytes"] + (1 << 20),
            batch,
        )
    return {
        "bit_exact": diff["max_lsb"] == 0,
        "vs_reference": diff,
        "first_difference": first,
    }


def _top1(outputs, labels, fp32_outputs):
    if labels is not None:
        return {"top1": float((outputs.argmax(-1) == labels).mean())}
    return {
        "fp32_agreement": float(
            (outputs.argmax(-1) == fp32_outputs.argmax(-1)).mean()
        )
    }


def deploy_check(
    path,
    images,
    labels=None,
    fp32_outputs=None,
    run_micro=None,
    threads=(1, 2),
    latency_runs=50,
    plot_path=None,
    log=print,
):
    """Checks the int8 `.tflite` at `path` for a device (module docstring).

    Args:
        images: float raw-pixel images `(N, H, W, C)`, the evaluation images.
        labels: their classes, or None: then `fp32_outputs` (the fp32
            model's outputs on the same images) gives agreement instead.
        run_micro: run TFLM (True), skip it (False), or None: when the
            `tflite-micro` package is installed.
        plot_path: where to draw the activation plot (None: no plot).

    Returns:
        The section as a dict (JSON-ready; see `deploy_markdown`).

    Raises:
        ValueError: `run_micro=True` without the package, or no images.

    Examples:
        >>> import pathlib, tempfile, numpy as np
        >>> from repopt_tf import build_model, deploy_check
        >>> from repopt_tf.export import convert_int8
        >>> model = build_model("repopt_vgg_tiny", 10, (28, 28, 1))
        >>> rng = np.random.default_rng(0)
        >>> images = rng.uniform(0, 255, (8, 28, 28, 1)).astype(np.float32)
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "model_int8.tflite"
        >>> _ = path.write_bytes(convert_int8(model, images[:4]))
        >>> section = deploy_check(path, images, labels=np.zeros(8, int),
        ...     run_micro=False, threads=(1,), latency_runs=2, log=lambda m: None)
        >>> section["memory"]["peak_activation_bytes"] > 0, section["batch"]
        (True, 1)

    References:
        David et al., 2021, "TensorFlow Lite Micro: Embedded Machine
        Learning on TinyML Systems", https://arxiv.org/abs/2010.08678.
    """
    path = Path(path)
    content = path.read_bytes()
    images = np.asarray(images, np.float32)
    if fp32_outputs is not None:
        fp32_outputs = _flat(np.asarray(fp32_outputs))
    available = _check_request(images, labels, fp32_outputs, run_micro)
    graph = TFLiteGraph(content)
    plan = graph.activation_plan()
    flags = _flags(graph, plan)
    for flag in flags:
        log(f"deploy check: {flag['message']}")
    # Each runtime loads the model in a child process first: some kernels
    # abort the whole process on parameters they refuse (see _probe_rss).
    rss = {
        "xnnpack": _probe_rss(path, True),
        "reference": _probe_rss(path, False),
    }
    score = functools.partial(_top1, labels=labels, fp32_outputs=fp32_outputs)
    xnnpack, accuracy, reference_raw = _litert_accuracy(
        content, images, score, rss, flags, log
    )
    tflm = _micro_skipped(run_micro, available)
    if tflm is None:
        images_q = quantize(images, xnnpack.input_detail)
        tflm = _micro_section(
            path,
            content,
            images_q,
            reference_raw,
            plan,
            latency_runs,
            log,
            xnnpack.batch,
        )
        if tflm.get("loads"):
            accuracy["micro"] = score(tflm.pop("outputs"))
    section = {
        "ops": graph.op_inventory(),
        "op_count": len(graph.ops),
        "flags": flags,
        "micro": tflm,
        "accuracy": accuracy,
        "memory": _memory(content, graph, plan, rss, tflm),
        "latency_host": _host_latency(
            content, images[0], threads, latency_runs, reference_raw, tflm
        ),
        "batch": xnnpack.batch,
        "host": host_build(),
    }
    if plot_path:
        # Named, not a path: the plot sits beside the report it is in.
        section["plot"] = Path(activation_plot(plan, plot_path, path.stem)).name
    return section


def _micro_skipped(run_micro, available):
    """The TFLM section when TFLM does not run (why), else None."""
    if not available:
        return {"skipped": "not installed: " + micro.INSTALL_HINT}
    if run_micro is False:
        return {"skipped": "switched off (--nodeploy_check)"}
    return None


def _check_request(images, labels, fp32_outputs, run_micro):
    """Whether TFLM is installed, after refusing a request that cannot run.

    Raises:
        ValueError: no images, nothing to score against, or TFLM asked for
            without the package.
    """
    if not len(images):
        raise ValueError("deploy_check needs at least one image.")
    if labels is None and fp32_outputs is None:
        raise ValueError("deploy_check needs labels or fp32_outputs.")
    available = micro.micro_available()
    if run_micro and not available:
        raise ValueError(
            f"The TFLM check needs the tflite-micro package: {micro.INSTALL_HINT}."
        )
    return available


def _litert_accuracy(content, images, score, rss, flags, log):
    """`(XNNPACK model, accuracy dict, reference kernels' raw outputs or
    None)`: top-1 under XNNPACK and the reference kernels (when their probe
    loaded), and how far the two differ. A model XNNPACK refuses adds a
    flag."""
    xnnpack = TFLiteModel(content)
    if xnnpack.xnnpack_error:
        flags.append(
            {
                "kind": "xnnpack_refused",
                "message": f"XNNPACK refuses the model ({xnnpack.xnnpack_error})"
                ": LiteRT falls back to its slower builtin kernels",
            }
        )
        log(f"deploy check: {flags[-1]['message']}")
    xnnpack_raw = _flat(xnnpack(images, raw=True))
    accuracy = {"images": len(images), "xnnpack": score(xnnpack_raw)}
    if "error" in rss["reference"]:
        accuracy["reference"] = {"error": rss["reference"]["error"]}
        log(f"deploy check: {rss['reference']['error']}")
        return xnnpack, accuracy, None
    reference = TFLiteModel(content, reference=True)
    reference_raw = _flat(reference(images, raw=True))
    accuracy["reference"] = score(reference_raw)
    accuracy["xnnpack_vs_reference"] = _differences(xnnpack_raw, reference_raw)
    log(
        "XNNPACK vs reference kernels: max {max_lsb} LSB, top-1 differs "
        "on {top1_disagreement:.2%} of images".format(
            **accuracy["xnnpack_vs_reference"]
        )
    )
    return xnnpack, accuracy, reference_raw


def _memory(content, graph, plan, rss, tflm):
    """File, weights, activation peak, LiteRT RSS and TFLM arena bytes."""
    inside, outside = graph.weights_bytes()
    return {
        "file_bytes": len(content),
        "weights_bytes": inside,
        "weights_outside_flatbuffer_bytes": outside,
        "peak_activation_bytes": plan["peak_bytes"],
        "peak_op": plan["peak_op"],
        "litert_peak_rss_bytes": {
            kernels: probe.get("model_bytes") for kernels, probe in rss.items()
        },
        "tflm_arena_bytes": tflm.get("arena", {}).get("arena_bytes"),
    }


def _host_latency(content, image, threads, runs, reference_raw, tflm):
    """Latency rows: TFLM (when it ran), then per thread count the
    reference kernels (when they load) and XNNPACK."""
    timings = []
    if tflm.get("loads"):
        timings.append({"runtime": "TFLM", "threads": 1, **tflm["latency"]})
    kernels = [("XNNPACK", False)]
    if reference_raw is not None:
        kernels.insert(0, ("LiteRT reference", True))
    for count in threads:
        for name, reference in kernels:
            timing = latency(
                content,
                image,
                count,
                reference=reference,
                warmup=2,
                runs=runs,
                budget_s=10,
            )
            if not (reference or timing["xnnpack"]):
                name = "LiteRT builtin (XNNPACK refused)"
            timings.append({"runtime": name, **timing})
    return timings


def _flags(graph, plan):
    """`TFLiteGraph.flags`, and a PAD's copy alive at the activation peak."""
    flags = graph.flags()
    padded = [
        t
        for t in plan["peak_tensors"]
        if getattr(graph.producer(t), "name", None) == "PAD"
    ]
    if padded:
        flags.append(
            {
                "kind": "pad_at_peak",
                "message": f"the activation peak ({plan['peak_bytes']:,} B at "
                f"{plan['peak_op']}) holds a PAD's padded copy "
                f"({graph.tensors[padded[0]].nbytes:,} B): export with "
                "--fold_padding=peak to remove it",
            }
        )
    return flags


def _probe_rss(path, xnnpack):
    """`litert_peak_rss` at 1 thread, or `{"error"}` when LiteRT's kernels
    kill the process loading the model (the reference kernels abort on
    requantization parameters they cannot represent, as near-zero
    activation scales of an untrained network give)."""
    try:
        return litert_peak_rss(path, 1, xnnpack)
    except OSError as error:
        kernels = "XNNPACK" if xnnpack else "LiteRT's reference kernels"
        return {"error": f"{kernels} cannot run the model: {error}"}
