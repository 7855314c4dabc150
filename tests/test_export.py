import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from repopt_tf.data import load_source
from repopt_tf.data import make_dataset
from repopt_tf.data import steps_per_epoch
from repopt_tf.export import NotFullyIntegerError
from repopt_tf.export import check_full_integer
from repopt_tf.export import convert_float32
from repopt_tf.export import convert_int8
from repopt_tf.export import export_model
from repopt_tf.export import kernel_statistics
from repopt_tf.export.diagnostics import deploy_kernels
from repopt_tf.export.export_set import EXPORT_FILES
from repopt_tf.export.export_set import read_export_set
from repopt_tf.export.litert_eval import dequantize
from repopt_tf.export.litert_eval import quantize
from repopt_tf.export.verify import integer_report
from repopt_tf.models import build_model
from repopt_tf.models.fusion import fold_layer
from repopt_tf.optimizers import RepOptSGD

ROOT = Path(__file__).resolve().parents[1]
INT8_BOUND = 0.03  # stated bound: int8 within 3 points of fp32 on 1,000 images


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    train = load_source("fashion_mnist", "train", limit=4096)
    test = load_source("fashion_mnist", "test", limit=1000)
    model = build_model("repopt_vgg_tiny", 10, (28, 28, 1))
    model.compile(
        optimizer=RepOptSGD(0.05, momentum=0.9, nesterov=True),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    model.fit(
        make_dataset(train, 28, 64, training=True, augment="none"),
        epochs=2,
        steps_per_epoch=steps_per_epoch(train, 64),
        verbose=0,
    )
    return model, train, test


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    model, train, test = trained
    out = tmp_path_factory.mktemp("export")
    report = export_model(
        model,
        train,
        test,
        out,
        representative=100,
        latency_runs=5,
        log=lambda m: None,
        deploy_images=0,
    )
    return report, out


def test_export_writes_full_integer_model_and_report(exported):
    report, out = exported
    for name in (
        "model_fp32.tflite",
        "model_int8.tflite",
        "export_report.json",
        "export_report.md",
        "kernel_histogram.png",
        "activation_memory.png",
    ):
        assert (out / name).stat().st_size > 0
    int8 = (out / "model_int8.tflite").read_bytes()
    assert integer_report(int8) == []
    manifest = read_export_set(out)  # a complete set, every hash checked
    assert set(manifest["files"]) == set(EXPORT_FILES)
    assert manifest["source"] is None  # a model in memory, not a file
    on_disk = json.loads((out / "export_report.json").read_text())
    assert on_disk["sha256"]["int8"] == hashlib.sha256(int8).hexdigest()
    assert on_disk["outputs"] == [
        {
            "name": on_disk["outputs"][0]["name"],
            "shape": [10],
            "classifier": True,
            "measured": True,
        }
    ]
    assert set(on_disk) == {
        "source",
        "outputs",
        "sha256",
        "model",
        "input_shape",
        "representative_images",
        "test_images",
        "full_integer",
        "device_form",
        "sizes_bytes",
        "accuracy",
        "agreement",
        "latency",
        "quantization_error",
        "kernel_statistics",
        "deploy",
        "machine",
    }
    assert set(on_disk["accuracy"]) == {
        "keras_fp32",
        "tflite_fp32",
        "tflite_int8",
        "int8_minus_fp32",
    }
    assert on_disk["agreement"]["top1_agreement"] > 0.9
    assert 0 < on_disk["agreement"]["relative_rmse"] < 0.2
    assert (
        len(on_disk["latency"]) == 8
    )  # fp32/int8 x 1,2 threads x XNNPACK on/off
    assert all(
        t["median_ms"] > 0 and t["p90_ms"] >= t["median_ms"]
        for t in on_disk["latency"]
    )
    assert on_disk["sizes_bytes"]["int8"] < 0.5 * on_disk["sizes_bytes"]["fp32"]
    assert {"tensorflow", "keras", "ai_edge_litert", "cpu"} <= set(
        on_disk["machine"]
    )
    assert len(on_disk["kernel_statistics"]) == 6
    assert on_disk["quantization_error"][0]["rmse/scale"] > 0


def test_int8_accuracy_is_within_bound_of_fp32(exported):
    accuracy = exported[0]["accuracy"]
    assert accuracy["keras_fp32"] > 0.6, "the tiny model did not train"
    assert abs(accuracy["tflite_fp32"] - accuracy["keras_fp32"]) <= 1 / 1000
    assert abs(accuracy["int8_minus_fp32"]) <= INT8_BOUND


def _model_with(op):
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(2, 3)(inputs)
    x = keras.layers.Lambda(op)(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


def test_ops_without_int8_kernels_give_clear_errors():
    images = np.random.default_rng(0).random((8, 6, 6, 1)).astype(np.float32)
    with pytest.raises(ValueError, match="no int8 kernel.*Erf"):
        convert_int8(_model_with(keras.ops.erf), images)
    # SIN converts, but only as a float op between (de)quantize ops.
    content = convert_int8(_model_with(keras.ops.sin), images)
    with pytest.raises(NotFullyIntegerError, match="op SIN"):
        check_full_integer(content)
    with pytest.raises(NotFullyIntegerError, match="I/O tensor .* is float32"):
        check_full_integer(convert_float32(_model_with(keras.ops.relu)))
    with pytest.raises(ValueError, match="non-empty"):
        convert_int8(_model_with(keras.ops.relu), np.zeros((0, 6, 6, 1)))


def test_input_quantization_round_trip():
    detail = {"dtype": np.int8, "quantization": (0.5, -3)}
    values = np.array([-60.0, -1.2, 0.0, 0.26, 61.9, 500.0], np.float32)
    q = quantize(values, detail)
    assert q.dtype == np.int8
    assert q.tolist() == [-123, -5, -3, -2, 121, 127]  # 500 clips to 127
    back = dequantize(q, detail)
    assert np.all(np.abs(back[:-1] - values[:-1]) <= 0.25 + 1e-6)
    assert back[-1] == pytest.approx(65.0)
    float_detail = {"dtype": np.float32, "quantization": (0.0, 0)}
    np.testing.assert_array_equal(quantize(values, float_detail), values)


def test_kernel_statistics_fold_batch_norm():
    model = build_model("repopt_vgg_tiny", 10, (16, 16, 1))
    conv = model.get_layer("stage2_block1_conv")
    kernel = np.zeros(conv.kernel.shape, np.float32)
    kernel[1, 1] = np.random.default_rng(1).normal(size=kernel.shape[2:])
    conv.kernel.assign(kernel)
    bn = model.get_layer("stage2_block1_bn")
    bn.gamma.assign(np.full(16, 2.0))
    bn.moving_variance.assign(np.full(16, 4.0 - 1e-5))
    folded = deploy_kernels(model)["stage2_block1_conv"]
    np.testing.assert_allclose(folded, fold_layer(kernel, bn)[0])
    np.testing.assert_allclose(folded, kernel, rtol=1e-6)  # gamma/std = 1
    row = next(
        r
        for r in kernel_statistics(model)
        if r["layer"] == "stage2_block1_conv"
    )
    assert row["std_surround"] == 0.0
    assert row["std_centre"] == pytest.approx(
        float(kernel[1, 1].std()), rel=1e-5
    )
    assert row["raw_std"] == pytest.approx(float(kernel.std()), rel=1e-5)


def test_cli_errors_are_messages(tmp_path):
    process = subprocess.run(
        [
            sys.executable,
            str(ROOT / "export_tflite.py"),
            f"--workdir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 1
    assert "No model in" in process.stderr and "Traceback" not in process.stderr


def test_cli_exports_a_pytorch_checkpoint(tmp_path, export_cli):
    fixture = ROOT / "tests/fixtures/checkpoints/repvgg_tiny_train.pth"
    process = export_cli(
        f"--checkpoint={fixture}",
        "--image_size=32",
        f"--output_dir={tmp_path}",
        "--representative=32",
        "--eval_limit=64",
    )
    assert process.returncode == 0, process.stderr[-2000:]
    assert "WARNING: no --data given" in process.stderr
    assert "RepVGG training form" in process.stdout
    assert "model repopt_vgg_tiny_deploy" in process.stdout  # fused
    assert "int8 TFLite: 64/64 images" in process.stdout  # progress
    report = json.loads((tmp_path / "export_report.json").read_text())
    assert report["accuracy"] is None  # stand-in data: no top-1
    assert report["test_images"] == 64
    assert report["agreement"]["top1_agreement"] > 0.8
    assert integer_report((tmp_path / "model_int8.tflite").read_bytes()) == []
    assert "not measured" in (tmp_path / "export_report.md").read_text()


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--checkpoint=/nonexistent/x.pth"],
            "Checkpoint /nonexistent/x.pth not found",
        ),
        (
            [
                "--checkpoint={fixtures}/repopt_tiny_target.pth",
                "--variant=repopt_vgg_s",
            ],
            "looks like repopt_vgg_tiny",
        ),
        (
            ["--checkpoint={fixtures}/repopt_tiny_hs_latest.pth"],
            "is a hyper-search model",
        ),
    ],
)
def test_cli_checkpoint_errors_are_messages(args, message, export_cli):
    fixtures = ROOT / "tests/fixtures/checkpoints"
    process = export_cli(*(a.format(fixtures=fixtures) for a in args))
    assert process.returncode == 1
    assert message in process.stderr and "Traceback" not in process.stderr


def test_qat_without_the_extra_says_how_to_install(tmp_path):
    fake = tmp_path / "tensorflow_model_optimization"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}:{ROOT}")
    process = subprocess.run(
        [sys.executable, "-m", "repopt_tf.qat", "--model=x.keras"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert process.returncode == 1
    assert "QAT needs the optional extra" in process.stderr
    assert "Traceback" not in process.stderr


def test_workdir_models_are_found_by_stage(tmp_path):
    from repopt_tf.export.runs import locate_model

    for relative in (
        "hs/model.keras",
        "target/model.keras",
        "baseline_sgd/model.keras",
        "baseline_repvgg/model.keras",
        "baseline_repvgg/model_fused.keras",
    ):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    said = []
    path = locate_model(tmp_path, log=said.append)
    assert path == tmp_path / "target/model.keras"
    assert (
        "others: baseline_sgd, baseline_repvgg_fused, baseline_repvgg;"
        in said[0]
    )
    assert locate_model(tmp_path, stage="baseline_repvgg_fused") == (
        tmp_path / "baseline_repvgg/model_fused.keras"
    )
    offered = []
    chosen = locate_model(tmp_path, ask=lambda s: offered.extend(s) or s[1])
    assert offered == [
        "target",
        "baseline_sgd",
        "baseline_repvgg_fused",
        "baseline_repvgg",
    ]  # hs is not a deployment model
    assert chosen == tmp_path / "baseline_sgd/model.keras"
    (tmp_path / "target/model.keras").unlink()
    with pytest.raises(
        FileNotFoundError, match="has no target model.*it has: baseline_sgd"
    ):
        locate_model(tmp_path, stage="target")
    with pytest.raises(ValueError, match="--stage must be one of"):
        locate_model(tmp_path, stage="final")
    only_hs = tmp_path / "hs_run"
    (only_hs / "hs").mkdir(parents=True)
    (only_hs / "hs/model.keras").write_bytes(b"")
    assert locate_model(only_hs) == only_hs / "hs/model.keras"


def test_histograms_cover_the_depth_without_clipping(tmp_path):
    from repopt_tf.export.diagnostics import histogram_layers
    from repopt_tf.export.diagnostics import kernel_histograms

    rng = np.random.default_rng(0)
    kernels = {f"l{i}": rng.normal(0, 0.05, (3, 3, 4, 4)) for i in range(10)}
    assert histogram_layers(kernels) == ["l1", "l5", "l9"]
    outlier = {k: v.copy() for k, v in kernels.items()}
    outlier["l5"][1, 1, 0, 0] = 3.0  # a tail a per-tensor scale must cover
    path = kernel_histograms({"a": kernels, "b": outlier}, tmp_path / "h.png")
    import matplotlib.image

    height, width = matplotlib.image.imread(path).shape[:2]
    assert width > 2 * 4.2 * 100 * 0.9 and height > 3 * 2.8 * 100 * 0.9


def test_help_lists_the_tools_flags():
    for script, flag in (
        ("export_tflite.py", "--checkpoint"),
        ("train.py", "--workdir"),
    ):
        process = subprocess.run(
            [sys.executable, str(ROOT / script), "--help"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert flag in process.stdout + process.stderr


def test_deploy_check_of_a_trained_model_is_bit_exact_in_tflm(exported):
    report, out = exported
    deploy = report["deploy"]
    tflm = deploy["micro"]
    assert tflm["loads"] and tflm["bit_exact"], tflm
    assert tflm["vs_reference"]["max_lsb"] == 0
    assert tflm["images"] == report["test_images"] == 1000
    memory = deploy["memory"]
    assert memory["tflm_arena_bytes"] == tflm["arena"]["arena_bytes"] > 0
    assert memory["file_bytes"] == report["sizes_bytes"]["int8"]
    # Every tensor whole: the liveness plan is TFLM's planned head here.
    assert memory["peak_activation_bytes"] == tflm["arena"]["head_bytes"]
    assert (
        0.4 * memory["file_bytes"]
        < memory["weights_bytes"]
        < memory["file_bytes"]
    )
    assert memory["litert_peak_rss_bytes"]["xnnpack"] > 0
    accuracy = deploy["accuracy"]
    assert accuracy["micro"] == accuracy["reference"]  # bit-exact outputs
    assert (
        abs(accuracy["xnnpack"]["top1"] - report["accuracy"]["tflite_int8"])
        < 1e-9
    )  # the same 1,000 images through XNNPACK
    runtimes = {(t["runtime"], t["threads"]) for t in deploy["latency_host"]}
    assert runtimes == {
        ("TFLM", 1),
        ("LiteRT reference", 1),
        ("LiteRT reference", 2),
        ("XNNPACK", 1),
        ("XNNPACK", 2),
    }
    kinds = {flag["kind"] for flag in deploy["flags"]}
    assert "dynamic_input" in kinds  # exported with a dynamic batch
    text = (out / "export_report.md").read_text()
    assert "## Deploy check" in text and "bit-exact" in text
    assert "TFLM arena (smallest)" in text


def _keras_application(name, path):
    """A keras.applications model at 32x32 with BN statistics of real
    activations (BN momentum 0 for one training-mode pass), as training
    leaves them: untrained, MobileNetV2's logits shrink to a scale that
    LiteRT's and TFLM's SOFTMAX kernels refuse."""
    builder = getattr(keras.applications, name)
    options = {"alpha": 0.35} if name == "MobileNetV2" else {}
    model = builder(
        weights=None, input_shape=(32, 32, 3), classes=10, **options
    )
    norms = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in norms:
        layer.momentum = 0.0
    images = np.random.default_rng(0).uniform(-1, 1, (16, 32, 32, 3))
    model(images.astype(np.float32), training=True)
    for layer in norms:
        layer.momentum = 0.99
    model.save(path)
    return model


@pytest.mark.parametrize(
    "name",
    ["MobileNetV2", pytest.param("ResNet50", marks=pytest.mark.slow)],  # 70 s
)
def test_cli_exports_keras_applications_models(tmp_path, name, export_cli):
    model = _keras_application(name, tmp_path / f"{name}.keras")
    process = export_cli(
        f"--model={tmp_path / name}.keras",
        f"--output_dir={tmp_path / 'out'}",
        "--deploy_images=8",
    )
    assert process.returncode == 0, process.stderr[-2000:]
    assert "does not start with a Rescaling" in process.stdout
    out = tmp_path / "out"
    report = json.loads((out / "export_report.json").read_text())
    assert report["accuracy"]["keras_fp32"] >= 0  # Fashion-MNIST, 10 classes
    layers = {layer.name for layer in model.layers}
    named = {row["layer"] for row in report["quantization_error"]}
    assert named <= layers | {f"{model.layers[-1].name} (output)"}, named
    convs = [row["layer"] for row in report["kernel_statistics"]]
    assert convs and set(convs) <= layers
    assert (out / "kernel_histogram.png").stat().st_size > 0
    assert report["deploy"]["micro"]["loads"]
    assert "## Deploy check" in (out / "export_report.md").read_text()
