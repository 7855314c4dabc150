import doctest
import warnings

import keras
import numpy as np
import pytest

from repopt_tf import grad_mult
from repopt_tf import grad_mults_for_model
from repopt_tf.models import VARIANTS
from repopt_tf.models import block_convs
from repopt_tf.models import block_names
from repopt_tf.models import build_model
from repopt_tf.models import extract_scales
from repopt_tf.models import fuse_repvgg
from repopt_tf.models import preprocessing
from repopt_tf.models import reinitialize
from repopt_tf.models.preprocessing import image_input


def _trainable_millions(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights) / 1e6


@pytest.mark.parametrize(
    "name,millions",
    [
        ("repopt_vgg_b1", 51.8),
        ("repopt_vgg_b2", 80.3),
        ("repopt_vgg_l1", 76.0),
        ("repopt_vgg_l2", 118.1),
    ],
)
def test_table1_parameter_counts(name, millions):
    model = build_model(name, num_classes=1000, input_shape=(224, 224, 3))
    assert round(_trainable_millions(model), 1) == millions
    keras.backend.clear_session()


@pytest.mark.parametrize(
    "name,millions",
    [
        ("repvgg_a0", 8.3),
        ("repvgg_a1", 12.8),
        ("repvgg_a2", 25.5),
        ("repvgg_b0", 14.3),
        ("repvgg_b1", 51.8),
        ("repvgg_b2", 80.3),
        ("repvgg_b3", 111.0),
        ("repvgg_b1g2", 41.4),
        ("repvgg_b1g4", 36.1),
        ("repvgg_b2g4", 55.8),
        ("repvgg_b3g4", 75.6),
    ],
)
def test_repvgg_deploy_parameter_counts(name, millions):
    """RepVGG paper (Ding et al., CVPR 2021), Table 3, deployed models."""
    model = build_model(
        name, num_classes=1000, input_shape=(64, 64, 3), kind="deploy"
    )
    assert round(_trainable_millions(model), 1) == millions
    keras.backend.clear_session()


@pytest.mark.parametrize(
    "name,kind",
    [
        (name, "deploy" if VARIANTS[name].get("groups") else "plain")
        for name in sorted(VARIANTS)  # RepOpt-VGG's; GhostNet: test_ghostnet
    ]
    + [
        (name, kind)
        for name in ("repopt_vgg_tiny", "repopt_vgg_s")
        for kind in ("hs", "repvgg", "deploy")
    ],
)
def test_forward_shapes_at_small_input(name, kind):
    model = build_model(name, num_classes=7, input_shape=(32, 32, 3), kind=kind)
    out = model(np.zeros((2, 32, 32, 3), np.float32))
    assert out.shape == (2, 7)
    depth = 1 + sum(VARIANTS[name]["blocks"])
    assert len(block_convs(model)) == depth == len(block_names(name))
    keras.backend.clear_session()


@pytest.mark.backends
def test_layer_names_and_padding():
    model = build_model("repopt_vgg_b1", 1000, (64, 64, 3))
    conv = model.get_layer("stage3_block7_conv")
    assert conv.padding == "valid" and conv.kernel.shape == (3, 3, 512, 512)
    assert conv.zero_padding == 1
    bn = model.get_layer("stage3_block7_bn")
    assert bn.epsilon == 1e-5 and bn.momentum == 0.9
    assert model.get_layer("stage1_block0_conv").strides == (2, 2)
    assert model.get_layer("stage1_block1_conv").strides == (1, 1)


def test_se_variant_has_se_after_each_block():
    model = build_model("repopt_vgg_l2_se", 10, (32, 32, 3))
    reduce = model.get_layer("stage3_block5_se_reduce")
    assert reduce.filters == 640 // 4
    assert (
        len([layer for layer in model.layers if layer.name.endswith("_se")])
        == 48
    )


@pytest.mark.backends
def test_preprocessing_inside_model_takes_raw_pixels():
    model = build_model(
        "repopt_vgg_tiny",
        10,
        (8, 8, 3),
        mean=(0.5, 0.25, 0.0),
        std=(0.5, 0.25, 1.0),
    )
    pre = model.get_layer("preprocessing")
    out = keras.ops.convert_to_numpy(
        pre(np.full((1, 1, 1, 3), 255.0, np.float32))
    ).reshape(-1)
    np.testing.assert_allclose(out, [1.0, 3.0, 1.0], rtol=1e-6)
    with pytest.raises(ValueError, match="mean and std need 3"):
        build_model("repopt_vgg_tiny", 10, (8, 8, 3), mean=(0.5,), std=(1.0,))


