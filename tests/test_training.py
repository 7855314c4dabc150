import csv
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from repopt_tf.configs import base
from repopt_tf.models import build_model
from repopt_tf.optimizers.grad_mult import saved_grad_mults
from repopt_tf.training import Experiment
from repopt_tf.training import TrainingDiverged
from repopt_tf.training import get_strategy
from repopt_tf.training import results_table
from repopt_tf.training.recipe import build_optimizer
from repopt_tf.training.recipe import grad_mult_summary
from repopt_tf.training.recipe import learning_rate_schedule
from repopt_tf.training.recipe import scaled_hyperparameters

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(mode="quickstart", **train):
    config = base.get_config()
    config.mode = mode
    config.model = "repopt_vgg_tiny"
    config.data.train_limit = 256
    config.data.eval_limit = 128
    config.train.batch_size = 32
    config.train.epochs = 1
    config.hs.epochs = 1
    config.train.update(train)
    return config


def test_batch_scaling_is_linear_and_explicit():
    train = base.get_config().train
    train.base_lr, train.reference_batch, train.weight_decay = 0.1, 256, 4e-5
    assert scaled_hyperparameters(train, 512) == pytest.approx((0.2, 4e-5))
    train.scale_weight_decay = True
    assert scaled_hyperparameters(train, 512) == pytest.approx((0.2, 8e-5))


def test_warmup_cosine_schedule():
    schedule = learning_rate_schedule(
        0.4, epochs=10, warmup_epochs=2, steps_per_epoch=10
    )
    values = [float(schedule(step)) for step in (0, 10, 20, 60, 100)]
    assert values[0] == pytest.approx(0.0)
    assert values[1] == pytest.approx(0.2)
    assert values[2] == pytest.approx(0.4)
    assert values[3] == pytest.approx(0.2)
    assert values[4] == pytest.approx(0.0, abs=1e-7)
    flat = learning_rate_schedule(
        0.4, epochs=1, warmup_epochs=0, steps_per_epoch=4
    )
    assert float(flat(0)) == pytest.approx(0.4)


def test_grad_mult_summary_per_stage():
    lines = grad_mult_summary(
        {
            "stage1_block0_conv/kernel": np.full((3, 3, 1, 1), 2.0),
            "stage1_block1_conv/kernel": np.full((3, 3, 1, 1), 4.0),
            "stage2_block0_conv/kernel": np.full((3, 3, 1, 1), 1.0),
        }
    )
    assert lines == [
        "stage1: 2 kernels, grad mult min 2.0000 mean 3.0000 max 4.0000",
        "stage2: 1 kernels, grad mult min 1.0000 mean 1.0000 max 1.0000",
    ]


def test_quickstart_workflow_end_to_end(tmp_path):
    results = Experiment(tiny_config(), tmp_path, get_strategy()).run()
    stages = [r.stage for r in results]
    assert stages == [
        "hs",
        "target",
        "baseline_sgd",
        "baseline_repvgg",
        "baseline_repvgg_fused",
    ]
    for result in results:
        assert 0.0 <= result.test_accuracy <= 1.0
    # Fusion is exact, so the deploy model scores the same.
    assert results[3].test_accuracy == pytest.approx(
        results[4].test_accuracy, abs=1 / 128 + 1e-6
    )
    assert (tmp_path / "hs/scales.npz").exists()
    # The fused model is saved as built: no optimizer nobody chose.
    with zipfile.ZipFile(tmp_path / "baseline_repvgg/model_fused.keras") as z:
        assert not json.loads(z.read("config.json")).get("compile_config")
    recorded = json.loads((tmp_path / "results.json").read_text())
    assert set(recorded) == set(stages)
    for stage in ("hs", "target", "baseline_sgd", "baseline_repvgg"):
        assert (tmp_path / stage / "model.keras").exists()
        rows = list(csv.DictReader(open(tmp_path / stage / "log.csv")))
        assert len(rows) == 1 and float(rows[0]["loss"]) > 0
        # Validated every epoch on the held-out 5 % (13 of 256 images).
        assert 0 <= float(rows[0]["val_accuracy"]) <= 1
        assert float(rows[0]["val_loss"]) > 0
        assert (tmp_path / stage / "tensorboard/validation").is_dir()
        assert not (tmp_path / stage / "backup").exists()

    # A rerun reuses finished stages instead of retraining them.
    again = Experiment(tiny_config(), tmp_path, get_strategy()).run()
    assert [r.test_accuracy for r in again] == [
        r.test_accuracy for r in results
    ]
    assert recorded["target"]["train_images"] == 243  # 256 less 13 held out
    with pytest.raises(ValueError, match="use a new --workdir"):
        Experiment(
            tiny_config(mode="baseline_sgd", epochs=2), tmp_path, get_strategy()
        ).run()
    other_data = tiny_config(mode="baseline_sgd")
    other_data.data.train_limit = 320
    with pytest.raises(
        ValueError,
        match="on 243 training images, not "
        "repopt_vgg_tiny for 1 on 304; use a new --workdir",
    ):
        Experiment(other_data, tmp_path, get_strategy()).run()
    # Any other change to what a stage trains is refused, naming the field.
    other_lr = tiny_config(mode="baseline_sgd", base_lr=0.05)
    with pytest.raises(
        ValueError,
        match=r"holds a finished run with another "
        r"config \(train\.base_lr: 0\.1 -> 0\.05\)",
    ):
        Experiment(other_lr, tmp_path, get_strategy()).run()
    other_augment = tiny_config(mode="hs")
    other_augment.data.augment = "none"
    with pytest.raises(ValueError, match="data.augment: 'crop_flip' -> 'none'"):
        Experiment(other_augment, tmp_path, get_strategy()).run()
    # A change only another stage reads keeps the stage valid.
    other_hs = tiny_config(mode="baseline_sgd")
    other_hs.hs.clip_global_norm = 1.0
    Experiment(other_hs, tmp_path, get_strategy()).run()
    saved = json.loads((tmp_path / "baseline_sgd/config.json").read_text())
    assert saved["train.base_lr"] == 0.1 and "hs.epochs" not in saved
    # A stage recorded before a config field existed stays valid while the
    # field keeps its default, and is refused once it does not.
    del saved["train.precision"]
    (tmp_path / "baseline_sgd/config.json").write_text(json.dumps(saved))
    Experiment(tiny_config(mode="baseline_sgd"), tmp_path, get_strategy()).run()
    with pytest.raises(
        ValueError, match="train.precision: 'float32' -> 'mixed_bfloat16'"
    ):
        Experiment(
            tiny_config(mode="baseline_sgd", precision="mixed_bfloat16"),
            tmp_path,
            get_strategy(),
        ).run()


