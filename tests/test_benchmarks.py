"""The benchmark scripts run and print their ratio lines (no timing asserts)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_without_tensorflow

from repopt_tf.scales import load_scales

ROOT = Path(__file__).resolve().parents[1]


def _module(script):
    """`python -m benchmarks.NAME` for `NAME.py` (run from ROOT)."""
    return [sys.executable, "-m", f"benchmarks.{Path(script).stem}"]


def _run(script, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [*_module(script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_train_throughput_prints_ratios():
    out = _run(
        "train_throughput.py",
        "--model=repopt_vgg_tiny",
        "--batch=8",
        "--image_size=16",
        "--steps=2",
        "--windows=2",
        "--warmup=1",
    )
    for label in ("RepOpt-VGG", "RepVGG", "plain VGG"):
        match = re.search(
            rf"{label}: +[\d.]+ img/s .*peak train memory "
            rf"([\d.]+) MB \(([\d.]+) MB above resting; live "
            rf"tensors ([\d.]+) MB\)",
            out,
        )
        peak, working, live = map(float, match.groups())
        assert peak > working > 0
        assert peak > live > 0
    assert re.search(
        r"ratio RepOpt/RepVGG img/s: median [\d.]+ \(min [\d.]+, "
        r"max [\d.]+\)",
        out,
    )
    assert re.search(
        r"ratio RepOpt/RepVGG peak memory: [\d.]+ "
        r"\(above resting: [\d.]+; live tensors: [\d.]+\)",
        out,
    )
    assert re.search(
        r"waiting on the Fashion-MNIST tf.data pipeline: \d+%", out
    )


def test_kernel_gradient_prints_per_conv_and_total_ratios():
    out = _run(
        "kernel_gradient.py",
        "--model=repopt_vgg_tiny",
        "--batch=4",
        "--image_size=16",
        "--repeats=1",
        "--windows=1",
    )
    lines = re.findall(
        r"stride \d: TF +[\d.]+ ms +[\d.]+ MB \| ours +[\d.]+ ms "
        r"+[\d.]+ MB \| time ratio ours/TF [\d.]+",
        out,
    )
    assert len(lines) == 6  # the tiny variant's six 3x3 convs
    assert re.search(r"total: .* time ratio ours/TF [\d.]+", out)


def test_optimizer_overhead_prints_ratio():
    out = _run(
        "optimizer_overhead.py",
        "--model=repopt_vgg_tiny",
        "--batch=8",
        "--image_size=16",
        "--steps=2",
        "--windows=2",
        "--warmup=1",
    )
    assert re.search(r"ratio RepOptSGD/SGD: median [\d.]+", out)


def test_rpg_dof_sweep_prints_table_and_plot(tmp_path):
    out = _run(
        "rpg_dof_sweep.py",
        f"--workdir={tmp_path}",
        "--model=repopt_vgg_tiny",
        "--dofs=0.05,0.5",
        "--epochs=1",
        "--train_limit=256",
        "--eval_limit=100",
        "--ablation_dof=0.3",
        "--ablation",
        "--seeds=0,1",
    )
    cell = r"0\.\d{4} \+- 0\.\d{4}"
    # window: 5% of 11016 weights; authors: of 10944 (the stem is off)
    assert re.search(rf"\| 0.05 \| 551 \| {cell} \| 547 \| {cell} \|", out)
    assert re.search(rf"\| free \(no ring\) \| {cell} \|", out)
    for scheme in ("window", "authors"):
        assert re.search(rf"Fit, {scheme}: accuracy = -?[\d.]+ \* log10", out)
    for mode in ("shared", "permutation", "signed_permutation"):
        assert re.search(rf"\| {mode} \| [\d.]+ \|", out)
    assert (tmp_path / "rpg_dof_sweep.png").stat().st_size > 0


def test_multirate_transfer_prints_side_by_side_table(tmp_path):
    out = _run(
        "multirate_transfer.py",
        f"--workdir={tmp_path}",
        "--model=repopt_vgg_tiny",
        "--pretrain_epochs=1",
        "--epochs=2",
        "--train_limit=512",
        "--ks=5",
    )
    for label in (
        "full fine-tuning",
        "head only",
        "multirate k=5, drift on",
        "multirate k=5, drift off",
    ):
        assert re.search(rf"\| {label} \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", out)
    assert (tmp_path / "multirate_transfer.md").exists()


def test_table8_ptq_compares_the_quick_start_models(tmp_path):
    out = _run(
        "table8_ptq.py",
        f"--workdir={tmp_path}",
        "--model=repopt_vgg_tiny",
        "--epochs=1",
        "--train_limit=256",
        "--representative=16",
        "--eval_limit=200",
    )
    assert "fashion_mnist: 16 calibration images, 200 evaluation images" in out
    number = r"([\d.]+)"
    for label in (
        "RepOpt-VGG \\(RepOptSGD\\)",
        "plain VGG \\(SGD\\)",
        "RepVGG \\(SGD, fused\\)",
    ):
        match = re.search(
            rf"\| {label} \| {number} \| {number} \(([+-][\d.]+)\) \| "
            rf"{number} \(([+-][\d.]+)\) \| {number} / {number} \|",
            out,
        )
        fp32, pc, pc_delta, pt, pt_delta, pc_agree, pt_agree = map(
            float, match.groups()
        )
        assert pc_delta == pytest.approx(100 * (pc - fp32), abs=0.02)
        assert pt_delta == pytest.approx(100 * (pt - fp32), abs=0.02)
        assert 0.5 < pc_agree <= 1 and 0.5 < pt_agree <= 1
    rows = json.loads((tmp_path / "table8_ptq.json").read_text())
    assert [r["centre_surround"] > 0 for r in rows] == [True] * 3
    assert (tmp_path / "int8_kernel_histograms.png").stat().st_size > 0


def test_table8_ptq_imports_synthetic_checkpoints(tmp_path):
    out = _run(
        "table8_ptq.py",
        f"--workdir={tmp_path}",
        "--image_size=32",
        "--models=target=synthetic:repopt_vgg_tiny:repopt_target,"
        "repvgg=synthetic:repvgg_a0:repvgg_train",
        "--representative=8",
        "--eval_limit=32",
    )
    # Random weights: no top-1, only int8-vs-fp32 agreement.
    assert re.search(r"\| target \| - \| - \(-\) \| - \(-\) \| [\d.]+ / ", out)
    assert re.search(r"\| repvgg \| - \| .*\| [\d.]+ \| [\d.]+ \|$", out, re.M)
    names = [
        r["name"]
        for r in json.loads((tmp_path / "table8_ptq.json").read_text())
    ]
    assert names == ["repopt_vgg_tiny_plain", "repvgg_a0_deploy"]


@pytest.mark.slow  # 50 s; the hang test below covers the race's code
def test_vs_pytorch_prints_four_rates_and_ratios():
    pytest.importorskip(
        "torch",
        reason="benchmarks/vs_pytorch.py needs torch (pip install '.[bench]')",
    )
    out = _run(
        "vs_pytorch.py",
        "--model=repopt_vgg_tiny",
        "--batch=8",
        "--image_size=16",
        "--steps=2",
        "--windows=2",
        "--warmup=1",
    )
    for name in ("keras_repopt", "keras_repvgg"):
        for precision in ("float32", "bfloat16"):
            assert re.search(rf"\| {name}_{precision} \| [\d.]+ \|", out)
    for name in ("torch_repopt", "torch_repvgg"):
        for layout in ("nchw", "channels_last"):
            assert re.search(
                rf"\| {name}_bfloat16_t\d+_{layout} \| [\d.]+ \|", out
            )
    for label in (
        "Keras/PyTorch, RepOpt-VGG, best",
        "Keras/PyTorch, RepOpt-VGG, float32",
        "Keras/PyTorch, RepVGG, best",
        "RepOpt/RepVGG, Keras, best",
        "RepOpt/RepVGG, PyTorch, best",
    ):
        assert re.search(rf"ratio {label} \(.*\): median [\d.]+", out)


HANGING_REFERENCE = {
    # A stand-in for the authors' code whose training step never returns,
    # as their RepVGG in channels_last float32 on a Zen 2 CPU at 2 threads.
    "repoptvgg_model.py": """