@pytest.mark.backends
def test_image_input_starts_every_family_alike():
    inputs, x, stats = image_input((8, 8, 1), mean=(0.5,), std=(0.25,))
    assert inputs.name == "image" and stats == {"mean": [0.5], "std": [0.25]}
    out = keras.Model(inputs, x)(np.full((1, 8, 8, 1), 255.0, np.float32))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), 2.0)
    inputs, x, stats = image_input((8, 8, 3), include_preprocessing=False)
    assert x is inputs and stats is None
    for name in ("repopt_vgg_tiny", "repopt_ghostnet_tiny"):
        model = build_model(name, 10, (32, 32, 1), mean=(0.5,), std=(0.25,))
        assert model.identity["preprocessing"] == {"mean": [0.5], "std": [0.25]}
    assert doctest.testmod(preprocessing).failed == 0


def test_unknown_model_name_lists_variants():
    with pytest.raises(
        ValueError, match="Unknown model 'vgg99'.*repopt_vgg_b1"
    ):
        build_model("vgg99")


@pytest.mark.backends
def test_hs_model_aligns_with_target_and_has_paper_init():
    hs = build_model("repopt_vgg_tiny", 10, (32, 32, 3), kind="hs")
    target = build_model("repopt_vgg_tiny", 10, (32, 32, 3))
    hs_convs, target_convs = block_convs(hs), block_convs(target)
    assert [c.name for c in hs_convs] == [c.name for c in target_convs]
    assert [c.kernel.shape for c in hs_convs] == [
        c.kernel.shape for c in target_convs
    ]
    scales = extract_scales(hs)
    # stage2 has two blocks: block0 (stride 2) init 1, block1 sqrt(2/1).
    index = block_names("repopt_vgg_tiny").index("stage2_block1")
    np.testing.assert_allclose(scales[index]["conv"], np.sqrt(2.0), rtol=1e-6)
    np.testing.assert_allclose(scales[index]["identity"], 1.0)
    assert scales[0]["identity"] is None
    np.testing.assert_allclose(scales[0]["1x1"], 1.0)
    mults = grad_mults_for_model(target, scales)
    assert len(mults) == len(target_convs)


def test_hs_identity_scale_is_a_decayed_kernel():
    hs = build_model("repopt_vgg_tiny", 10, (32, 32, 3), kind="hs")
    layer = hs.get_layer("stage2_block1_scale_identity")
    assert layer.scale.shape == (1, 1, 1, 16)
    assert hs.get_layer("stage2_block1_scale_conv").scale.shape == (16,)


@pytest.mark.backends
def test_extract_scales_reads_trained_values():
    hs = build_model("repopt_vgg_tiny", 10, (32, 32, 3), kind="hs")
    layer = hs.get_layer("stage2_block1_scale_1x1")
    layer.scale.assign(np.arange(16, dtype=np.float32))
    index = block_names("repopt_vgg_tiny").index("stage2_block1")
    np.testing.assert_array_equal(
        extract_scales(hs)[index]["1x1"], np.arange(16)
    )
    with pytest.raises(ValueError, match="not a hyper-search model"):
        extract_scales(build_model("repopt_vgg_tiny", 10, (32, 32, 3)))


def _random_scales(model, seed=0):
    rng = np.random.default_rng(seed)
    blocks = []
    for conv in block_convs(model):
        cin, cout = conv.kernel.shape[2:]
        identity = cin == cout and conv.strides == (1, 1)
        blocks.append(
            {
                "conv": rng.uniform(0.2, 1.5, cout).astype(np.float32),
                "1x1": rng.uniform(0.2, 1.5, cout).astype(np.float32),
                "identity": rng.uniform(0.3, 0.6, cout).astype(np.float32)
                if identity
                else None,
            }
        )
    return blocks


