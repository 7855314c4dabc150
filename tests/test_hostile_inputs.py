"""Nothing silently wrong (issue #33): one writer per run folder, data
checked before the first step, non-finite numbers refused where they come
in, export sets that never mix, checkpoint readers that trust nothing,
flags that contradict each other refused, and a full disk named in one
line. Each case asserts the outcome, the message and what is left behind."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from repopt_tf.atomic import WriteError
from repopt_tf.atomic import save_model
from repopt_tf.atomic import write_text
from repopt_tf.checkpoints import load_weights
from repopt_tf.checkpoints import read_keras_model
from repopt_tf.checkpoints import read_safetensors
from repopt_tf.checkpoints import read_state_dict
from repopt_tf.checkpoints.torch_file import state_dict_from_checkpoint
from repopt_tf.configs import base
from repopt_tf.data import load_source
from repopt_tf.data import make_dataset
from repopt_tf.data.pipeline import align_classes
from repopt_tf.data.pipeline import check_classes
from repopt_tf.export import batch_limits
from repopt_tf.export.export_set import EXPORT_FILES
from repopt_tf.export.export_set import MANIFEST
from repopt_tf.export.export_set import read_export_set
from repopt_tf.export.export_set import staged_export
from repopt_tf.export.litert_eval import TFLiteModel
from repopt_tf.export.render import markdown_report
from repopt_tf.export.report import describe_outputs
from repopt_tf.export.report import exportable
from repopt_tf.finite import NonFiniteError
from repopt_tf.models import build_model
from repopt_tf.run_lock import LOCK_NAME
from repopt_tf.run_lock import RunLockedError
from repopt_tf.run_lock import run_lock
from repopt_tf.scales import load_scales
from repopt_tf.scales import save_scales
from repopt_tf.training import Experiment
from repopt_tf.training import TrainingDiverged
from repopt_tf.training import get_strategy

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests/fixtures/checkpoints"
QUICK_EXPORT = ("--representative=16", "--eval_limit=32", "--latency_runs=2")


def _cli(script, *args, env=None):
    result = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
    )
    return result.returncode, result.stdout + result.stderr


def _one_line_error(code, output, words):
    assert code != 0, output[-2000:]
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if "error" in line.lower()]
    assert any(words in line for line in errors), output[-2000:]


# --- one writer per run folder ------------------------------------------------


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    with run_lock(tmp_path, "test"):
        with pytest.raises(RunLockedError, match=f"PID {os.getpid()}, test"):
            with run_lock(tmp_path, "second"):
                pass
    with run_lock(tmp_path, "after"):  # released on exit
        pass


def test_wait_for_lock_waits_for_the_holder(tmp_path):
    released = []

    def hold():
        with run_lock(tmp_path, "holder"):
            time.sleep(1.0)
            released.append(time.monotonic())

    thread = threading.Thread(target=hold)
    thread.start()
    time.sleep(0.2)
    said = []
    with run_lock(tmp_path, "waiter", wait=True, log=said.append):
        got = time.monotonic()
    thread.join()
    assert got >= released[0] and "waiting for the other run" in said[0]


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path):
    code = (
        "import sys, time; from repopt_tf.run_lock import run_lock\n"
        f"with run_lock({str(tmp_path)!r}, 'victim'):\n"
        "    print('held', flush=True); time.sleep(60)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "held"
    with pytest.raises(RunLockedError, match=f"PID {child.pid}, victim"):
        with run_lock(tmp_path, "second"):
            pass
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert (tmp_path / LOCK_NAME).exists()  # left behind, and stale
    with run_lock(tmp_path, "next"):
        pass


@pytest.mark.parametrize(
    "script,args",
    [
        ("train.py", ["--workdir={dir}"]),
        ("export_tflite.py", ["--model={model}", "--output_dir={dir}"]),
    ],
)
def test_tools_refuse_a_folder_another_run_writes(tmp_path, script, args):
    model = tmp_path / "m.keras"
    build_model("repopt_vgg_tiny", 10, (28, 28, 1)).save(model)
    folder = tmp_path / "run"
    with run_lock(folder, "holder"):
        code, output = _cli(
            script,
            *(a.format(dir=folder, model=model) for a in args),
            *(QUICK_EXPORT if script == "export_tflite.py" else ()),
        )
    _one_line_error(code, output, f"PID {os.getpid()}, holder")
    assert "--wait_for_lock" in output
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]


# --- data checked before the first step ---------------------------------------


def _image_folder(root, splits, size=(12, 12), channels=3):
    """`root/<split>/<class>/<i>.png` for `splits = {split: {class: n}}`."""
    rng = np.random.default_rng(0)
    for split, classes in splits.items():
        for name, count in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(0, 255, (*size, channels), np.uint8)
                png = tf.io.encode_png(pixels).numpy()
                (folder / f"{index}.png").write_bytes(png)
    return f"folder:{root}"


def _labels(source):
    return [int(label) for _, label in source.dataset]


def test_test_classes_are_mapped_to_train_classes_by_name(tmp_path):
    name = _image_folder(
        tmp_path, {"train": {"a": 1, "b": 1, "c": 1}, "test": {"b": 2, "c": 1}}
    )
    train = load_source(name, "train")
    test = load_source(name, "test")
    assert _labels(test) == [0, 0, 1]  # by position: b is 0 in test
    aligned = align_classes(train, test, "test")
    assert _labels(aligned) == [1, 1, 2]  # by name: b is 1 in train
    assert aligned.num_classes == 3 and aligned.class_names == ("a", "b", "c")
    onehot = next(iter(make_dataset(aligned, 12, 4, training=False)))[1]
    assert onehot.shape == (3, 3)


def test_test_classes_that_train_lacks_are_refused(tmp_path):
    name = _image_folder(
        tmp_path, {"train": {"a": 1, "b": 1}, "test": {"b": 1, "c": 1}}
    )
    with pytest.raises(ValueError, match="classes the train split lacks: c"):
        align_classes(
            load_source(name, "train"), load_source(name, "test"), "test"
        )


def test_a_one_class_train_split_is_refused(tmp_path):
    name = _image_folder(tmp_path, {"train": {"only": 2}})
    with pytest.raises(ValueError, match=r"1 class \(only\): a classifier"):
        check_classes(load_source(name, "train"))


def test_unnamed_splits_with_other_class_counts_are_refused():
    train = load_source("fashion_mnist", "train", limit=8)
    other = train.__class__(train.dataset, 8, 7, 1)
    with pytest.raises(ValueError, match="has 7 classes, the train split 10"):
        align_classes(train, other, "test")


def test_unreadable_images_are_named_or_skipped_and_counted(tmp_path):
    name = _image_folder(tmp_path, {"train": {"a": 3, "b": 3}})
    broken = tmp_path / "train/b/1.png"
    broken.write_bytes(broken.read_bytes()[:40])  # a truncated file
    (tmp_path / "train/a/x.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(ValueError, match="2 image.* cannot be decoded") as e:
        load_source(name, "train")
    assert str(tmp_path / "train/a/x.jpg") in str(e.value)
    said = []
    from repopt_tf.data.pipeline import folder_source

    source = folder_source(tmp_path / "train", True, log=said.append)
    assert source.num_examples == 5 and "skipped 2 unreadable" in said[0]
    assert len(list(source.dataset)) == 5


def test_images_of_any_size_and_channels_are_fitted(tmp_path):
    _image_folder(tmp_path / "x", {"train": {"a": 1}}, size=(7, 40))
    _image_folder(tmp_path / "x", {"train": {"b": 1}}, size=(50, 9), channels=1)
    source = load_source(f"folder:{tmp_path / 'x'}", "train")
    images, _ = next(iter(make_dataset(source, 16, 2, training=False)))
    assert images.shape == (2, 16, 16, 3)


def test_train_py_refuses_mismatched_folder_classes(tmp_path):
    name = _image_folder(
        tmp_path / "data",
        {"train": {"a": 4, "b": 4}, "test": {"b": 2, "c": 2}},
        size=(16, 16),
    )
    code, output = _cli(
        "train.py",
        f"--config.data.name={name}",
        "--config.data.image_size=16",
        f"--workdir={tmp_path / 'run'}",
    )
    _one_line_error(code, output, "classes the train split lacks: c")


# --- numbers checked ----------------------------------------------------------


def test_a_keras_model_with_nan_weights_is_refused_by_name(tmp_path):
    model = build_model("repopt_vgg_tiny", 10, (16, 16, 1))
    bn = next(v for v in model.weights if "moving_variance" in v.path)
    bn.assign(np.full(bn.shape, np.nan, np.float32))
    model.save(tmp_path / "nan.keras")
    with pytest.raises(NonFiniteError, match=f"tensor '{bn.path}' holds"):
        read_keras_model(tmp_path / "nan.keras")
    target = build_model("repopt_vgg_tiny", 10, (16, 16, 1))
    with pytest.raises(NonFiniteError):
        load_weights(target, tmp_path / "nan.keras")  # an init checkpoint
    with pytest.raises(NonFiniteError, match="moving_variance"):
        exportable(model, log=lambda m: None)  # a model in memory


def test_init_checkpoint_with_nan_statistics_stops_train_py(tmp_path):
    model = build_model("repopt_vgg_tiny", 10, (28, 28, 1))
    bn = next(v for v in model.weights if "moving_variance" in v.path)
    bn.assign(np.full(bn.shape, np.nan, np.float32))
    model.save(tmp_path / "nan.keras")
    code, output = _cli(
        "train.py",
        "--config.mode=baseline_sgd",
        f"--config.init_checkpoint={tmp_path / 'nan.keras'}",
        "--config.data.train_limit=128",
        "--config.train.batch_size=32",
        f"--workdir={tmp_path / 'run'}",
    )
    _one_line_error(code, output, "NaN/inf")
    assert not list((tmp_path / "run").rglob("model.keras"))


def test_scales_with_nan_or_uneven_lengths_are_refused(tmp_path):
    blocks = [{"conv": np.ones(4), "1x1": np.ones(4), "identity": None}]
    save_scales(tmp_path / "ok.npz", blocks)
    assert len(load_scales(tmp_path / "ok.npz")) == 1
    blocks[0]["1x1"] = np.array([1.0, np.nan, 1.0, 1.0])
    save_scales(tmp_path / "nan.npz", blocks)
    with pytest.raises(NonFiniteError, match="block 0 1x1"):
        load_scales(tmp_path / "nan.npz")
    blocks[0]["1x1"] = np.ones(3)
    save_scales(tmp_path / "short.npz", blocks)
    with pytest.raises(ValueError, match=r"differ in length \(conv 4, 1x1 3"):
        load_scales(tmp_path / "short.npz")


def test_divergence_keeps_the_last_good_epoch_and_says_how_to_resume(
    tmp_path, monkeypatch
):
    from repopt_tf.training import callbacks

    config = base.get_config()
    config.mode, config.model = "baseline_sgd", "repopt_vgg_tiny"
    config.data.train_limit, config.data.eval_limit = 256, 64
    config.train.batch_size, config.train.epochs = 32, 2

    def poison(self, batch, logs=None):  # a NaN weight in epoch 2, step 3
        if self._epoch == 1 and batch == 1:
            kernel = self.model.get_layer("classifier").kernel
            kernel.assign(np.full(kernel.shape, np.nan, np.float32))

    monkeypatch.setattr(callbacks.FaultPoints, "on_train_batch_end", poison)
    with pytest.raises(TrainingDiverged) as raised:
        Experiment(config, tmp_path, get_strategy()).run()
    message = str(raised.value)
    assert "epoch 2, step 3" in message and "(1 epochs) is kept" in message
    stage = tmp_path / "baseline_sgd"
    assert str(stage / "checkpoint.keras") in message
    assert not (stage / "model.keras").exists()
    state = json.loads((stage / "backup/state.json").read_text())
    assert [b["epoch"] for b in state["backups"]] == [1]


# --- outputs that never mix ---------------------------------------------------


def _old_set(folder):
    with staged_export(folder, {"path": "old.keras", "sha256": "0" * 64}) as f:
        for name in EXPORT_FILES:
            (f / name).write_text(f"old {name}")
    return read_export_set(folder)


def test_a_new_set_replaces_the_old_one_whole(tmp_path):
    _old_set(tmp_path)
    (tmp_path / "model.keras").write_text("kept")  # not part of the set
    with staged_export(tmp_path) as folder:
        (folder / "model_int8.tflite").write_text("new")
        (folder / "export_report.json").write_text("{}")
    manifest = read_export_set(tmp_path)
    assert sorted(manifest["files"]) == [
        "export_report.json",
        "model_int8.tflite",
    ]
    assert not (tmp_path / "model_fp32.tflite").exists()  # the old one's
    assert (tmp_path / "model.keras").read_text() == "kept"
    assert not list(tmp_path.glob(".export-staging-*"))


def test_a_failed_export_leaves_the_old_set_complete(tmp_path):
    old = _old_set(tmp_path)
    with pytest.raises(RuntimeError, match="converter died"):
        with staged_export(tmp_path) as folder:
            (folder / "model_int8.tflite").write_text("half")
            raise RuntimeError("converter died")
    assert read_export_set(tmp_path) == old
    assert (
        tmp_path / "model_int8.tflite"
    ).read_text() == "old model_int8.tflite"


def test_a_set_without_manifest_or_with_a_changed_file_is_refused(tmp_path):
    _old_set(tmp_path)
    (tmp_path / "model_int8.tflite").write_text("another model")
    with pytest.raises(ValueError, match="not the file exported"):
        read_export_set(tmp_path)
    (tmp_path / MANIFEST).unlink()
    with pytest.raises(FileNotFoundError, match="no complete export"):
        read_export_set(tmp_path)


def test_an_export_killed_mid_write_leaves_the_old_set(tmp_path):
    model = tmp_path / "m.keras"
    build_model("repopt_vgg_tiny", 10, (28, 28, 1)).save(model)
    out = tmp_path / "out"
    old = _old_set(out)
    args = (f"--model={model}", f"--output_dir={out}", *QUICK_EXPORT)
    env = {"REPOPT_TF_KILL_AT": "write:model_int8.tflite"}
    code, _ = _cli("export_tflite.py", *args, env=env)
    assert code == -signal.SIGKILL
    assert read_export_set(out) == old  # untouched, still complete
    code, output = _cli("export_tflite.py", *args, "--nodeploy_check")
    assert code == 0, output[-2000:]
    manifest = read_export_set(out)  # the killed run's staging is gone
    assert manifest["source"]["path"] == str(model.resolve())
    report = json.loads((out / "export_report.json").read_text())
    assert report["source"] == manifest["source"]
    assert (
        f"Made from `{model.resolve()}`"
        in (out / "export_report.md").read_text()
    )
    assert not list(out.glob(".export-staging-*"))


# --- checkpoint readers that trust nothing ------------------------------------


def _safetensors(path, entries, tail=b""):
    """Writes `entries = {name: (dtype, shape, [begin, end], raw bytes)}`."""
    header = {
        name: {"dtype": dtype, "shape": shape, "data_offsets": offsets}
        for name, (dtype, shape, offsets, _) in entries.items()
    }
    body = b"".join(raw for *_, raw in entries.values()) + tail
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + body)
    return path


FOUR = np.arange(4, dtype=np.float32).tobytes()


@pytest.mark.parametrize(
    "entries,tail,words",
    [
        (
            {
                "a": ("F32", [4], [0, 16], FOUR),
                "b": ("F32", [2], [8, 16], b""),
            },
            b"",
            "'b' (bytes 8-16) overlaps 'a'",
        ),
        (
            {
                "a": ("F32", [2], [0, 8], FOUR[:8]),
                "b": ("F32", [1], [12, 16], FOUR[8:]),
            },
            b"",
            "leaves a gap after 'a'",
        ),
        ({"a": ("F32", [4], [0, 16], FOUR)}, b"junk", "cover 16 of the 20"),
    ],
)
def test_safetensors_offsets_must_tile_the_data(tmp_path, entries, tail, words):
    path = _safetensors(tmp_path / "x.safetensors", entries, tail)
    with pytest.raises(
        ValueError, match=words.replace("(", r"\(").replace(")", r"\)")
    ):
        read_safetensors(path)


def test_a_bool_weight_is_refused_by_name(tmp_path):
    path = _safetensors(
        tmp_path / "b.safetensors",
        {"stem.conv.weight": ("BOOL", [4], [0, 4], b"\x01\x00\x01\x01")},
    )
    with pytest.raises(ValueError, match="'stem.conv.weight' has dtype bool"):
        read_state_dict(path)


def test_a_nan_tensor_in_a_safetensors_file_is_named(tmp_path):
    values = np.array([1.0, np.inf, 0.0, 2.0], np.float32).tobytes()
    path = _safetensors(
        tmp_path / "n.safetensors",
        {"head.fc.weight": ("F32", [4], [0, 16], values)},
    )
    with pytest.raises(
        NonFiniteError, match="'head.fc.weight' holds 1 NaN/inf"
    ):
        read_state_dict(path)


@pytest.mark.parametrize(
    "checkpoint,ema,words",
    [
        ({1: np.ones(2)}, False, "under the key 1 (int)"),
        (
            {"model": {"a": np.ones(2)}, "ema": None},
            True,
            "'ema' entry is NoneType",
        ),
        ({"ema": [np.ones(2)]}, True, "'ema' entry is list"),
        ({"a": np.array([np.nan])}, False, "'a' holds 1 NaN/inf"),
        ({"a": np.array([True])}, False, "'a' has dtype bool"),
    ],
)
def test_odd_state_dicts_are_named_in_one_line(checkpoint, ema, words):
    with pytest.raises(ValueError) as raised:
        state_dict_from_checkpoint(checkpoint, ema, "x.pth")
    assert words in str(raised.value) and "\n" not in str(raised.value)


def test_a_pth_storage_shorter_than_its_tensor_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    good = tmp_path / "good.pth"
    torch.save({"stem.weight": torch.arange(16.0).reshape(4, 4)}, good)
    assert read_state_dict(good)["stem.weight"].shape == (4, 4)
    short = tmp_path / "short.pth"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(short, "w") as out:
        for item in source.infolist():
            data = source.read(item)
            if "/data/" in item.filename and not item.filename.endswith(".pkl"):
                data = data[:24]  # 6 of 16 floats
            out.writestr(item, data)
    with pytest.raises(ValueError, match="reads element 15 of a 6-element"):
        read_state_dict(short)


def test_a_conv_weight_of_the_wrong_rank_is_named(tmp_path):
    from repopt_tf.checkpoints import load_state_dict
    from repopt_tf.models.repopt_vgg.fixtures import synthetic_state_dict

    state = synthetic_state_dict("repopt_vgg_tiny", "repopt_target", 10, 1)
    key = next(k for k in state if k.endswith("conv.weight"))
    state[key] = state[key][..., 0]  # 3-D, not (out, in, 3, 3)
    model = build_model("repopt_vgg_tiny", 10, (32, 32, 1))
    with pytest.raises(ValueError, match=f"{key} has shape"):
        load_state_dict(model, state, source="x.pth")


# --- flags --------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--checkpoint=a.pth", "--model=b.keras"],
        ["--model=b.keras", "--workdir=runs/x"],
        ["--checkpoint=a.pth", "--workdir=runs/x"],
    ],
)
def test_export_sources_are_mutually_exclusive(args):
    code, output = _cli("export_tflite.py", *args)
    assert code != 0 and "Traceback" not in output
    assert "At most one of" in output, output[-1000:]


def test_a_fixed_batch_is_bounded_by_calibration_images_and_memory(
    monkeypatch,
):
    model = build_model("repopt_vgg_tiny", 10, (28, 28, 1))
    batch_limits.check_fixed_batch(model, 64, representative=300)
    with pytest.raises(ValueError, match="larger than the 300 representative"):
        batch_limits.check_fixed_batch(model, 100000, representative=300)
    per_image = batch_limits.activation_bytes_per_image(model)
    assert per_image > 4 * 28 * 28 * 8  # at least the first conv's output
    monkeypatch.setattr(batch_limits, "available_memory_bytes", lambda: 2**20)
    with pytest.raises(ValueError, match="more than half the 0.0 GiB free"):
        batch_limits.check_fixed_batch(model, 64, representative=300)


def test_export_refuses_a_huge_batch_at_once(tmp_path):
    model = tmp_path / "m.keras"
    build_model("repopt_vgg_tiny", 10, (28, 28, 1)).save(model)
    code, output = _cli(
        "export_tflite.py",
        f"--model={model}",
        "--batch_size=100000",
        *QUICK_EXPORT,
    )
    _one_line_error(code, output, "larger than the 16 representative")
    assert not list(tmp_path.glob("*.tflite"))


def _two_output_model():
    inputs = keras.Input((8, 8, 1))
    features = keras.layers.Conv2D(4, 3, name="features")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    logits = keras.layers.Dense(3, name="logits")(pooled)
    return keras.Model(inputs, [logits, features])


def test_multi_output_and_feature_map_models_say_what_is_measured():
    said = []
    rows = describe_outputs(_two_output_model(), log=said.append)
    assert [r["shape"] for r in rows] == [[3], [6, 6, 4]]
    assert [r["measured"] for r in rows] == [True, False]
    assert "2 outputs" in said[0] and "not measured" in said[0]
    inputs = keras.Input((8, 8, 1))
    feature_map = keras.Model(inputs, keras.layers.Conv2D(10, 3)(inputs))
    said = []
    (row,) = describe_outputs(feature_map, log=said.append)
    assert not row["classifier"] and "not a classifier" in said[0]


def test_the_report_names_unmeasured_outputs_and_the_invoke_batch(tmp_path):
    from repopt_tf.export import export_model

    train = load_source("fashion_mnist", "train", limit=32)
    test = load_source("fashion_mnist", "test", limit=16)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    features = keras.layers.Conv2D(10, 3, name="features")(x)
    logits = keras.layers.Dense(10)(keras.layers.Flatten()(features))
    model = keras.Model(inputs, [features, logits])  # a feature map first
    report = export_model(
        model,
        train,
        test,
        tmp_path,
        representative=8,
        latency_runs=2,
        threads=(1,),
        log=lambda m: None,
        batch_size=4,
        run_micro=None,
        deploy_images=8,
    )
    assert report["accuracy"] is None  # a feature map has no top-1
    assert {t["batch"] for t in report["latency"]} == {4}
    assert report["deploy"]["batch"] == 4
    text = (tmp_path / "export_report.md").read_text()
    assert "not measured (not a classifier)" in text
    assert "Latency per invoke, batch 4" in text
    assert "Converted but not measured" in text
    assert report["deploy"]["accuracy"]["images"] == 8
    if report["deploy"]["micro"].get("loads"):  # tflite-micro installed
        assert "fp32_agreement" in report["deploy"]["accuracy"]["micro"]
    assert markdown_report(report) == text


# --- full disks and write errors ----------------------------------------------


def test_a_full_disk_is_one_line_naming_the_file_and_the_space(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("REPOPT_TF_DISK_FULL_AT", "model.keras")
    with pytest.raises(WriteError) as raised:
        write_text(tmp_path / "model.keras", "x")
    message = str(raised.value)
    assert f"cannot write {tmp_path / 'model.keras'}" in message
    assert "free on its disk" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []  # no temporary left behind


def test_save_model_refuses_a_disk_too_small_up_front(tmp_path, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        shutil, "disk_usage", lambda path: usage._replace(free=1000)
    )
    with pytest.raises(WriteError, match="bytes are needed; 1000 B free"):
        save_model(build_model("repopt_vgg_tiny"), tmp_path / "m.keras")
    assert list(tmp_path.iterdir()) == []


def test_train_py_on_a_full_disk_exits_with_one_line(tmp_path):
    code, output = _cli(
        "train.py",
        "--config.mode=baseline_sgd",
        "--config.data.train_limit=128",
        "--config.train.batch_size=32",
        "--config.data.eval_limit=64",
        f"--workdir={tmp_path}",
        env={"REPOPT_TF_DISK_FULL_AT": "checkpoint.keras"},
    )
    _one_line_error(code, output, "No space left on device")
    assert "free on its disk" in output
    assert not list(tmp_path.rglob("*.keras"))
    assert not list(tmp_path.rglob(".tmp-*"))


# --- LiteRT kernels that refuse a model late ----------------------------------


def test_xnnpack_refusing_at_invoke_time_falls_back(monkeypatch):
    from repopt_tf.export import convert_float32

    content = convert_float32(build_model("repopt_vgg_tiny", 10, (16, 16, 1)))
    model = TFLiteModel(content)
    run, calls = model._run, []

    def refusing(images, batch):
        calls.append(batch)
        if len(calls) == 1:
            raise RuntimeError("failed to create XNNPACK runtime")
        return run(images, batch)

    monkeypatch.setattr(model, "_run", refusing)
    outputs = model(np.zeros((2, 16, 16, 1), np.float32))
    assert outputs.shape == (2, 10) and len(calls) == 2
    assert model.xnnpack_error == "failed to create XNNPACK runtime"
