"""A family defined outside the package (tests/third_family.py) goes through
the whole library with no edit to it: build, scales from its own files,
Grad Mults, Rule of Initialization, a checkpoint in its own layout, a
RepOptSGD step, configs, and int8 export."""

import keras
import numpy as np
import pytest

from repopt_tf.checkpoints import load_state_dict
from repopt_tf.checkpoints import model_from_state_dict
from repopt_tf.configs import fashion_mnist
from repopt_tf.configs import quickstart
from repopt_tf.data import load_source
from repopt_tf.export import export_model
from repopt_tf.models import build_model
from repopt_tf.models import list_models
from repopt_tf.models import reinitialize
from repopt_tf.models.registry import variant_of
from repopt_tf.optimizers import RepOptSGD
from repopt_tf.optimizers import grad_mult
from repopt_tf.optimizers import grad_mults_for_model
from repopt_tf.scales import scales_from_state_dict

CLASSES, SHAPE = 10, (28, 28, 1)


def _torch_state(widths, channels, rng):
    """A state dict as the family's PyTorch twin saves it."""
    state, cin = {}, channels
    for i, width in enumerate(widths):
        state[f"features.{i}.0.weight"] = rng.normal(size=(width, cin, 3, 3))
        state[f"features.{i}.1.weight"] = rng.uniform(0.5, 1.5, width)
        state[f"features.{i}.1.bias"] = rng.normal(size=width)
        state[f"features.{i}.1.running_mean"] = rng.normal(size=width)
        state[f"features.{i}.1.running_var"] = rng.uniform(0.5, 2, width)
        state[f"features.{i}.1.num_batches_tracked"] = np.array(7)
        cin = width
    state["head.weight"] = rng.normal(size=(CLASSES, cin))
    state["head.bias"] = rng.normal(size=CLASSES)
    return {k: v.astype(np.float32) for k, v in state.items()}


def _searched_scales(widths, rng):
    """The family's hyper-search scale keys, as its own file holds them."""
    return {
        f"features.{i}.scale_{branch}.weight": rng.uniform(0.2, 1.5, w)
        for i, w in enumerate(widths)
        for branch in ("conv", "1x1")
    }


def test_it_is_listed_built_and_known_by_its_identity(third_family):
    assert {"twostage_tiny", "twostage_wide"} <= set(list_models())
    model = build_model("twostage_tiny", CLASSES, SHAPE)
    model.name = "renamed"  # identity, not the name, says what it is
    assert variant_of(model) == (third_family.FAMILY, "twostage_tiny")
    assert model.output_shape == (None, CLASSES)
    with pytest.raises(ValueError, match="kind must be one of"):
        build_model("twostage_tiny", CLASSES, SHAPE, kind="hs")


def test_its_scale_files_give_grad_mults_and_the_initial_kernels(third_family):
    rng = np.random.default_rng(0)
    widths = third_family.VARIANTS["twostage_tiny"]["widths"]
    blocks = scales_from_state_dict(_searched_scales(widths, rng))
    assert [b["conv"].size for b in blocks] == list(widths)
    assert all(b["identity"] is None for b in blocks)  # stride 2: none
    model = build_model("twostage_tiny", CLASSES, SHAPE)
    mults = grad_mults_for_model(model, blocks)
    kernel = model.get_layer("s1_conv").kernel
    expected = grad_mult(blocks[1]["conv"], blocks[1]["1x1"], False, 8)
    np.testing.assert_allclose(np.asarray(mults[kernel.path]), expected)
    reinitialize(model, blocks, seed=0)
    centre = np.asarray(model.get_layer("s0_conv").kernel)[1, 1]
    corner = np.asarray(model.get_layer("s0_conv").kernel)[0, 0]
    # Rule of Initialization: |s*W3 + t*W1| reaches past the 3x3 draw's
    # U(+-1/sqrt(9 Cin)) only at the centre tap, where the 1x1 adds.
    bound = 1.5 / np.sqrt(9 * SHAPE[-1])
    assert np.abs(corner).max() <= bound + 1e-6
    assert np.abs(centre).max() > bound
    incomplete = _searched_scales(widths, rng)
    del incomplete["features.1.scale_1x1.weight"]
    with pytest.raises(ValueError, match="block features.1 lacks 1x1"):
        scales_from_state_dict(incomplete)