@pytest.mark.backends
def test_rule_of_initialization():
    model = build_model("repopt_vgg_tiny", 10, (32, 32, 3))
    blocks = _random_scales(model)
    zero_branches = [
        dict(b, conv=0 * b["conv"], **{"1x1": 0 * b["1x1"]}) for b in blocks
    ]
    reinitialize(model, zero_branches, seed=1)
    index = block_names("repopt_vgg_tiny").index("stage2_block1")
    kernel = model.get_layer("stage2_block1_conv").kernel.numpy()
    expected = np.zeros_like(kernel)
    expected[1, 1, np.arange(16), np.arange(16)] = blocks[index]["identity"]
    np.testing.assert_array_equal(kernel, expected)

    reinitialize(model, zero_branches, use_identity_scales=False, seed=1)
    np.testing.assert_array_equal(
        model.get_layer("stage2_block1_conv").kernel.numpy(),
        np.eye(16)[None, None]
        * (np.arange(3)[:, None, None, None] == 1)
        * (np.arange(3)[None, :, None, None] == 1),
    )

    only_3x3 = [
        dict(b, **{"1x1": 0 * b["1x1"]}, identity=None)
        if b["identity"] is None
        else b
        for b in blocks
    ]
    reinitialize(model, only_3x3, seed=2)
    stem = model.get_layer("stage0_block0_conv").kernel.numpy()
    bound = 1 / np.sqrt(3 * 3 * 3)  # PyTorch default init, fan_in 27
    ratio = stem / blocks[0]["conv"]
    assert np.abs(ratio).max() <= bound + 1e-6
    assert np.abs(ratio).max() > 0.8 * bound


@pytest.mark.backends
def test_reinitialize_warns_on_trained_model():
    model = build_model("repopt_vgg_tiny", 10, (32, 32, 3))
    blocks = _random_scales(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reinitialize(model, blocks)
    model.get_layer("stage1_block0_bn").gamma.assign(np.full(8, 0.7))
    with pytest.warns(UserWarning, match="looks trained"):
        reinitialize(model, blocks)


def test_reinitialize_validates_scales():
    model = build_model("repopt_vgg_tiny", 10, (32, 32, 3))
    blocks = _random_scales(model)
    with pytest.raises(
        ValueError, match="describe 5 blocks but the model has 6"
    ):
        reinitialize(model, blocks[:-1])


@pytest.mark.backends
@pytest.mark.parametrize("name", ["repopt_vgg_s", "repvgg_b1g4"])
def test_repvgg_fuse_matches_unfused(name):
    model = build_model(name, 10, (32, 32, 3), kind="repvgg")
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, w.shape).astype(np.float32)
                    for w in layer.get_weights()
                ]
            )
    deploy = fuse_repvgg(model)
    assert deploy.name == f"{name}_deploy"
    assert not any(
        isinstance(layer, keras.layers.BatchNormalization)
        for layer in deploy.layers
    )
    x = rng.uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    unfused = model.predict_on_batch(x)
    fused = deploy.predict_on_batch(x)
    assert np.linalg.norm(fused - unfused) / np.linalg.norm(unfused) < 1e-5
    with pytest.raises(ValueError, match="kind='repvgg'"):
        fuse_repvgg(deploy)


@pytest.mark.backends
def test_grad_mults_from_model_use_eq3():
    model = build_model("repopt_vgg_tiny", 10, (32, 32, 3))
    blocks = _random_scales(model)
    mults = grad_mults_for_model(model, blocks)
    index = block_names("repopt_vgg_tiny").index("stage2_block1")
    b = blocks[index]
    np.testing.assert_array_equal(
        mults["stage2_block1_conv/kernel"],
        grad_mult(b["conv"], b["1x1"], True, 16),
    )


def test_groupwise_variants_group_every_other_block():
    model = build_model("repvgg_b2g4", 10, (32, 32, 3), kind="repvgg")
    assert model.get_layer("stage1_block1_conv").groups == 4
    assert model.get_layer("stage1_block1_conv1x1").groups == 4
    assert model.get_layer("stage1_block1_conv").kernel.shape == (3, 3, 40, 160)
    assert model.get_layer("stage1_block2_conv").groups == 1
    assert model.get_layer("stage4_block0_conv").groups == 1  # block 27
    with pytest.raises(ValueError, match="groupwise RepVGG variant"):
        build_model("repvgg_b2g4", 10, (32, 32, 3), kind="plain")
