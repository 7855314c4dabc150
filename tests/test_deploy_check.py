"""The deploy check: TFLite Micro, the graph's device flags, the device form.

The trained model's bit-exact check is in test_export.py (it reuses that
file's exported model).
"""

import json
import subprocess
import sys
from pathlib import Path

import flatbuffers
import keras
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from repopt_tf.export import convert_float32
from repopt_tf.export import convert_int8
from repopt_tf.export import micro
from repopt_tf.export.deploy import deploy_check
from repopt_tf.export.deploy_render import deploy_markdown
from repopt_tf.export.device_form import device_model
from repopt_tf.export.device_form import fold_candidates
from repopt_tf.export.device_form import same_kernel_size
from repopt_tf.export.litert_eval import TFLiteModel
from repopt_tf.export.tflite_graph import TFLiteGraph
from repopt_tf.models import build_model

ROOT = Path(__file__).resolve().parents[1]
needs_micro = pytest.mark.skipif(
    not micro.micro_available(), reason="the [micro] extra is not installed"
)


def _images(count, size=28, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (count, size, size, channels)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_int8(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = build_model("repopt_vgg_tiny", 10, (28, 28, 1))
    device, _ = device_model(model, 1, fold_padding="peak", conv_ops=True)
    path = tmp_path_factory.mktemp("tiny") / "model_int8.tflite"
    path.write_bytes(convert_int8(device, _images(32)))
    return path


def _gelu_model():
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="gelu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def externalize_weights(content, min_bytes=1024):
    """`content` with every buffer of at least `min_bytes` moved behind the
    flatbuffer and addressed by `Buffer.offset/size`, as ai-edge-quantizer
    writes large models."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    moved = {}
    for index, buffer in enumerate(model.buffers):
        if buffer.data is not None and len(buffer.data) >= min_bytes:
            moved[index] = np.asarray(buffer.data, np.uint8).tobytes()
            buffer.data, buffer.offset, buffer.size = None, 1, 1

    def pack():
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        out = bytearray(builder.Output())
        return out + b"\0" * (-len(out) % 16)

    position = len(pack())  # offsets are fixed-width fields
    for index, data in moved.items():
        model.buffers[index].offset = position
        model.buffers[index].size = len(data)
        position += len(data) + (-len(data) % 16)
    out = pack()
    for data in moved.values():
        out += data + b"\0" * (-len(data) % 16)
    return bytes(out)


@needs_micro
def test_the_arena_reported_is_the_smallest_that_works(tiny_int8):
    plan = TFLiteGraph(tiny_int8.read_bytes()).activation_plan()
    arena = micro.smallest_arena(tiny_int8, plan["peak_bytes"])
    size = arena["arena_bytes"]
    assert arena["head_bytes"] == plan["peak_bytes"]
    assert arena["tail_bytes"] > 0 and size >= arena["head_bytes"]
    # Each load in a fresh process: TFLM may crash on a too-small arena.
    probe = (
        "import sys; from tflite_micro import runtime\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "for size in map(int, sys.argv[2:]):\n"
        "    try:\n"
        "        runtime.Interpreter.from_bytes(data, arena_size=size)\n"
        "        print(size, 'fits')\n"
        "    except RuntimeError:\n"
        "        print(size, 'fails')\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", probe, str(tiny_int8), str(size), str(size - 1)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.stdout.split() == [str(size), "fits", str(size - 1), "fails"]


@needs_micro
def test_device_form_runs_bit_exact_and_is_flag_free(tiny_int8, tmp_path):
    images = _images(40, seed=1)
    section = deploy_check(
        tiny_int8,
        images,
        labels=np.arange(40) % 10,
        threads=(1,),
        latency_runs=3,
        plot_path=tmp_path / "plot.png",
        log=lambda m: None,
    )
    tflm = section["micro"]
    assert tflm["loads"] and tflm["bit_exact"] and tflm["images"] == 40
    assert tflm["first_difference"] is None
    assert section["flags"] == []  # fixed batch: no shape ops, no -1
    assert section["accuracy"]["micro"] == section["accuracy"]["reference"]
    assert (tmp_path / "plot.png").stat().st_size > 0
    assert "CONV_2D" in {row["op"] for row in section["ops"]}
    assert "FULLY_CONNECTED" not in {row["op"] for row in section["ops"]}
    json.dumps(section)  # the report is JSON


@needs_micro
def test_a_missing_tflm_kernel_is_named(tmp_path):
    path = tmp_path / "gelu.tflite"
    path.write_bytes(convert_int8(_gelu_model(), _images(8)))
    with pytest.raises(
        micro.MicroError, match="^TFLM has no kernel for op GELU$"
    ):
        micro.smallest_arena(path, 4096)
    section = deploy_check(
        path,
        _images(4),
        fp32_outputs=np.zeros((4, 10)),
        threads=(1,),
        latency_runs=2,
        log=lambda m: None,
    )
    assert section["micro"]["loads"] is False
    assert section["micro"]["error"] == "TFLM has no kernel for op GELU"
    assert "TFLM" not in {t["runtime"] for t in section["latency_host"]}


@needs_micro
def test_cli_says_in_one_line_which_op_tflm_lacks(tmp_path, export_cli):
    model_path = tmp_path / "gelu.keras"
    _gelu_model().save(model_path)
    process = export_cli(f"--model={model_path}")
    assert process.returncode == 1
    errors = [line for line in process.stderr.splitlines() if "error" in line]
    assert errors == [
        "error: TFLite Micro cannot run it: TFLM has no kernel for op GELU"
    ]
    assert "Traceback" not in process.stderr
    report = json.loads((tmp_path / "export_report.json").read_text())
    assert report["deploy"]["micro"]["loads"] is False  # written all the same


@needs_micro
def test_weights_outside_the_flatbuffer_are_flagged(tiny_int8, tmp_path):
    content = tiny_int8.read_bytes()
    moved = externalize_weights(content)
    graph = TFLiteGraph(moved)
    inside, outside = graph.weights_bytes()
    assert outside > 0.5 * TFLiteGraph(content).weights_bytes()[0]
    assert [f["kind"] for f in graph.flags()] == ["external_weights"]
    images = _images(8, seed=2)
    # A valid file: LiteRT computes the same as from the original ...
    np.testing.assert_array_equal(
        TFLiteModel(moved, reference=True)(images, raw=True),
        TFLiteModel(content, reference=True)(images, raw=True),
    )
    path = tmp_path / "external.tflite"
    path.write_bytes(moved)
    section = deploy_check(
        path,
        images,
        labels=np.zeros(8, int),
        threads=(1,),
        latency_runs=2,
        log=lambda m: None,
    )
    # ... which TFLM loads without a word and gets wrong.
    assert section["micro"]["loads"] and not section["micro"]["bit_exact"]
    assert section["micro"]["vs_reference"]["max_lsb"] > 10
    assert section["memory"]["weights_outside_flatbuffer_bytes"] == outside


def test_kernels_that_abort_the_process_are_reported_not_fatal(tmp_path):
    # Logits at a near-zero scale: LiteRT's reference SOFTMAX (and TFLM's)
    # abort the process preparing it; XNNPACK runs it.
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 1)(inputs))
    dense = keras.layers.Dense(4, activation="softmax")
    model = keras.Model(inputs, dense(x))
    dense.kernel.assign(dense.kernel * 1e-9)
    path = tmp_path / "tiny_scale.tflite"
    path.write_bytes(convert_int8(model, _images(8, 16, 3)))
    section = deploy_check(
        path,
        _images(4, 16, 3),
        labels=np.zeros(4, int),
        threads=(1,),
        latency_runs=2,
        log=lambda m: None,
    )
    assert "SIGABRT" in section["accuracy"]["reference"]["error"]
    assert section["accuracy"]["xnnpack"]["top1"] == 1.0
    if micro.micro_available():
        assert section["micro"]["loads"] is False
        assert section["micro"]["error"].startswith("TFLM aborts (SIGABRT)")
    assert section["memory"]["litert_peak_rss_bytes"]["reference"] is None
    runtimes = {t["runtime"] for t in section["latency_host"]}
    assert runtimes == {"XNNPACK"}
    text = deploy_markdown(section)
    assert "not run (the kernels abort on this model)" in text


def test_without_the_extra_the_section_says_how_to_install(
    tiny_int8, monkeypatch
):
    monkeypatch.setattr(micro, "micro_available", lambda: False)
    section = deploy_check(
        tiny_int8,
        _images(4),
        labels=np.zeros(4, int),
        threads=(1,),
        latency_runs=2,
        log=lambda m: None,
    )
    assert "setup_micro.sh" in section["micro"]["skipped"]
    assert section["memory"]["tflm_arena_bytes"] is None
    assert section["accuracy"]["reference"]["top1"] >= 0
    assert "TFLite Micro: not run" in deploy_markdown(section)
    with pytest.raises(ValueError, match="needs the tflite-micro package"):
        deploy_check(tiny_int8, _images(4), np.zeros(4, int), run_micro=True)
    monkeypatch.setattr(micro, "micro_available", lambda: True)
    section = deploy_check(
        tiny_int8,
        _images(4),
        labels=np.zeros(4, int),
        run_micro=False,
        threads=(1,),
        latency_runs=2,
        log=lambda m: None,
    )
    assert section["micro"] == {"skipped": "switched off (--nodeploy_check)"}


def test_shape_ops_and_dynamic_batch_are_flagged_and_a_fixed_batch_folds_them():
    model = build_model("repopt_ghostnet_tiny", 10, (28, 28, 1))
    dynamic = TFLiteGraph(convert_float32(model))
    kinds = [f["kind"] for f in dynamic.flags()]
    assert kinds[:2] == ["dynamic_shape_ops", "dynamic_input"]
    assert "float_tensors" in kinds  # a float model
    assert [op.name for op in dynamic.shape_ops()] == [
        "SHAPE",
        "STRIDED_SLICE",
        "PACK",
        "RESHAPE",
    ]
    fixed, _ = device_model(model, batch_size=1)
    graph = TFLiteGraph(convert_float32(fixed))
    assert graph.shape_ops() == []
    assert graph.tensors[graph.inputs[0]].signature == (1, 28, 28, 1)


def test_same_kernel_size_matches_symmetric_padding():
    assert same_kernel_size(224, 3, 2, 1) == 4  # even input: extend
    assert same_kernel_size(7, 3, 2, 1) == 3  # odd input: SAME is symmetric
    assert same_kernel_size(16, 3, 1, 1) == 3
    assert same_kernel_size(16, 3, 2, 0) is None  # no padding to fold


@pytest.mark.parametrize(
    "name,size", [("repopt_vgg_tiny", 32), ("repopt_ghostnet_tiny", 32)]
)
def test_folded_padding_is_exact_and_removes_every_pad(name, size):
    model = build_model(name, 10, (size, size, 1))
    for layer in model.layers:  # BN statistics away from the identity
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.full(layer.moving_mean.shape, 0.1))
    images = _images(3, size)
    assert fold_candidates(model)
    folded, names = device_model(model, fold_padding="all")
    assert names == [f.conv for f in fold_candidates(model)]
    np.testing.assert_allclose(
        folded.predict(images, verbose=0),
        model.predict(images, verbose=0),
        rtol=1e-5,
        atol=1e-5,
    )
    ops = {op.name for op in TFLiteGraph(convert_float32(folded)).ops}
    assert "PAD" not in ops
    assert "PAD" in {op.name for op in TFLiteGraph(convert_float32(model)).ops}


def test_peak_folding_lowers_the_activation_peak():
    model = build_model("repopt_vgg_tiny", 10, (64, 64, 1))
    before = TFLiteGraph(convert_float32(model)).activation_plan()
    peak, names = device_model(model, fold_padding="peak")
    after = TFLiteGraph(convert_float32(peak)).activation_plan()
    assert before["peak_op"].startswith("PAD")
    assert 0 < len(names) < len(fold_candidates(model))
    assert after["peak_bytes"] < before["peak_bytes"]
    with pytest.raises(ValueError, match="fold_padding must be one of"):
        device_model(model, fold_padding="some")


def test_conv_ops_are_the_same_function():
    model = build_model("repopt_vgg_tiny", 10, (28, 28, 1))
    model.get_layer("classifier").bias.assign(np.linspace(-1, 1, 10))
    twin, _ = device_model(model, conv_ops=True)
    images = _images(4)
    np.testing.assert_allclose(
        twin.predict(images, verbose=0),
        model.predict(images, verbose=0),
        rtol=1e-5,
        atol=1e-5,
    )
    ops = [op.name for op in TFLiteGraph(convert_float32(twin)).ops]
    # Rescaling -> a depthwise conv over an (H, 1, W*C) view, no MUL + ADD.
    assert ops[:3] == ["RESHAPE", "DEPTHWISE_CONV_2D", "RESHAPE"]
    assert "MUL" not in ops
    assert "FULLY_CONNECTED" not in ops and ops[-2:] == ["CONV_2D", "RESHAPE"]
