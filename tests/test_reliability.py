"""Reproducibility and crash safety: one seed reruns to identical weights,
and a run killed with SIGKILL at any point resumes to the very weights of an
uninterrupted run (`repopt_tf.faults` points)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from repopt_tf import RepOptSGD
from repopt_tf.configs import base
from repopt_tf.models import build_model
from repopt_tf.training import Experiment
from repopt_tf.training import get_strategy
from repopt_tf.training.callbacks import EpochBackup
from repopt_tf.training.callbacks import backups
from repopt_tf.training.callbacks import restore_backup

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--config.model=repopt_vgg_tiny",
    "--config.data.train_limit=512",
    "--config.data.eval_limit=128",
    "--config.train.batch_size=64",
    "--config.train.epochs=3",
    "--config.hs.epochs=2",
    "--config.quickstart.baselines=False",
    "--config.deterministic=True",
]


def _train(workdir, *args, kill_at=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("REPOPT_TF_KILL_AT", None)
    if kill_at:
        env["REPOPT_TF_KILL_AT"] = kill_at
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"--workdir={workdir}"]
        + TINY
        + list(args),
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def _weights(path):
    return keras.models.load_model(path, compile=False).get_weights()


def _assert_same_weights(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_one_seed_reruns_to_identical_weights(tmp_path):
    """--config.deterministic=True: the same command twice, the same
    weights to the bit (the issue's report: 0.7600 vs 0.7420 before)."""
    args = ["--config.mode=baseline_sgd", "--config.train.epochs=2"]
    first, second = (_train(tmp_path / run, *args) for run in "ab")
    assert first.returncode == 0, first.stderr[-2000:]
    assert second.returncode == 0, second.stderr[-2000:]
    _assert_same_weights(
        _weights(tmp_path / "a/baseline_sgd/model.keras"),
        _weights(tmp_path / "b/baseline_sgd/model.keras"),
    )


def _lr0_config(seed):
    config = base.get_config()
    config.mode = "baseline_sgd"
    config.model = "repopt_vgg_tiny"
    config.seed = seed
    config.data.train_limit = 128
    config.data.eval_limit = 64
    config.data.validation = "none"
    config.train.batch_size = 64
    config.train.epochs = 1
    config.train.base_lr = 0.0  # the kernels stay at their initial values
    return config


def test_seed_fixes_initial_weights_without_determinism(tmp_path):
    def kernels(seed, run):
        Experiment(_lr0_config(seed), tmp_path / run, get_strategy()).run()
        model = keras.models.load_model(
            tmp_path / run / "baseline_sgd/model.keras"
        )
        return [np.asarray(v) for v in model.weights if "kernel" in v.path]

    first, again, other = kernels(0, "a"), kernels(0, "b"), kernels(1, "c")
    _assert_same_weights(first, again)
    assert not np.array_equal(first[0], other[0])


def _compiled_tiny():
    model = build_model("repopt_vgg_tiny", 10, (16, 16, 1))
    model.compile(
        optimizer=RepOptSGD(0.1, momentum=0.9),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    return model


def _step(model, seed):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (8, 16, 16, 1)).astype(np.float32)
    labels = keras.utils.to_categorical(rng.integers(0, 10, 8), 10)
    model.train_on_batch(images, labels)


@pytest.mark.parametrize("corrupt", ["previous", "scratch"])
def test_corrupt_backup_falls_back(tmp_path, corrupt):
    keras.utils.set_random_seed(0)
    model = _compiled_tiny()
    backup = EpochBackup(tmp_path)
    backup.set_model(model)
    saved = []
    for epoch in range(3):
        _step(model, epoch)
        backup.on_epoch_end(epoch)
        saved.append([v.numpy() for v in model.variables])
    assert [entry["epoch"] for entry in backups(tmp_path)] == [3, 2]
    assert sorted(p.name for p in tmp_path.glob("*.h5")) == [
        "epoch_2.weights.h5",
        "epoch_3.weights.h5",
    ]
    (tmp_path / "epoch_3.weights.h5").write_bytes(b"\x89HDF\r\n garbage")

    keras.utils.set_random_seed(1)
    fresh = _compiled_tiny()
    initial = [v.numpy() for v in fresh.variables]
    messages = []
    epoch = restore_backup(fresh, tmp_path, corrupt, log=messages.append)
    assert "epoch_3.weights.h5 is unreadable" in messages[0]
    if corrupt == "previous":
        assert epoch == 2 and "resuming from" in messages[-1]
        expected = saved[1]
    else:
        assert epoch == 0 and "from scratch" in messages[-1]
        expected = initial
    _assert_same_weights([v.numpy() for v in fresh.variables], expected)
    assert int(fresh.optimizer.iterations) == (2 if epoch else 0)


@pytest.mark.slow
def test_kill_9_at_any_point_resumes_to_identical_weights(tmp_path):
    """SIGKILL during an epoch, while a backup or a model is written (the
    file complete under its temporary name, not yet renamed), between
    stages, and with the newest backup corrupted afterwards: each rerun
    ends with the weights of the uninterrupted run."""
    reference = _train(tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr[-2000:]
    expected = _weights(tmp_path / "reference/target/model.keras")
    cases = [  # point, corrupt_backup, what the rerun says
        ("batch:target:1:3", None, "target: resuming from"),
        ("write:epoch_1.weights.h5", None, "hs: repopt_vgg_tiny (hs), 2"),
        ("stage:hs", None, "hs: already trained"),
        ("write:model.keras", None, "hs: resuming from"),
        ("batch:target:2:0", "previous", "epoch_1.weights.h5 (1 epochs"),
        ("batch:target:2:0", "scratch", "target: no readable backup"),
    ]
    for index, (point, corrupt, says) in enumerate(cases):
        workdir = tmp_path / f"run{index}"
        killed = _train(workdir, kill_at=point)
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr)
        args = []
        if corrupt:
            newest = backups(workdir / "target/backup")[0]
            assert newest["epoch"] == 2
            (workdir / "target/backup" / newest["file"]).write_bytes(b"junk")
            args = [f"--config.corrupt_backup={corrupt}"]
        rerun = _train(workdir, *args)
        assert rerun.returncode == 0, (point, rerun.stderr[-2000:])
        if corrupt:
            assert "is unreadable" in rerun.stdout
        assert says in rerun.stdout, (point, rerun.stdout[-3000:])
        _assert_same_weights(_weights(workdir / "target/model.keras"), expected)
