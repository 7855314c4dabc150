"""Mixed precision and XLA with the RepOpt optimizers (issue #16).

Variables, Grad Mults and momentum stay float32 under the mixed policies;
LossScaleOptimizer (mixed_float16) hands RepOptSGD unscaled gradients, so
its CSLA-norm clip is the float32 one; a jit-compiled step equals the eager
one; bfloat16 compute drifts from float32 by a bounded amount.
"""

from pathlib import Path

import keras
import numpy as np
import pytest

from repopt_tf import RepOptSGD
from repopt_tf import build_model
from repopt_tf import grad_mults_for_model
from repopt_tf import load_scales

FIXTURES = Path(__file__).parent / "fixtures/checkpoints"


@pytest.fixture
def policy():
    previous = keras.mixed_precision.global_policy()
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy(previous)


def _train(steps=3, lr=0.01, **compile_args):
    keras.utils.set_random_seed(0)
    model = build_model("repopt_vgg_tiny", 10, (32, 32, 3))
    scales = load_scales(FIXTURES / "repopt_tiny_hs_latest.pth")
    optimizer = RepOptSGD(
        lr,
        momentum=0.9,
        nesterov=True,
        weight_decay=1e-4,
        global_clipnorm=5.0,
        grad_mults=grad_mults_for_model(model, scales),
    )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **compile_args,
    )
    if not steps:
        return model
    rng = np.random.default_rng(0)
    model.fit(
        rng.uniform(0, 255, (16 * steps, 32, 32, 3)).astype(np.float32),
        rng.integers(0, 10, 16 * steps),
        batch_size=16,
        epochs=1,
        shuffle=False,
        verbose=0,
    )
    return model


def _kernel(model):
    return np.asarray(model.get_layer("stage2_block1_conv").kernel)


def _relative(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


def test_jit_compiled_step_equals_eager():
    eager = _kernel(_train(run_eagerly=True))
    assert _relative(_kernel(_train(jit_compile=True)), eager) < 1e-5
    assert _relative(eager, _kernel(_train(steps=1, run_eagerly=True))) > 1e-4


@pytest.mark.parametrize(
    "name,bound", [("mixed_bfloat16", 0.5), ("mixed_float16", 0.25)]
)
def test_mixed_precision_keeps_float32_state_and_bounds_drift(
    policy, name, bound
):
    reference = _kernel(_train())
    start = _kernel(_train(steps=0))
    policy(name)
    model = _train()
    conv = model.get_layer("stage2_block1_conv")
    assert conv.compute_dtype == name.removeprefix("mixed_")
    assert conv.kernel.dtype == "float32"
    optimizer = model.optimizer
    if name == "mixed_float16":
        assert type(optimizer).__name__ == "LossScaleOptimizer"
        optimizer = optimizer.inner_optimizer
    assert type(optimizer).__name__ == "RepOptSGD"
    assert {v.dtype for v in optimizer.variables if v.dtype != "int64"} == {
        "float32"
    }
    # After 3 steps the 16-bit run's kernel is off the float32 one by a
    # fraction of what the steps moved it (measured here: 0.30 with
    # bfloat16, 0.16 with float16; BN statistics of 16 images in 16 bits).
    drift = np.abs(_kernel(model) - reference).max()
    moved = np.abs(reference - start).max()
    assert drift < bound * moved


def test_loss_scaling_leaves_the_csla_clip_unchanged():
    rng = np.random.default_rng(0)
    mult = rng.uniform(0.5, 2.0, (3, 3, 2, 2)).astype(np.float32)
    grad = rng.normal(size=(3, 3, 2, 2)).astype(np.float32) * 10
    start = rng.normal(size=(3, 3, 2, 2)).astype(np.float32)
    results = []
    for scale in (None, 2.0**12):
        variable = keras.Variable(start, name="kernel")
        optimizer = RepOptSGD(
            0.1,
            momentum=0.9,
            global_clipnorm=1.0,
            grad_mults={variable.path: mult},
        )
        if scale:
            optimizer = keras.optimizers.LossScaleOptimizer(
                optimizer, initial_scale=scale
            )
        for _ in range(3):
            optimizer.apply([grad * (scale or 1.0)], [variable])
        results.append(np.asarray(variable))
    np.testing.assert_allclose(results[1], results[0], rtol=1e-6, atol=1e-7)
    assert np.abs(results[0] - start).max() > 1e-3


def test_mixed_precision_models_export_from_a_float32_twin(policy):
    from repopt_tf.export import check_full_integer
    from repopt_tf.export import convert_int8
    from repopt_tf.export.convert import float32_model

    policy("mixed_bfloat16")
    model = _train(steps=1)
    policy("float32")
    twin = float32_model(model)
    assert {layer.dtype_policy.name for layer in twin.layers} == {"float32"}
    x = (
        np.random.default_rng(1)
        .uniform(0, 255, (4, 32, 32, 3))
        .astype(np.float32)
    )
    np.testing.assert_allclose(twin(x), model(x), rtol=0.1, atol=0.1)
    assert float32_model(twin) is twin
    assert check_full_integer(convert_int8(twin, x)) is None


def test_train_py_precision_and_xla_options(tmp_path, capsys):
    from repopt_tf.configs import base
    from repopt_tf.training import Experiment
    from repopt_tf.training import get_strategy

    config = base.get_config()
    config.mode, config.model = "baseline_sgd", "repopt_vgg_tiny"
    config.data.update(train_limit=256, eval_limit=64)
    config.train.update(
        batch_size=32, epochs=1, precision="mixed_bfloat16", jit_compile="on"
    )
    (result,) = Experiment(config, tmp_path, get_strategy()).run()
    assert 0 <= result.test_accuracy <= 1
    assert (
        "precision mixed_bfloat16 (variables, Grad Mults and momentum in "
        "float32), XLA on" in capsys.readouterr().out
    )
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    config.train.precision = "fp8"
    with pytest.raises(ValueError, match="train.precision must be one of"):
        Experiment(config, tmp_path / "again", get_strategy()).run()


def test_bfloat16_tip_only_for_float32_on_bf16_hardware(monkeypatch):
    from repopt_tf import cpu
    from repopt_tf.training import recipe

    monkeypatch.setattr(recipe, "native_bfloat16", lambda: True)
    tip = recipe.precision_tip("float32")
    assert "--config.train.precision=mixed_bfloat16" in tip
    assert recipe.precision_tip("mixed_bfloat16") is None
    monkeypatch.setattr(recipe, "native_bfloat16", lambda: False)
    assert recipe.precision_tip("float32") is None
    # The hardware check reads the CPU flags.
    monkeypatch.setattr(cpu, "cpu_flags", lambda: "avx2 avx512f amx_bf16")
    assert cpu.native_bfloat16()
    monkeypatch.setattr(cpu, "cpu_flags", lambda: "avx2 avx512f")
    assert not cpu.native_bfloat16()