import time
import torch


class RepOptVGG(torch.nn.Module):
    def __init__(self, *args, **kwargs):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        time.sleep(3600)
""",
    "repoptimizer_sgd.py": """
import torch


class RepOptimizerSGD(torch.optim.SGD):
    def __init__(self, mults, params, **settings):
        super().__init__(params, **settings)
""",
}


def test_vs_pytorch_names_a_hung_torch_setting_and_goes_on(tmp_path):
    pytest.importorskip("torch", reason="needs torch (pip install '.[bench]')")
    for name, code in HANGING_REFERENCE.items():
        path = tmp_path / "repoptimizer" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(code)
    out = _run(
        "vs_pytorch.py",
        "--model=repopt_vgg_tiny",
        "--batch=4",
        "--image_size=16",
        "--steps=1",
        "--windows=1",
        "--warmup=1",
        "--precisions=float32",
        "--torch_formats=nchw",
        f"--reference={tmp_path}",
        "--torch_timeout=5",
    )
    assert re.search(r"\| keras_repopt_float32 \| [\d.]+ \|", out)
    for form in ("repopt", "repvgg"):
        assert re.search(
            rf"\| torch_{form}_float32_t\d+_nchw \| hung: the torch process "
            r"gave no answer in 5 s and was killed \|",
            out,
        ), out
    assert "ratio Keras/PyTorch, RepOpt-VGG, best: not measured" in out


@pytest.mark.parametrize("script", ["vs_pytorch.py", "step_profile.py"])
def test_torch_side_refuses_a_folder_that_is_no_reference_checkout(
    script, tmp_path
):
    result = subprocess.run(
        [*_module(script), f"--reference={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert "is not a RepOptimizers checkout" in result.stderr
    assert "Traceback" not in result.stderr


def test_step_profile_splits_the_keras_step():
    out = _run(
        "step_profile.py",
        "--frameworks=keras",
        "--model=repopt_vgg_tiny",
        "--batch=8",
        "--image_size=16",
        "--steps=2",
        "--warmup=1",
        "--precisions=bfloat16",
    )
    shares = {}
    for category in (
        "conv forward",
        "input gradient",
        "kernel gradient",
        "BatchNorm forward",
        "BatchNorm backward",
        "optimizer",
        "casts \\(bf16\\)",
    ):
        row = re.search(
            rf"\| {category} \| ([\d.]+) \(\d+ %\) \| ([\d.]+) \(\d+ %\) \|",
            out,
        )
        assert row, (category, out)
        shares[category] = [float(ms) for ms in row.groups()]
        assert min(shares[category]) > 0, category  # both forms have each
    total = re.search(r"\| summed op time \| ([\d.]+) \| ([\d.]+) \|", out)
    for form, summed in enumerate(map(float, total.groups())):
        assert sum(ms[form] for ms in shares.values()) <= summed + 0.02
        # The conv work (forward + both gradients) is most of a VGG step.
        conv = sum(shares[c][form] for c in list(shares)[:3])
        assert conv > 0.3 * summed


def test_edge_latency_prints_fp32_int8_table():
    out = _run(
        "edge_latency.py",
        "--models=repopt_ghostnet_tiny,repopt_vgg_tiny",
        "--image_size=32",
        "--runs=3",
        "--calibration=4",
    )
    for model in ("repopt_ghostnet_tiny", "repopt_vgg_tiny"):
        row = re.search(
            rf"\| {model} \| [\d.]+M \| ([\d.]+) \| ([\d.]+) \|", out
        )
        fp32_mb, int8_mb = map(float, row.groups())
        assert fp32_mb > 2 * int8_mb  # int8 weights are a quarter the size
    assert re.search(r"int8 speed-up 2T", out)


def test_edge_latency_refuses_bad_flags():
    result = subprocess.run(
        [*_module("edge_latency.py"), "--models=resnet50"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode != 0
    assert "--models: unknown model(s) resnet50" in result.stderr
    assert "Traceback" not in result.stderr


PAPER_TABLES_ARGS = (
    "--model=repopt_vgg_tiny",
    "--epochs=1",
    "--hs_epochs=1",
    "--train_limit=512",
    "--eval_limit=128",
    "--seeds=0",
    "--representative=8",
)


def test_paper_tables_writes_a_resumable_report(tmp_path):
    args = (
        *PAPER_TABLES_ARGS,
        f"--workdir={tmp_path / 'study'}",
        f"--output={tmp_path / 'tables.md'}",
    )
    _run("paper_tables.py", *args)
    text = (tmp_path / "tables.md").read_text()
    for label in (
        "plain VGG + SGD",
        "RepOpt, Rule of Initialization",
        "RepVGG",
        "RepOpt-VGG (official B1 scales",
        "RepVGG, its own recipe",
    ):
        row = re.search(rf"\| {re.escape(label)}[^|]* \| ([\d.]+) \|", text)
        assert 0 <= float(row.group(1)) <= 100
    assert "## Table 8" in text and "int8 per-tensor" in text
    assert (tmp_path / "tables_kernels.png").stat().st_size > 10_000
    cached = json.loads((tmp_path / "study/seed0/repopt/ptq.json").read_text())
    assert 0 <= cached["per_tensor_top1"] <= 1
    recipe = json.loads(
        (
            tmp_path / "study/seed0/repvgg_recipe/baseline_repvgg/config.json"
        ).read_text()
    )
    assert recipe["repvgg.custom_l2"] is True
    assert recipe["train.epochs"] == 2  # twice --epochs
    assert recipe["train.weight_decay"] == 1e-4
    mapped = load_scales(
        tmp_path / "study/repopt_vgg_b1_scales_on_repopt_vgg_tiny.npz"
    )
    assert [len(b["conv"]) for b in mapped] == [8, 8, 16, 16, 16, 32]
    # Every stage reused; the report set beside itself (the comparison's
    # table; the slow test below compares a rerun from an empty workdir).
    again = _run(
        "paper_tables.py",
        *PAPER_TABLES_ARGS,
        f"--workdir={tmp_path / 'study'}",
        f"--output={tmp_path / 'again.md'}",
        f"--compare_workdir={tmp_path / 'study'}",
    )
    assert "reusing it" in again and "Epoch 1/1" not in again
    same, reproduction = (
        (tmp_path / "again.md").read_text().split("\n## Reproduction")
    )
    flag = f" --compare_workdir={tmp_path / 'study'}"
    assert flag in same and same.replace(flag, "") == text
    differences = re.findall(r"\| ([\d.]+) \| 1 \|", reproduction)
    assert differences == ["0.00"] * 7  # every row


@pytest.mark.slow  # 4 min: two whole studies
def test_paper_tables_rerun_from_an_empty_workdir_is_bit_for_bit(tmp_path):
    _run(
        "paper_tables.py",
        *PAPER_TABLES_ARGS,
        f"--workdir={tmp_path / 'study'}",
        f"--output={tmp_path / 'tables.md'}",
    )
    _run(
        "paper_tables.py",
        *PAPER_TABLES_ARGS,
        f"--workdir={tmp_path / 'rerun'}",
        f"--output={tmp_path / 'rerun.md'}",
        f"--compare_workdir={tmp_path / 'study'}",
    )
    table = (tmp_path / "rerun.md").read_text().split("## Reproduction")[1]
    differences = re.findall(r"\| ([\d.]+) \| 1 \|", table)
    assert len(differences) == 7  # every row, bit for bit
    assert set(differences) == {"0.00"}


def test_deploy_table_measures_rows_and_reuses_them(tmp_path):
    args = (
        "--rows=vgg_tiny",
        f"--workdir={tmp_path}",
        "--images=64",
        "--latency_runs=2",
    )
    out = _run("deploy_table.py", *args)
    row = re.search(
        r"\| repopt_vgg_tiny \(trained here\) \| 28x28x1 \| none \| \d+ \| \d+ "
        r"\| ([\d,]+) \| ([\d,]+) \|.*\| (bit-exact|within \d+ LSB.*) \| "
        r"top-1 ([\d.]+) / ([\d.]+) \(64\) \|",
        out,
    )
    arena, peak = (int(v.replace(",", "")) for v in row.groups()[:2])
    assert arena > peak > 0
    assert float(row.group(4)) > 0.5  # trained
    assert "Machine:" in out
    again = _run("deploy_table.py", *args)
    assert "reused" in again and row.group(0) in again
    result = subprocess.run(
        [*_module("deploy_table.py"), "--rows=x"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 1 and "unknown rows ['x']" in result.stderr


def test_largest_batch_doubles_then_bisects():
    from benchmarks.step_timing import Clock
    from benchmarks.step_timing import largest_batch

    tried = []

    def fits(batch):
        tried.append(batch)
        return batch <= 100

    clock = Clock(3600)
    assert largest_batch(fits, 8, 4096, 2, clock, "x") == (96, 112)
    assert tried == [8, 16, 32, 64, 128, 96, 112]
    tried.clear()
    assert largest_batch(fits, 256, 4096, 0, clock, "x") == (64, 128)
    assert tried == [256, 128, 64]
    assert largest_batch(fits, 8, 50, 2, clock, "x") == (32, None)
    assert largest_batch(lambda b: False, 4, 64, 2, clock, "x") == (None, 1)
    assert clock.skipped == []
    late = Clock(10)
    assert largest_batch(fits, 8, 4096, 2, late, "x") == (None, None)
    assert late.skipped == ["x at batch 8"]


def test_gpu_proof_dry_run_on_jax_without_tensorflow(tmp_path):
    pytest.importorskip("torch", reason="the PyTorch side needs torch")
    pytest.importorskip("jax", reason="the proof runs on Keras's JAX backend")
    process = run_without_tensorflow(
        "jax",
        [
            "-m",
            "benchmarks.gpu_proof",
            "--dry_run",
            "--torch_formats=channels_last",
            f"--out={tmp_path / 'proof.json'}",
        ],
    )
    assert process.returncode == 0, process.stderr[-3000:]
    out = process.stdout
    for framework in ("keras", "torch"):
        for form in ("repopt", "repvgg"):
            layout = "_channels_last" if framework == "torch" else ""
            assert re.search(
                rf"\| {framework}_{form}_float32{layout} \| [\d.]+ \| "
                r"[\d.]+ \| [\d.]+ \| 32 \|",
                out,
            ), out
            assert re.search(
                rf"\| {framework}_{form}_bfloat16{layout} \| [\d.]+ \|", out
            )
    assert re.search(r"ratio RepOpt/RepVGG img/s, keras, float32: [\d.]+", out)
    assert re.search(r"ratio Keras/PyTorch img/s, repopt, best: [\d.]+", out)
    assert "JAX" in out and "on cpu" in out
    results = json.loads((tmp_path / "proof.json").read_text())
    assert results["max_batch"]["keras_repopt_float32"] == {
        "fits": 32,
        "fails": None,
    }
    assert results["failed"] == {} and results["skipped"] == []
    assert results["ratios"]["RepOpt/RepVGG largest batch, torch"] == 1.0


GPU_PROOF_SCHEDULE = """
import time
from absl import flags
from benchmarks import gpu_proof
from benchmarks.step_timing import Clock

