"""repopt_tf/csla.py (numpy re-parameterisation maths), the family registry
and the run-directory layout."""

import json

import keras
import numpy as np
import pytest

from repopt_tf import grad_mult
from repopt_tf.csla import CompactMult
from repopt_tf.csla import fold_batch_norm
from repopt_tf.csla import identity_kernel
from repopt_tf.csla import merge_branches
from repopt_tf.models import block_convs
from repopt_tf.models import build_model
from repopt_tf.models import list_models
from repopt_tf.models import registry
from repopt_tf.models.family import ModelFamily
from repopt_tf.optimizers.grad_mult import decode_grad_mult
from repopt_tf.rundir import RunDir
from repopt_tf.rundir import data_config_of


def _conv(x, kernel, bias=0.0):
    """Reference 'same' convolution of (H, W, Cin) x with (k, k, Cin, Cout),
    groups inferred from the kernel's input width."""
    k, _, group_in, out = kernel.shape
    groups = x.shape[-1] // group_in
    pad = k // 2
    xp = np.pad(x, [(pad, pad), (pad, pad), (0, 0)])
    y = np.zeros(x.shape[:2] + (out,))
    per_group = out // groups
    for o in range(out):
        g = o // per_group
        window = xp[..., g * group_in : (g + 1) * group_in]
        for i in range(k):
            for j in range(k):
                y[..., o] += (
                    window[i : i + x.shape[0], j : j + x.shape[1]]
                    @ kernel[i, j, :, o]
                )
    return y + bias


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_merged_kernel_equals_the_branch_sum(groups):
    rng = np.random.default_rng(0)
    channels = 6
    x = rng.normal(size=(5, 5, channels))
    k3 = rng.normal(size=(3, 3, channels // groups, channels))
    k1 = rng.normal(size=(1, 1, channels // groups, channels))
    gamma = rng.normal(size=channels)
    merged = merge_branches(k3, k1, gamma)
    branches = _conv(x, k3) + _conv(x, k1) + gamma * x
    np.testing.assert_allclose(_conv(x, merged), branches, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        _conv(x, identity_kernel(3, channels // groups, channels)), x
    )


def test_fold_batch_norm_equals_bn_after_conv():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 4, 3))
    kernel = rng.normal(size=(3, 3, 3, 5))
    gamma, beta, mean = rng.normal(size=(3, 5))
    var = rng.uniform(0.5, 2, 5)
    folded, bias = fold_batch_norm(kernel, gamma, beta, mean, var, 1e-5)
    expected = (_conv(x, kernel) - mean) / np.sqrt(var + 1e-5) * gamma + beta
    np.testing.assert_allclose(_conv(x, folded, bias), expected, rtol=1e-6)


@pytest.mark.parametrize("shape", [(3, 3, 4, 4), (3, 3, 2, 6), (5, 5, 3, 3)])
def test_compact_mult_round_trips_and_rejects_other_arrays(shape):
    rng = np.random.default_rng(2)
    surround, centre, identity = rng.uniform(0.5, 2, (3, shape[3]))
    compact = CompactMult(shape, surround, centre, identity)
    array = compact.expand()
    again = CompactMult.of(array)
    np.testing.assert_array_equal(again.expand(), array)
    assert CompactMult.from_config(json.loads(json.dumps(again.to_config())))
    array[0, 0, 0, 0] += 1.0
    assert CompactMult.of(array) is None


def test_files_saved_with_the_diagonal_encoding_still_decode():
    mult = grad_mult(np.linspace(0.5, 1, 4), np.linspace(1, 2, 4), True, 4)
    legacy = {
        "shape": [3, 3, 4, 4],
        "surround": mult[0, 0, 0].tolist(),
        "centre": mult[1, 1, 1, :].tolist(),
        "diagonal": np.diag(mult[1, 1]).tolist(),
    }
    legacy["centre"][1] = float(mult[1, 1, 0, 1])  # column 1's off-diagonal
    np.testing.assert_array_equal(decode_grad_mult(legacy), mult)


def test_a_new_family_plugs_in_through_the_registry(monkeypatch):
    class Tiny(ModelFamily):
        name = "tiny_test"
        variants = {"tiny_test_net": {"description": "one conv"}}
        kinds = ("plain",)

        def build(self, variant, num_classes, input_shape, kind, **options):
            inputs = keras.Input(input_shape)
            x = keras.layers.Conv2D(4, 3, padding="same", name="b_conv")(inputs)
            x = keras.layers.GlobalAveragePooling2D()(x)
            outputs = keras.layers.Dense(num_classes)(x)
            return keras.Model(inputs, outputs, name=f"{variant}_{kind}")

    monkeypatch.setitem(registry.FAMILIES, "tiny_test", Tiny(r"b_conv"))
    assert "tiny_test_net" in list_models()
    model = build_model("tiny_test_net", 3, (8, 8, 1))
    assert registry.variant_of(model)[1] == "tiny_test_net"
    assert [c.name for c in block_convs(model)] == ["b_conv"]
    with pytest.raises(ValueError, match="kind must be one of"):
        build_model("tiny_test_net", 3, (8, 8, 1), kind="hs")


def test_export_reads_the_data_settings_of_the_stage(tmp_path):
    stage = RunDir(tmp_path).stage("target")
    stage.path.mkdir(parents=True)
    stage.config.write_text(
        json.dumps({"data.name": "cifar10", "data.eval_split": "test"})
    )
    assert data_config_of(stage.model) == {
        "name": "cifar10",
        "eval_split": "test",
    }
