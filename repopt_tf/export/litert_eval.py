"""Accuracy and latency of `.tflite` models with the LiteRT interpreter.

Inputs are quantized with the interpreter's own `(scale, zero_point)`,
`q = clip(round(x / scale + zero_point))`, and outputs dequantized,
`y = (q - zero_point) * scale`, so int8 and float models are evaluated on the
same raw-pixel inputs as the Keras model.
"""

import math
import platform
import statistics
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from ai_edge_litert.interpreter import OpResolverType

from repopt_tf.cpu import cpu_flags
from repopt_tf.cpu import cpu_name
from repopt_tf.quiet import quiet


def quantize(values, detail):
    """Maps float inputs to the tensor's integer type with its own params."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return values.astype(dtype)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    q = np.round(values / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(values, detail):
    if np.dtype(detail["dtype"]).kind == "f":
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return (values.astype(np.float32) - zero_point) * scale


class TFLiteModel:
    """Runs a `.tflite` model on float batches.

    Kernels: XNNPACK (`xnnpack`, LiteRT's default), LiteRT's optimized
    builtin kernels (`xnnpack=False`) or its reference kernels
    (`reference=True`: the portable code microcontroller runtimes share).
    A dynamic batch is resized to each call's; a fixed one is fed in chunks
    (the last one padded).
    """

    def __init__(
        self, model_content, num_threads=None, xnnpack=True, reference=False
    ):
        if reference:
            resolver = OpResolverType.BUILTIN_REF
        elif xnnpack:
            resolver = OpResolverType.AUTO
        else:
            resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        # Why XNNPACK refused the model (it may, on requantization scales
        # outside its range, e.g. an untrained net's, when the model loads
        # or when a new batch size is allocated); LiteRT's builtin kernels
        # run it instead. None: as asked.
        self.xnnpack_error = None
        self._content, self._threads = model_content, num_threads
        self._resolver = resolver
        self._fixed_batch = self._batch = None
        self.interpreter = self._retrying(
            lambda: _interpreter(model_content, num_threads, self._resolver)
        )
        fixed = self.input_detail["shape_signature"][0]
        self._fixed_batch = int(fixed) if fixed > 0 else None
        self._batch = self._fixed_batch

    @property
    def batch(self):
        """Images per invoke of a fixed-batch model; 1 for a dynamic one."""
        return self._fixed_batch or 1

    def _retrying(self, step):
        """`step()`; when XNNPACK refuses the model, the interpreter is
        rebuilt without it (`xnnpack_error` says why) and `step` rerun."""
        try:
            return step()
        except RuntimeError as error:
            auto = self._resolver == OpResolverType.AUTO
            if not auto or "XNNPACK" not in str(error):
                raise
            self.xnnpack_error = str(error).split("Node number")[0].strip()
            self._resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            self.interpreter = _interpreter(
                self._content, self._threads, self._resolver
            )
            self._batch = self._fixed_batch
            return step()

    @property
    def input_detail(self):
        return self.interpreter.get_input_details()[0]

    @property
    def output_detail(self):
        return self.interpreter.get_output_details()[0]

    def __call__(self, images, raw=False):
        """Outputs for float `images` (raw pixels): dequantized, or as the
        model's own integers with `raw`."""
        images = np.asarray(images, np.float32)
        step = self._fixed_batch or len(images)
        outputs = []
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            outputs.append(self._invoke(chunk, step)[: len(chunk)])
        out = np.concatenate(outputs)
        return out if raw else dequantize(out, self.output_detail)

    def _invoke(self, images, batch):
        if len(images) < batch:  # a fixed batch's last chunk
            fill = np.zeros((batch - len(images), *images.shape[1:]))
            images = np.concatenate([images, fill.astype(images.dtype)])
        return self._retrying(lambda: self._run(images, batch))

    def _run(self, images, batch):
        if self._batch != batch:
            self.interpreter.resize_tensor_input(
                self.input_detail["index"], list(images.shape)
            )
            self.interpreter.allocate_tensors()
            self._batch = batch
        self.interpreter.set_tensor(
            self.input_detail["index"], quantize(images, self.input_detail)
        )
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_detail["index"])