flags.FLAGS(["gpu_proof", "--dry_run"])
for key, value in gpu_proof.DRY_RUN.items():
    setattr(flags.FLAGS, key, value)
now = [0.0]
time.monotonic = lambda: now[0]  # a clock the fake steps advance
calls = []

class Fake:  # a model whose steps above the race's batch cost 20 s each
    def __init__(self, name):
        self.name = name

    def train_on_batch(self, images, labels):
        calls.append((self.name, images.shape[0]))
        now[0] += 20.0 if images.shape[0] > 8 else 0.0

models = {(f, p): Fake(f"{f}_{p}") for p in ("float32", "bfloat16")
          for f in ("repopt", "repvgg")}
results = {"speed": {}, "max_batch": {}}
images, labels = gpu_proof.synthetic_batch(8, (32, 32, 3))
clock = Clock(100)
gpu_proof.run_keras(models, images, labels, clock, results)
print(sorted(results["speed"]))
print(results["max_batch"])
print(clock.skipped)
print(sorted({name for name, batch in calls if batch > 8}))
"""


def test_gpu_proof_races_every_setting_before_it_seeks_batches():
    """Speeds first, then the largest-batch searches in equal shares: a
    slow search cannot cost the other form its speed or its batch size."""
    pytest.importorskip("jax", reason="the proof runs on Keras's JAX backend")
    process = run_without_tensorflow("jax", ["-c", GPU_PROOF_SCHEDULE])
    assert process.returncode == 0, process.stderr[-3000:]
    speeds, batches, skipped, searched = process.stdout.splitlines()[-4:]
    assert speeds == str(
        [
            "keras_repopt_bfloat16",
            "keras_repopt_float32",
            "keras_repvgg_bfloat16",
            "keras_repvgg_float32",
        ]
    )
    # 100 s after the (free) race: 50 s each, one 2-step try of 40 s fits.
    assert batches == str(
        {
            "keras_repopt_float32": {"fits": 16, "fails": None},
            "keras_repvgg_float32": {"fits": 16, "fails": None},
        }
    )
    assert skipped == str(
        ["keras_repopt_float32 at batch 32", "keras_repvgg_float32 at batch 32"]
    )
    assert searched == str(["repopt_float32", "repvgg_float32"])


def test_gpu_proof_needs_the_jax_backend():
    process = subprocess.run(
        [*_module("gpu_proof.py"), "--dry_run"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, KERAS_BACKEND="tensorflow"),
        cwd=ROOT,
    )
    assert process.returncode == 1
    assert "KERAS_BACKEND=jax" in process.stderr
    assert "Traceback" not in process.stderr


FAKE_SIDES = """
# Stands in for the throwaway torch and onnx2tf environments of
# benchmarks/vs_onnx2tf.py: called as `python -m benchmarks.vs_onnx2tf
# --torch_side DIR` (or --onnx2tf_side), it writes what that side writes.
import shutil
import sys
from pathlib import Path