def test_a_checkpoint_in_its_own_layout_loads(third_family):
    rng = np.random.default_rng(1)
    state = _torch_state((16, 32), 1, rng)
    model, report = model_from_state_dict(state, image_size=28)
    assert variant_of(model)[1] == "twostage_wide"  # read from the shapes
    assert report.tensors == 12 and report.form.startswith("TwoStage")
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("s1_conv").kernel),
        state["features.1.0.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("s0_bn").moving_variance),
        state["features.0.1.running_var"],
    )
    again = build_model("twostage_wide", CLASSES, SHAPE)
    load_state_dict(again, state)
    images = rng.uniform(0, 255, (4, *SHAPE)).astype(np.float32)
    np.testing.assert_array_equal(
        model.predict(images, verbose=0), again.predict(images, verbose=0)
    )
    del state["features.1.1.running_mean"]
    with pytest.raises(ValueError, match="missing keys features.1.1.running"):
        load_state_dict(build_model("twostage_wide", CLASSES, SHAPE), state)


def test_a_repoptsgd_step_scales_the_plain_sgd_step_by_the_mults(third_family):
    """One step from the same weights and batch: RepOptSGD's kernel update
    is SGD's times the Grad Mult (no momentum, no decay)."""
    rng = np.random.default_rng(2)
    blocks = scales_from_state_dict(_searched_scales((8, 16), rng))
    images = rng.uniform(0, 255, (8, *SHAPE)).astype(np.float32)
    labels = keras.utils.to_categorical(rng.integers(0, CLASSES, 8), CLASSES)
    steps = {}
    for name in ("sgd", "repopt"):
        keras.utils.set_random_seed(3)
        model = build_model("twostage_tiny", CLASSES, SHAPE)
        mults = grad_mults_for_model(model, blocks)
        optimizer = (
            keras.optimizers.SGD(0.1)
            if name == "sgd"
            else RepOptSGD(0.1, grad_mults=mults)
        )
        model.compile(
            optimizer, keras.losses.CategoricalCrossentropy(from_logits=True)
        )
        before = np.asarray(model.get_layer("s1_conv").kernel)
        model.train_on_batch(images, labels)
        steps[name] = np.asarray(model.get_layer("s1_conv").kernel) - before
    mult = np.asarray(mults[model.get_layer("s1_conv").kernel.path])
    assert np.abs(steps["sgd"]).max() > 1e-4
    np.testing.assert_allclose(
        steps["repopt"], mult * steps["sgd"], rtol=1e-3, atol=1e-7
    )


def test_configs_reach_it_by_its_names(third_family):
    config = quickstart.get_config("twostage")
    assert (config.model, config.train.weight_decay) == ("twostage_tiny", 1e-4)
    config = fashion_mnist.get_config("two_baseline_sgd")
    assert (config.model, config.mode) == ("twostage_tiny", "baseline_sgd")
    with pytest.raises(ValueError, match="twostage"):
        quickstart.get_config("fourstage")


def test_it_exports_to_a_full_integer_model(third_family, tmp_path):
    keras.utils.set_random_seed(0)
    train = load_source("fashion_mnist", "train", limit=256)
    test = load_source("fashion_mnist", "test", limit=200)
    model = build_model("twostage_tiny", CLASSES, SHAPE)
    report = export_model(
        model,
        train,
        test,
        tmp_path,
        representative=64,
        latency_runs=2,
        log=lambda m: None,
        deploy_images=0,
    )
    assert report["full_integer"] is True
    assert report["model"] == model.name
    assert report["agreement"]["top1_agreement"] >= 0.9
    assert (tmp_path / "model_int8.tflite").stat().st_size > 0
