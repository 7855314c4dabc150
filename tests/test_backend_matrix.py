"""The library on JAX and PyTorch, in processes without TensorFlow.

- The tests marked `backends` (CSLA equivalence, exact update rule, save ->
  load -> resume keeping the mults, checkpoint import against the authors'
  and timm's logits, fusion) run again under `KERAS_BACKEND=jax` and
  `torch`, with TensorFlow made unimportable (tests/without_tensorflow).
- A `.keras` file moves between backends: saved on TF, loaded, resumed and
  saved on JAX / PyTorch, read back on TF.
- Train on one backend, ship from TensorFlow: a model trained on JAX (and
  one on PyTorch) goes through `export_tflite.py --model` to a verified
  full-integer int8 model whose outputs match that backend's.
- Keras's `DataParallel` on 2 JAX host devices equals one device.
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from conftest import ROOT
from conftest import run_without_tensorflow

from repopt_tf import RepOptSGD
from repopt_tf import build_model
from repopt_tf import grad_mults_for_model
from repopt_tf import load_scales

BACKENDS = ("jax", "torch")
SCALES = ROOT / "tests/fixtures/checkpoints/repopt_tiny_hs_latest.pth"


def run_code(backend, *code, **kwargs):
    """Runs the `code` parts (each dedented) under `backend` (see `run_on`);
    fails with its output."""
    source = "\n".join(textwrap.dedent(part) for part in code)
    process = run_without_tensorflow(backend, ["-c", source], **kwargs)
    assert process.returncode == 0, (process.stdout + process.stderr)[-4000:]
    return process.stdout


MARKED = re.compile(r"^(@|pytestmark = )pytest\.mark\.backends$", re.M)


def _marked_files():
    return sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").glob("test_*.py")
        if MARKED.search(path.read_text())
    )


@pytest.fixture(scope="module")
def marked_count():
    """How many tests are marked `backends` (collected on TensorFlow)."""
    process = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q"]
        + ["-m", "backends", "-p", "no:cacheprovider", *_marked_files()],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    found = re.search(r"(\d+)/\d+ tests collected", process.stdout)
    assert found, process.stdout[-2000:]
    return int(found.group(1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_marked_tests_pass_without_tensorflow(backend, marked_count):
    process = run_without_tensorflow(
        backend,
        ["-m", "pytest", "-q", "-m", "backends", "-p", "no:cacheprovider"]
        + _marked_files(),
        timeout=1500,
    )
    summary = process.stdout.strip().splitlines()[-1]
    assert process.returncode == 0, process.stdout[-4000:]
    found = re.match(
        r"(\d+) passed(?:, (\d+) skipped)?, \d+ deselected", summary
    )
    assert found, summary
    passed, skipped = int(found.group(1)), int(found.group(2) or 0)
    assert passed + skipped == marked_count, summary
    # Only Keras's own LossScaleOptimizer, which cannot apply eagerly on JAX.
    assert skipped == (2 if backend == "jax" else 0), summary
    assert marked_count >= 60


def _tiny_repopt(input_shape=(32, 32, 3)):
    scales = load_scales(SCALES)
    model = build_model("repopt_vgg_tiny", 10, input_shape)
    model.compile(
        optimizer=RepOptSGD(
            0.05,
            momentum=0.9,
            nesterov=True,
            weight_decay=1e-3,
            grad_mults=grad_mults_for_model(model, scales),
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


# Code for the other backend's process: `tiny(shape)` is `_tiny_repopt`.
TINY = f"""
    import keras, numpy as np
    from repopt_tf import RepOptSGD, build_model, grad_mults_for_model
    from repopt_tf import load_scales

    def tiny(shape):
        scales = load_scales("{SCALES}")
        model = build_model("repopt_vgg_tiny", 10, shape)
        model.compile(
            optimizer=RepOptSGD(
                0.05, momentum=0.9, nesterov=True, weight_decay=1e-3,
                grad_mults=grad_mults_for_model(model, scales)),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model
"""


def _data(n=32, shape=(32, 32, 3)):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (n, *shape)).astype(np.float32)
    return x, rng.integers(0, 10, n)


def _fit(model, x, y):
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_keras_files_move_between_backends(backend, tmp_path):
    """Saved on TF after a step, resumed on `backend` == resumed on TF,
    and the file `backend` saves reads back on TF with its outputs."""
    keras.utils.set_random_seed(0)
    model = _tiny_repopt()
    x, y = _data()
    _fit(model, x, y)
    model.save(tmp_path / "tf.keras")
    np.savez(tmp_path / "data.npz", x=x, y=y)
    _fit(model, x, y)  # the resumed run, here on TF
    out = run_code(
        backend,
        f"""
        import keras, numpy as np
        import repopt_tf
        data = np.load("{tmp_path}/data.npz")
        model = keras.models.load_model("{tmp_path}/tf.keras")
        print("mults", len(model.optimizer.grad_mults),
              type(model.optimizer).__name__)
        model.fit(data["x"], data["y"], batch_size=8, epochs=1,
                  shuffle=False, verbose=0)
        model.save("{tmp_path}/other.keras")
        np.save("{tmp_path}/other.npy", model.predict_on_batch(data["x"]))
        """,
    )
    assert "mults 6 RepOptSGD" in out
    other = keras.models.load_model(tmp_path / "other.keras")
    for ours, theirs in zip(model.weights, other.weights):
        assert ours.path == theirs.path
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=2e-5)
    np.testing.assert_allclose(
        other.predict_on_batch(x), np.load(tmp_path / "other.npy"), atol=1e-4
    )
    np.testing.assert_array_equal(
        other.optimizer.grad_mults["stage1_block0_conv/kernel"],
        model.optimizer.grad_mults["stage1_block0_conv/kernel"],
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_model_trained_on_another_backend_ships_as_int8(
    backend, tmp_path, export_cli
):
    from repopt_tf.data import load_fashion_mnist
    from repopt_tf.export.litert_eval import TFLiteModel
    from repopt_tf.export.litert_eval import output_agreement
    from repopt_tf.export.verify import integer_report

    train, labels = load_fashion_mnist("train")
    test, _ = load_fashion_mnist("test")
    np.savez(
        tmp_path / "data.npz",
        x=train[:512, ..., None].astype(np.float32),
        y=labels[:512],
        test=test[:128, ..., None].astype(np.float32),
    )
    run_code(
        backend,
        TINY,
        f"""
        import sys
        assert "tensorflow" not in sys.modules
        keras.utils.set_random_seed(0)
        data = np.load("{tmp_path}/data.npz")
        model = tiny((28, 28, 1))
        model.fit(data["x"], data["y"], batch_size=32, epochs=2, verbose=0)
        model.save("{tmp_path}/model.keras")
        np.save("{tmp_path}/logits.npy", model.predict_on_batch(data["test"]))
        """,
    )
    process = export_cli(
        f"--model={tmp_path / 'model.keras'}",
        f"--output_dir={tmp_path / 'out'}",
        "--data=fashion_mnist",
        "--deploy_check=false",
    )
    assert process.returncode == 0, process.stderr[-3000:]
    content = (tmp_path / "out/model_int8.tflite").read_bytes()
    assert integer_report(content) == []
    test_images = np.load(tmp_path / "data.npz")["test"]
    theirs = np.load(tmp_path / "logits.npy")
    here = keras.models.load_model(tmp_path / "model.keras")
    ours = here.predict_on_batch(test_images)
    assert np.abs(ours - theirs).max() < 1e-4 * np.abs(theirs).max()
    int8 = TFLiteModel(content)(test_images)
    agreement = output_agreement(theirs, int8)
    report = json.loads((tmp_path / "out/export_report.json").read_text())
    print(backend, agreement, report["accuracy"])
    assert report["accuracy"]["keras_fp32"] > 0.3, "the model did not train"
    # Within int8 error: as close as the int8 model is to the same model's
    # float outputs on TF, and close in absolute terms.
    on_tf = output_agreement(ours, int8)
    assert agreement["top1_agreement"] >= 0.9
    assert agreement["relative_rmse"] < 0.2
    assert abs(agreement["relative_rmse"] - on_tf["relative_rmse"]) < 1e-3


def test_jax_data_parallel_on_two_devices_equals_one(tmp_path):
    keras.utils.set_random_seed(0)
    np.savez(tmp_path / "init.npz", *_tiny_repopt().get_weights(), *_data(64))
    out = run_code(
        "jax",
        TINY,
        f"""
        import jax
        from repopt_tf.distribution import KerasDataParallel
        saved = np.load("{tmp_path}/init.npz")
        arrays = [saved[f"arr_{{i}}"] for i in range(len(saved.files))]
        weights, (x, y) = arrays[:-2], arrays[-2:]

        def train():
            model = tiny((32, 32, 3))
            model.set_weights(weights)
            history = model.fit(x, y, batch_size=16, epochs=2,
                                shuffle=False, verbose=0)
            return model.get_weights(), history.history["loss"]

        one, losses = train()
        strategy = KerasDataParallel()
        two, _ = train()
        print("devices", strategy.num_replicas_in_sync, len(jax.devices()))
        moved = max(np.abs(a - b).max() for a, b in zip(one, weights))
        gap = max(np.abs(a - b).max() for a, b in zip(one, two))
        print("moved", moved, "gap", gap, "losses", losses)
        """,
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )
    print(out)
    assert "devices 2 2" in out
    moved, gap = (
        float(v) for v in re.search(r"moved (\S+) gap (\S+)", out).groups()
    )
    assert moved > 1e-2
    assert gap < 1e-5 * max(moved, 1)


@pytest.mark.parametrize("tool", ["train.py", "export_tflite.py"])
def test_tools_without_tensorflow_say_so_in_one_line(tool):
    process = run_without_tensorflow("jax", [tool], timeout=300)
    assert process.returncode == 2
    assert process.stderr.strip().splitlines() == [
        f"error: {tool} (repopt-{tool.split('_')[0].split('.')[0]}) needs "
        "TensorFlow, which is not installed: pip install tensorflow-cpu (or "
        "tensorflow, for a GPU)."
    ]


def test_tensorflow_only_parts_name_what_they_need():
    out = run_code(
        "torch",
        """
        import sys
        import repopt_tf
        from repopt_tf.backend import MissingTensorFlowError
        for name in ("data", "export", "training", "multirate"):
            try:
                __import__(f"repopt_tf.{name}")
            except MissingTensorFlowError as error:
                print(name, "|", error)
        print("tensorflow imported:", "tensorflow" in sys.modules)
        """,
    )
    lines = dict(line.split(" | ") for line in out.splitlines() if "|" in line)
    assert set(lines) == {"data", "export", "training", "multirate"}
    assert "needs TensorFlow, which is not installed" in lines["export"]
    assert lines["multirate"].endswith(
        "runs on Keras's TensorFlow backend only, this process runs torch: "
        "set KERAS_BACKEND=tensorflow."
    )
    assert "tensorflow imported: False" in out


def _train_cli(backend, tmp_path, *flags):
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"--workdir={tmp_path}"]
        + [
            "--config=configs/fashion_mnist.py:baseline_sgd",
            "--config.model=repopt_vgg_tiny",
            "--config.data.train_limit=256",
            "--config.data.eval_limit=64",
            "--config.train.epochs=1",
            "--config.train.batch_size=32",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=dict(os.environ, KERAS_BACKEND=backend),
    )


def test_train_py_on_jax_with_data_parallel_on_two_devices(tmp_path):
    process = _train_cli(
        "jax", tmp_path, "--strategy=mirrored", "--cpu_devices=2"
    )
    assert process.returncode == 0, process.stderr[-3000:]
    assert "strategy mirrored (2 replicas)" in process.stdout
    assert "global batch 64 (32 x 2 replicas)" in process.stdout
    assert "precision float32, XLA on" in process.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert 0 <= results["baseline_sgd"]["test_accuracy"] <= 1
    model = keras.models.load_model(tmp_path / "baseline_sgd/model.keras")
    assert model.name == "repopt_vgg_tiny_plain"


def test_train_py_names_the_strategies_other_backends_lack(tmp_path):
    process = _train_cli("torch", tmp_path, "--strategy=mirrored")
    assert process.returncode == 1
    assert process.stderr.strip().splitlines()[-1] == (
        "error: --strategy=mirrored is tf.distribute's, for the TensorFlow "
        "backend; on torch use --strategy=default."
    )