sys.path.insert(0, {root!r})
import numpy as np

from benchmarks.vs_onnx2tf import _normalised
from repopt_tf.checkpoints import model_from_checkpoint
from repopt_tf.export import convert_int8
from repopt_tf.export.device_form import device_model
from repopt_tf.models import build_model

side, folder = sys.argv[3], Path(sys.argv[4])
checkpoint = folder / "repvgg_a0.safetensors"
if side == "--torch_side":  # timm's checkpoint and its fp32 logits
    shutil.copy({fixture!r}, checkpoint)
    model, _ = model_from_checkpoint(checkpoint, fuse=True)
    np.save(folder / "torch_logits.npy", model(np.load(folder / "eval.npy")))
else:  # a model on normalised input, its paddings folded away
    model, _ = model_from_checkpoint(checkpoint, fuse=True)
    identity = model.identity
    bare = build_model(
        identity["variant"],
        identity["num_classes"],
        identity["input_shape"],
        identity["kind"],
        include_preprocessing=False,
    )
    bare.set_weights(model.get_weights())
    device, _ = device_model(bare, 1, "all", conv_ops=True)
    calibration = _normalised(np.load(folder / "calibration.npy"))
    (folder / "onnx2tf").mkdir()
    (folder / "onnx2tf/m_full_integer_quant.tflite").write_bytes(
        convert_int8(device, calibration)
    )