def test_target_mode_uses_scales_and_logs_mults(tmp_path, capsys):
    hs = Experiment(tiny_config("hs"), tmp_path / "hs_run", get_strategy())
    hs.run()
    config = tiny_config("target")
    config.scales = str(tmp_path / "hs_run/hs/scales.npz")
    Experiment(config, tmp_path / "target_run", get_strategy()).run()
    out = capsys.readouterr().out
    assert "target: stage0: 1 kernels, grad mult min" in out
    # Not a terminal: progress lines within the epoch (7 steps).
    assert "[repopt] target: epoch 1/1, step 6/7 (85 %), loss" in out
    # Fine-tuning the target model: its own Grad Mults, no scales.
    trained = tmp_path / "target_run/target/model.keras"
    tune = tiny_config("target", base_lr=0.01)
    tune.init_checkpoint = str(trained)
    Experiment(tune, tmp_path / "tune_run", get_strategy()).run()
    assert f"Grad Mults of 6 kernels from {trained}" in capsys.readouterr().out
    name, before = saved_grad_mults(trained)
    _, after = saved_grad_mults(tmp_path / "tune_run/target/model.keras")
    assert name == "RepOptSGD" and sorted(before) == sorted(after)
    for key, mult in before.items():
        np.testing.assert_array_equal(after[key], mult)
    tune.train.optimizer = "adamw"
    with pytest.raises(ValueError, match="Grad Mults of RepOptSGD, not of"):
        Experiment(tune, tmp_path / "tune_adamw", get_strategy()).run()
    config.scales = ""
    with pytest.raises(ValueError, match="target mode needs --config.scales"):
        Experiment(config, tmp_path / "t2", get_strategy()).run()
    config.scales = "repopt_vgg_b1"
    with pytest.raises(
        ValueError, match="describe 28 blocks but the model has 6"
    ):
        Experiment(config, tmp_path / "t3", get_strategy()).run()


def test_mirrored_strategy_uses_global_batch(tmp_path):
    strategy = get_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2  # conftest's logical CPUs
    experiment = Experiment(tiny_config("baseline_sgd"), tmp_path, strategy)
    assert experiment.global_batch == 64
    assert experiment.steps_per_epoch == 3  # 243 images (13 held out) // 64
    (result,) = experiment.run()
    assert 0.0 <= result.test_accuracy <= 1.0


def test_divergence_stops_with_a_clear_message(tmp_path):
    config = tiny_config("baseline_sgd", base_lr=1e12, epochs=3)
    with pytest.raises(TrainingDiverged, match="lower learning rate"):
        Experiment(config, tmp_path, get_strategy()).run()


def _train_py(*args, **kwargs):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (["--config.mode=nope"], "config.mode must be one of"),
        (
            ["--config.mode=target", "--config.scales=/no/such.npz"],
            "Scales file '/no/such.npz' not found",
        ),
        (["--strategy=gpu_farm"], "value should be one of"),
        (["--config.train.epochs=many"], "flag --config.train.epochs=many"),
    ],
)
def test_cli_bad_input_gives_message_not_traceback(tmp_path, args, message):
    process = _train_py(f"--workdir={tmp_path}", *args)
    out, err = process.communicate(timeout=120)
    assert process.returncode != 0
    assert message.lower() in (out + err).lower()
    assert "Traceback" not in err


