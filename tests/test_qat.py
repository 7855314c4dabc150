"""QAT extra: runs in subprocesses, since TFMOT sets TF_USE_LEGACY_KERAS=1
process-wide, which must never leak into a process that only imports
repopt_tf."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    subprocess.run(
        [sys.executable, "-c", "import tensorflow_model_optimization"],
        capture_output=True,
    ).returncode
    != 0,
    reason="QAT extra not installed (bash scripts/setup_qat.sh)",
)


def _python(code, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_USE_LEGACY_KERAS", None)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_importing_repopt_tf_never_loads_tfmot():
    out = _python("""
        import os, sys
        import repopt_tf, repopt_tf.models, repopt_tf.export, repopt_tf.training
        print("tensorflow_model_optimization" in sys.modules,
              os.environ.get("TF_USE_LEGACY_KERAS"))
    """)
    assert out.split() == ["False", "None"]


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("qat") / "model.keras"
    _python(f"""
        import keras
        from repopt_tf.data import load_source, make_dataset, steps_per_epoch
        from repopt_tf.models import build_model
        keras.utils.set_random_seed(0)
        model = build_model("repopt_vgg_tiny", 10, (28, 28, 1))
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                      loss=keras.losses.CategoricalCrossentropy(from_logits=True))
        source = load_source("fashion_mnist", "train", limit=4096)
        model.fit(make_dataset(source, 28, 64, True, augment="none"), epochs=2,
                  steps_per_epoch=steps_per_epoch(source, 64), verbose=0)
        model.save("{path}")
    """)
    return path


def test_twin_has_identical_weights_and_outputs(trained_model):
    out = _python(f"""
        import keras, numpy as np
        import repopt_tf.models
        from repopt_tf.qat import tf_keras_twin, weights_equal
        model = keras.models.load_model("{trained_model}", compile=False)
        twin = tf_keras_twin(model)
        x = np.random.default_rng(0).uniform(0, 255, (4, 28, 28, 1)).astype("float32")
        diff = np.abs(model.predict(x, verbose=0) - twin.predict(x, verbose=0)).max()
        padded = sum(bool(getattr(l, "zero_padding", 0)) for l in model.layers)
        # One tf_keras ZeroPadding2D per conv with built-in zero padding.
        print(weights_equal(model, twin),
              padded > 0 and len(twin.layers) == len(model.layers) + padded, diff)
        try:
            tf_keras_twin(repopt_tf.models.build_model(
                "repopt_vgg_tiny", 10, (28, 28, 1), kind="repvgg"))
        except ValueError as error:
            print("refused:", error)
    """)
    first, refusal = out.strip().splitlines()
    equal, same_depth, diff = first.split()
    assert equal == "True" and same_depth == "True"
    assert float(diff) < 1e-4
    assert "plain chain models" in refusal


def test_qat_cli_gives_full_integer_model_close_to_fp32(trained_model):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "repopt_tf.qat",
            f"--model={trained_model}",
            "--epochs=1",
            "--train_limit=1024",
            "--eval_limit=1000",
            "--representative=64",
            "--data=fashion_mnist",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    folder = trained_model.parent
    report = json.loads((folder / "qat_report.json").read_text())
    assert set(report) == {
        "model",
        "epochs",
        "learning_rate",
        "keras_fp32",
        "fp32_finetuned",
        "tflite_int8_ptq",
        "tflite_int8_qat",
        "ptq_minus_fp32",
        "qat_minus_fp32_finetuned",
    }
    assert report["keras_fp32"] > 0.6
    assert report["fp32_finetuned"] > 0.6
    # QAT is compared with fp32 fine-tuned the same way, PTQ with fp32 before.
    assert abs(report["qat_minus_fp32_finetuned"]) <= 0.03
    assert abs(report["ptq_minus_fp32"]) <= 0.03
    assert report["qat_minus_fp32_finetuned"] == pytest.approx(
        report["tflite_int8_qat"] - report["fp32_finetuned"]
    )
    table = (folder / "qat_report.md").read_text()
    assert "| fp32 fine-tuned 1 epochs (no fake quant) |" in table
    content = (folder / "model_int8_qat.tflite").read_bytes()
    from repopt_tf.export.verify import integer_report

    assert integer_report(content) == []
