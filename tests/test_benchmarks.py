"""The benchmark scripts run and print their ratio lines (no timing asserts)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_train_throughput_prints_ratios():
    out = _run("train_throughput.py", "--model=repopt_vgg_tiny", "--batch=8",
               "--image_size=16", "--steps=2", "--windows=2", "--warmup=1")
    for label in ("RepOpt-VGG", "RepVGG", "plain VGG"):
        match = re.search(rf"{label}: +[\d.]+ img/s .*peak train memory "
                          rf"([\d.]+) MB \(([\d.]+) MB above resting; live "
                          rf"tensors ([\d.]+) MB\)", out)
        peak, working, live = map(float, match.groups())
        assert peak > working > 0
        assert peak > live > 0
    assert re.search(r"ratio RepOpt/RepVGG img/s: median [\d.]+ \(min [\d.]+, "
                     r"max [\d.]+\)", out)
    assert re.search(r"ratio RepOpt/RepVGG peak memory: [\d.]+ "
                     r"\(above resting: [\d.]+; live tensors: [\d.]+\)", out)
    assert re.search(r"waiting on the Fashion-MNIST tf.data pipeline: \d+%", out)


def test_kernel_gradient_prints_per_conv_and_total_ratios():
    out = _run("kernel_gradient.py", "--model=repopt_vgg_tiny", "--batch=4",
               "--image_size=16", "--repeats=1", "--windows=1")
    lines = re.findall(r"stride \d: TF +[\d.]+ ms +[\d.]+ MB \| ours +[\d.]+ ms "
                       r"+[\d.]+ MB \| time ratio ours/TF [\d.]+", out)
    assert len(lines) == 6  # the tiny variant's six 3x3 convs
    assert re.search(r"total: .* time ratio ours/TF [\d.]+", out)


def test_optimizer_overhead_prints_ratio():
    out = _run("optimizer_overhead.py", "--model=repopt_vgg_tiny", "--batch=8",
               "--image_size=16", "--steps=2", "--windows=2", "--warmup=1")
    assert re.search(r"ratio RepOptSGD/SGD: median [\d.]+", out)


def test_rpg_dof_sweep_prints_table_and_plot(tmp_path):
    out = _run("rpg_dof_sweep.py", f"--workdir={tmp_path}",
               "--model=repopt_vgg_tiny", "--dofs=0.05,0.5", "--epochs=1",
               "--train_limit=256", "--eval_limit=100", "--ablation_dof=0.3")
    assert re.search(r"\| 0.05 \| 551 \| \d+ \| [\d.]+ \|", out)
    assert re.search(r"Fit: accuracy = -?[\d.]+ \* log10\(DoF\)", out)
    for mode in ("shared", "permutation", "signed_permutation"):
        assert re.search(rf"\| {mode} \| [\d.]+ \|", out)
    assert (tmp_path / "rpg_dof_sweep.png").stat().st_size > 0


def test_multirate_transfer_prints_side_by_side_table(tmp_path):
    out = _run("multirate_transfer.py", f"--workdir={tmp_path}",
               "--model=repopt_vgg_tiny", "--pretrain_epochs=1", "--epochs=2",
               "--train_limit=512", "--ks=5")
    for label in ("full fine-tuning", "head only", "multirate k=5, drift on",
                  "multirate k=5, drift off"):
        assert re.search(rf"\| {label} \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", out)
    assert (tmp_path / "multirate_transfer.md").exists()


def test_int8_collapse_prints_the_three_models(tmp_path):
    out = _run("int8_collapse.py", f"--workdir={tmp_path}",
               "--model=repopt_vgg_tiny", "--epochs=1", "--train_limit=256",
               "--representative=16")
    assert "repopt_vgg_tiny, Fashion-MNIST, 1 epochs on 256 images" in out
    for label in ("RepOpt-VGG \\(RepOptSGD\\)", "plain VGG \\(SGD\\)",
                  "RepVGG \\(SGD, fused\\)"):
        match = re.search(rf"\| {label} \| ([\d.]+) \| ([\d.]+) \| ([+-][\d.]+) "
                          rf"\| [\d.]+ \| [\d.]+ \|", out)
        fp32, int8, delta = map(float, match.groups())
        assert delta == pytest.approx(100 * (int8 - fp32), abs=0.02)
    assert (tmp_path / "int8_kernel_histograms.png").stat().st_size > 0