def _interpreter(model_content, num_threads, resolver):
    with quiet():  # LiteRT announces its XNNPACK delegate on stderr
        interpreter = Interpreter(
            model_content=model_content,
            num_threads=num_threads,
            experimental_op_resolver_type=resolver,
        )
        interpreter.allocate_tensors()
    return interpreter


def tflite_outputs(model_content, dataset, log=None, total=None):
    """`(outputs (N, K), labels (N,))` over `(images, one-hot labels)` batches.

    With `log` (a function taking a line), progress is reported about every
    10 % of `total` images (or every batch when the total is unknown).
    """
    model = TFLiteModel(model_content)
    if log and model.xnnpack_error:
        log(
            f"XNNPACK refused the model ({model.xnnpack_error}); LiteRT's "
            "builtin kernels run it"
        )
    outputs, labels = [], []
    done = reported = 0
    for images, onehot in dataset:
        outputs.append(model(images.numpy()))
        labels.append(onehot.numpy().argmax(-1))
        done += len(images)
        if log and (
            not total or done - reported >= total / 10 or done >= total
        ):
            log(f"{done}/{total or '?'} images")
            reported = done
    return np.concatenate(outputs), np.concatenate(labels)


def tflite_accuracy(model_content, dataset):
    """Top-1 accuracy over a dataset of `(images, one-hot labels)` batches."""
    outputs, labels = tflite_outputs(model_content, dataset)
    return float((outputs.argmax(-1) == labels).mean())


def output_agreement(reference, quantized):
    """How close int8 outputs are to fp32 ones, with no labels needed.

    `top1_agreement`: share of images with the same arg-max;
    `relative_rmse`: RMS(quantized - reference) / RMS(reference).
    """
    rms = float(np.sqrt(np.mean(reference.astype(np.float64) ** 2))) or 1.0
    return {
        "top1_agreement": float(
            (reference.argmax(-1) == quantized.argmax(-1)).mean()
        ),
        "relative_rmse": float(np.sqrt(np.mean((quantized - reference) ** 2)))
        / rms,
    }


def time_invokes(invoke, warmup=10, runs=100, budget_s=None):
    """`{"median_ms", "p90_ms", "runs"}` of `runs` timed calls of `invoke`
    after `warmup` untimed ones; with `budget_s`, fewer runs (at least 3)
    when the first warm call says they would take longer."""
    invoke()
    for _ in range(warmup):
        invoke()
    times = []
    while len(times) < runs:
        start = time.perf_counter()
        invoke()
        times.append((time.perf_counter() - start) * 1e3)
        if budget_s and len(times) == 1:
            runs = min(runs, max(3, int(budget_s * 1e3 / times[0])))
    times.sort()
    return {
        "median_ms": statistics.median(times),
        "p90_ms": times[math.ceil(0.9 * len(times)) - 1],
        "runs": runs,
    }


def latency(
    model_content,
    sample,
    num_threads=1,
    xnnpack=True,
    warmup=10,
    runs=100,
    reference=False,
    budget_s=None,
):
    """Latency in ms of one invoke on `sample` (a fixed-batch model's
    invoke takes a whole batch: `batch` in the result): median and p90 over
    `runs` timed invokes (`time_invokes`; kernels as `TFLiteModel`)."""
    model = TFLiteModel(model_content, num_threads, xnnpack, reference)
    model(np.asarray(sample, np.float32)[None])
    timing = time_invokes(model.interpreter.invoke, warmup, runs, budget_s)
    used = xnnpack and not reference and not model.xnnpack_error
    return {
        **timing,
        "threads": num_threads,
        "xnnpack": used,
        "batch": model.batch,
    }


def machine_line(info):
    """`CPU x2 (avx2 ...); TF 2.21.0, LiteRT 2.3.0`: a `machine_info()` for
    the line beside a timing (an older report may lack the flags)."""
    flags = info.get("cpu_flags")
    return (
        f"{info['cpu']}{f' ({flags})' if flags else ''}; TF "
        f"{info['tensorflow']}, LiteRT {info['ai_edge_litert']}"
    )


def machine_info():
    import ai_edge_litert
    import keras
    import tensorflow as tf

    return {
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "ai_edge_litert": getattr(ai_edge_litert, "__version__", "unknown"),
    }
