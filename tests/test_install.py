"""A built wheel installs the console scripts and bundled configs and runs
them from another directory (issue #15)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from repopt_tf.quiet import quiet_start

ROOT = Path(__file__).resolve().parents[1]


def _run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (
        result.stdout[-1500:],
        result.stderr[-3000:],
    )
    return result


def _train_and_export(python, scripts, env, tmp_path, site):
    """Both console scripts, run from a directory outside the checkout."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run(
        [
            python,
            "-c",
            "import repopt_tf.configs as c, "
            "repopt_tf.scales as s; print(c.CONFIG_DIR); "
            "print(s.list_presets())",
        ],
        env=env,
        cwd=elsewhere,
        timeout=120,
    )
    assert where.stdout.startswith(str(site))
    assert "repopt_vgg_b1" in where.stdout
    # A bundled config by the README's spelling, from another directory.
    trained = _run(
        [
            str(scripts / "repopt-train"),
            "--workdir=run",
            "--config=configs/fashion_mnist.py:baseline_sgd",
            "--config.model=repopt_vgg_tiny",
            "--config.data.train_limit=256",
            "--config.data.eval_limit=64",
            "--config.train.epochs=1",
        ],
        env=env,
        cwd=elsewhere,
        timeout=300,
    )
    assert json.loads((elsewhere / "run/results.json").read_text())[
        "baseline_sgd"
    ]
    # The full tensorflow wheel (the slow clean-venv test) logs a cuInit
    # error on a machine without a GPU driver unless --verbose.
    assert "cuInit" not in trained.stdout + trained.stderr
    helped = subprocess.run(  # absl's --help exits with status 1
        [str(scripts / "repopt-train"), "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=elsewhere,
        timeout=120,
    )
    assert "--config:" in helped.stdout and "train.epochs" in helped.stdout
    typo = subprocess.run(
        [str(scripts / "repopt-train"), "--config=fashion_mnist:hs"]
        + ["--config.train.epoch=1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=elsewhere,
        timeout=120,
    )
    assert typo.returncode == 1 and "Traceback" not in typo.stderr
    assert (
        "config.train.epoch is not a field; did you mean config.train.epochs?"
        in typo.stderr
    )
    exported = subprocess.run(
        [str(scripts / "repopt-export"), "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=elsewhere,
        timeout=120,
    )
    for flag in ("--workdir", "--model", "--data", "--stage", "--checkpoint"):
        assert f"  {flag}:" in exported.stdout, flag
    export = _run(
        [
            str(scripts / "repopt-export"),
            "--workdir=run",
            "--representative=16",
            "--eval_limit=64",
            "--latency_runs=2",
            "--threads=1",
        ],
        env=env,
        cwd=elsewhere,
        timeout=300,
    )
    assert "verified full integer" in export.stdout
    assert (elsewhere / "run/baseline_sgd/model_int8.tflite").stat().st_size > 0


def test_wheel_console_scripts_train_and_export(tmp_path):
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        timeout=300,
    )
    wheel = next((tmp_path / "dist").glob("repopt_tf-*.whl"))
    site = tmp_path / "site"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        timeout=300,
    )
    env = dict(os.environ, PYTHONPATH=str(site))
    _train_and_export(sys.executable, site / "bin", env, tmp_path, site)


@pytest.mark.slow
def test_pip_install_in_a_clean_venv(tmp_path):
    """`pip install .` with its declared dependencies into a new venv."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    python = str(venv / "bin/python")
    _run(
        [
            python,
            "-m",
            "pip",
            "install",
            "-q",
            "-c",
            str(ROOT / "requirements.txt"),
            str(ROOT),
        ],
        timeout=1200,
    )
    site = next((venv / "lib").glob("python3*/site-packages"))
    installed = _run(
        [python, "-m", "pip", "list", "--format=freeze"], timeout=120
    ).stdout.lower()
    assert "tensorflow==2.21" in installed  # the CPU/GPU wheel, not ...
    assert "tensorflow-cpu" not in installed  # ... two TFs in one folder
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    _train_and_export(python, venv / "bin", env, tmp_path, site)


def test_tools_start_quietly_unless_verbose():
    assert quiet_start(["/venv/bin/repopt-train", "--workdir=x"], {})
    assert quiet_start(["train.py"], {})
    assert not quiet_start(["train.py", "--verbose"], {})
    assert not quiet_start(["/usr/bin/ipython"], {})  # a library user
    assert quiet_start(["anything"], {"REPOPT_TF_QUIET": "1"})
    assert not quiet_start(["repopt-export"], {"REPOPT_TF_QUIET": "0"})


@pytest.mark.slow
def test_core_installs_and_runs_on_jax_without_tensorflow(tmp_path):
    """A fresh venv with keras, jax, numpy and absl-py only (as the GPU
    machine has), the package installed --no-deps: `import repopt_tf`
    and the GPU proof's dry run on JAX, never importing TensorFlow."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    python = str(venv / "bin/python")
    pins = ("keras==3.15.1", "jax[cpu]==0.10.2", "numpy==2.4.6")
    _run(
        [python, "-m", "pip", "install", "-q", *pins, "absl-py", "h5py"],
        timeout=1200,
    )
    _run([python, "-m", "pip", "install", "-q", "--no-deps", str(ROOT)])
    env = dict(os.environ, KERAS_BACKEND="jax")
    env.pop("PYTHONPATH", None)
    listed = _run([python, "-m", "pip", "list"], env=env, timeout=120)
    assert "tensorflow" not in listed.stdout.lower()
    code = (
        "import sys, repopt_tf, keras; "
        "m = repopt_tf.build_model('repopt_vgg_tiny', 10, (32, 32, 3)); "
        "print(keras.backend.backend(), m.count_params(), "
        "'tensorflow' in sys.modules)"
    )
    ran = _run([python, "-c", code], env=env, cwd=tmp_path, timeout=300)
    assert ran.stdout.split()[0] == "jax" and ran.stdout.split()[2] == "False"
    proof = _run(
        [python, "-m", "benchmarks.gpu_proof", "--dry_run"]
        + ["--precisions=float32"],
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert "torch is not installed" in proof.stdout
    assert re.search(
        r"ratio RepOpt/RepVGG img/s, keras, float32: [\d.]+", proof.stdout
    )