"""


def test_vs_onnx2tf_compares_two_int8_graphs_of_one_checkpoint(tmp_path):
    fixture = ROOT / "tests/fixtures/checkpoints/timm_repvgg_tiny.safetensors"
    (tmp_path / "fake_side.py").write_text(
        FAKE_SIDES.format(root=str(ROOT), fixture=str(fixture))
    )
    python = tmp_path / "python"
    python.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" "{tmp_path}/fake_side.py" "$@"\n'
    )
    python.chmod(0o755)
    report = tmp_path / "report.md"
    _run(
        "vs_onnx2tf.py",
        f"--torch_python={python}",
        f"--onnx2tf_python={python}",
        f"--workdir={tmp_path / 'work'}",
        f"--output={report}",
        "--images=12",
        "--calibration=8",
        "--windows=2",
        "--runs=2",
    )
    text = report.read_text()
    rows = {}
    for name in ("this library", "onnx2tf"):
        cells = re.search(rf"^\| {name} \|(.*)\|$", text, re.M).group(1)
        rows[name] = [c.strip() for c in cells.split("|")]
    ours, theirs = rows["this library"], rows["onnx2tf"]
    kb, ops, pad, conv, relu, top1, rmse = range(7)  # cells after the name
    # Same convs and ReLUs; ours pads explicitly (--fold_padding=none),
    # theirs folded every pad into SAME convs, and ours normalises its raw
    # pixels in the graph (RESHAPE, DEPTHWISE_CONV_2D, RESHAPE).
    assert int(ours[pad]) > 0 and theirs[pad] == "0"
    assert int(ours[ops]) == int(theirs[ops]) + int(ours[pad]) + 3
    assert ours[relu] == theirs[relu] != "0"
    assert sum(map(int, ours[conv].split(" / "))) == sum(
        map(int, theirs[conv].split(" / "))
    )
    assert ours[conv] != theirs[conv]
    for cells in rows.values():  # int8 of the checkpoint vs its fp32 logits
        assert int(cells[kb]) > 0
        assert float(cells[top1]) >= 0.9 and float(cells[rmse]) < 0.1
    orders = dict(re.findall(r"^- (this library|onnx2tf): (.*)$", text, re.M))
    assert orders["this library"].count("PAD") == int(ours[pad])
    assert orders["this library"].startswith("RESHAPE, DEPTHWISE_CONV_2D")
    assert "PAD" not in orders["onnx2tf"] and "CONV_2D(S2)" in orders["onnx2tf"]
    for threads in ("1", "2"):
        assert re.search(
            rf"^\| {threads} \|( [\d.]+ / [\d.]+ / [\d.]+ \|){{2}} [\d.]+ \|$",
            text,
            re.M,
        )
    assert re.search(r"takes [\d.]+ ms more per frame", text)