def test_killed_run_resumes_from_last_epoch(tmp_path):
    args = [
        f"--workdir={tmp_path}",
        "--config.mode=baseline_sgd",
        "--config.model=repopt_vgg_tiny",
        "--config.data.train_limit=2048",
        "--config.data.eval_limit=64",
        "--config.train.epochs=12",
    ]
    log = tmp_path / "baseline_sgd/log.csv"
    process = _train_py(*args)
    deadline = time.time() + 120
    while time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = len(log.read_text().splitlines()) - 1
    assert 2 <= done_before < 12

    process = _train_py(*args)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-2000:]
    epochs = [int(row["epoch"]) for row in csv.DictReader(open(log))]
    # The rerun continues after the last backed-up epoch (the kill may fall
    # between the backup and the CSV row) instead of starting over.
    assert epochs[:done_before] == list(range(done_before))
    assert epochs[done_before] in (done_before, done_before + 1)
    assert epochs[-1] == 11

    # A refused rerun (another LR) leaves the run's config.json as it was.
    written = (tmp_path / "config.json").read_text()
    process = _train_py(*args, "--config.train.base_lr=0.05")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1
    assert "train.base_lr: 0.1 -> 0.05" in err and "Traceback" not in err
    assert (tmp_path / "config.json").read_text() == written


def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_mirrored_with_two_local_workers(tmp_path):
    workers = [f"localhost:{_free_port()}" for _ in range(2)]
    processes = []
    for index in range(2):
        tf_config = {
            "cluster": {"worker": workers},
            "task": {"type": "worker", "index": index},
        }
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps(tf_config),
            TF_CPP_MIN_LOG_LEVEL="3",
        )
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "train.py"),
                    "--strategy=multi_worker",
                    f"--workdir={tmp_path / f'worker{index}'}",
                    "--config.mode=baseline_sgd",
                    "--config.model=repopt_vgg_tiny",
                    "--config.data.train_limit=512",
                    "--config.data.eval_limit=128",
                    "--config.train.batch_size=32",
                    "--config.train.epochs=2",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
        assert "(2 replicas)" in out
        assert "global batch 64 (32 x 2 replicas)" in out
    accuracies = [
        json.loads((tmp_path / f"worker{i}/results.json").read_text())[
            "baseline_sgd"
        ]["test_accuracy"]
        for i in range(2)
    ]
    assert accuracies[0] == accuracies[1]


@pytest.mark.slow
def test_default_quickstart_end_to_end(tmp_path):
    """The README's main job: `python train.py` with no config overrides."""
    process = _train_py(f"--workdir={tmp_path}")
    out, err = process.communicate(timeout=1800)
    assert process.returncode == 0, err[-3000:]
    recorded = json.loads((tmp_path / "results.json").read_text())
    # Measured 0.857 for both (docs/results.md); a broken optimizer stays far below.
    assert recorded["target"]["test_accuracy"] > 0.82
    assert recorded["baseline_sgd"]["test_accuracy"] > 0.82
    assert "| target | repopt_vgg_s | plain | RepOptSGD |" in out


def test_rpg_runs_are_named_as_such(tmp_path, capsys):
    config = tiny_config("baseline_sgd")
    config.rpg.dof = 0.05
    (result,) = Experiment(config, tmp_path, get_strategy()).run()
    assert result.kind == "rpg0.05 (signed_permutation, window)"
    assert "RPG ring 0.05 of the 3x3 weights" in capsys.readouterr().out
    assert "| rpg0.05 (signed_permutation, window) | SGD |" in results_table(
        [result]
    )


@pytest.mark.parametrize("identity_decay", [True, False])
def test_hs_weight_decay_follows_the_reference(identity_decay):
    """The reference's set_weight_decay: kernels, the classifier and the
    identity scales (`*identity.weight`) decay; BN, biases and the conv /
    1x1 scales do not. RepOpt-GhostNet's fusion scales are vectors: never."""
    train = base.get_config().train
    decayed = {}
    for variant in ("repopt_vgg_tiny", "repopt_ghostnet_tiny"):
        model = build_model(variant, 10, (32, 32, 3), kind="hs")
        optimizer = build_optimizer(
            train, 0.1, 1e-4, decay_identity_scales=identity_decay
        )
        optimizer.build(model.trainable_variables)
        decayed[variant] = {
            v.path
            for v in model.trainable_variables
            if optimizer._use_weight_decay(v)
        }
        parts = {path.split("/")[0].split("_")[-1] for path in decayed[variant]}
        assert "bn" not in parts and not any(
            p.endswith(
                ("scale_conv/scale", "scale_1x1/scale", "/bias", "gamma")
            )
            for p in decayed[variant]
        )
        assert "classifier/kernel" in decayed[variant]
    vgg = decayed["repopt_vgg_tiny"]
    assert {"stage2_block1_conv/kernel", "stage2_block1_conv1x1/kernel"} <= vgg
    assert ("stage2_block1_scale_identity/scale" in vgg) == identity_decay
    assert "stage1_block0_ghost1_conv/kernel" in decayed["repopt_ghostnet_tiny"]
    assert not any(
        "scale_identity" in p for p in decayed["repopt_ghostnet_tiny"]
    )
