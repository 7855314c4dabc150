"""RepOpt on a user's own network: its CSLA form, scales, reinit and mults.

The network is a small ResNet-style Keras model (stride-2 "same" stem,
a residual pair of C -> C convs, ZeroPadding2D + a "valid" conv, an unpadded
stride-2 conv). The claim
tested is the paper's: the plain network trained with RepOptSGD and the Grad
Mults of the (constant) CSLA scales follows exactly the CSLA form trained
with plain SGD (PyTorch semantics, momentum, Nesterov, L2).
"""

import warnings

import keras
import numpy as np
import pytest

from repopt_tf import RepOptSGD
from repopt_tf import grad_mults_for_model
from repopt_tf.models import csla_form
from repopt_tf.models import extract_scales
from repopt_tf.models import reinitialize
from repopt_tf.models.blocks import ChannelScale

PATTERN = r".*_conv\w*"
STEPS = 10
CONVS = ("stem_conv", "res_conv_a", "res_conv_b", "pad_conv", "down_conv")


def resnet_like(seed=0):
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inputs = keras.Input((12, 12, 3))
    x = layers.Conv2D(
        8, 3, strides=2, padding="same", use_bias=False, name="stem_conv"
    )(inputs)
    x = layers.ReLU()(layers.BatchNormalization(name="stem_bn")(x))
    y = layers.Conv2D(8, 3, padding="same", use_bias=False, name="res_conv_a")(
        x
    )
    y = layers.ReLU()(layers.BatchNormalization(name="res_bn_a")(y))
    y = layers.Conv2D(8, 3, padding="same", use_bias=False, name="res_conv_b")(
        y
    )
    y = layers.BatchNormalization(name="res_bn_b")(y)
    x = layers.ReLU()(layers.Add(name="res_add")([x, y]))
    x = layers.ZeroPadding2D(1)(x)  # PyTorch-style padding=1
    x = layers.Conv2D(8, 3, padding="valid", use_bias=False, name="pad_conv")(x)
    x = layers.ReLU()(layers.BatchNormalization(name="pad_bn")(x))
    x = layers.Conv2D(
        16, 3, strides=2, padding="valid", use_bias=False, name="down_conv"
    )(x)
    x = layers.ReLU()(layers.BatchNormalization(name="down_bn")(x))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(
        inputs, layers.Dense(5, name="head")(x), name="resnet_like"
    )


def _hs_with_constant_scales(model, seed=1):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hs = csla_form(model, PATTERN)
    rng = np.random.default_rng(seed)
    for layer in hs.layers:
        if isinstance(layer, ChannelScale):
            layer.scale.assign(rng.uniform(0.3, 1.4, layer.scale.shape))
            # CSLA: s and t are constants, the identity scale trains.
            layer.trainable = layer.name.endswith("_scale_identity")
    return hs, caught


@pytest.mark.backends
def test_csla_form_builds_aligned_branches_and_warns():
    model = resnet_like()
    hs, caught = _hs_with_constant_scales(model)
    names = {layer.name for layer in hs.layers}
    for conv in CONVS:
        base = conv.removesuffix("_conv")
        assert {
            conv,
            f"{base}_conv1x1",
            f"{base}_scale_conv",
            f"{base}_scale_1x1",
            f"{base}_add",
        } <= names
    identities = sorted(n for n in names if n.endswith("_scale_identity"))
    assert identities == [
        "pad_scale_identity",
        "res_conv_a_scale_identity",
        "res_conv_b_scale_identity",
    ]
    # "same" at stride 2 on an even size pads one side: cropped and warned.
    assert [str(w.message).split(":")[0] for w in caught] == ["stem_conv"]
    assert hs.get_layer("stem_crop").cropping == ((1, 0), (1, 0))
    assert hs.get_layer("pad_crop").cropping == ((1, 1), (1, 1))
    assert hs.get_layer("down_crop").cropping == ((1, 2), (1, 2))
    assert hs.output_shape == model.output_shape
    with pytest.raises(
        ValueError, match="No 3x3 Conv2D/DepthwiseConv2D of resnet_like matches"
    ):
        csla_form(model, "nothing")


def _merged_kernels(hs, scales):
    """s * W3 + t * pad(W1) (+ diag(gamma)) of every converted conv."""
    kernels = {}
    convs = [layer for layer in hs.layers if layer.name in CONVS]
    for conv, block in zip(convs, scales):
        base = conv.name.removesuffix("_conv")
        w1 = np.asarray(hs.get_layer(f"{base}_conv1x1").kernel)
        kernel = block["conv"] * np.asarray(conv.kernel)
        kernel[1, 1] += block["1x1"] * w1[0, 0]
        if block["identity"] is not None:
            channels = np.arange(kernel.shape[-1])
            kernel[1, 1, channels, channels] += block["identity"]
        kernels[conv.name] = kernel
    return kernels


def _train(model, optimizer, data):
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    for x, y in data:
        model.train_on_batch(x, y)


@pytest.mark.backends
def test_plain_with_repopt_sgd_equals_csla_form_with_sgd():
    plain = resnet_like()
    hs, _ = _hs_with_constant_scales(plain)
    scales = extract_scales(hs, PATTERN)
    assert [b["identity"] is not None for b in scales] == [
        False,
        True,
        True,
        True,
        False,
    ]
    for name, kernel in _merged_kernels(hs, scales).items():
        plain.get_layer(name).kernel.assign(kernel)
    for layer in plain.layers:
        if layer.weights and layer.name not in _merged_kernels(hs, scales):
            layer.set_weights(hs.get_layer(layer.name).get_weights())
    rng = np.random.default_rng(0)
    data = [
        (
            rng.uniform(-1, 1, (8, 12, 12, 3)).astype(np.float32),
            rng.integers(0, 5, 8),
        )
        for _ in range(STEPS)
    ]
    np.testing.assert_allclose(
        plain.predict_on_batch(data[0][0]),
        hs.predict_on_batch(data[0][0]),
        rtol=1e-4,
        atol=1e-5,
    )
    settings = dict(
        learning_rate=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3
    )
    _train(hs, RepOptSGD(**settings), data)  # PyTorch SGD (no mults)
    _train(
        plain,
        RepOptSGD(
            **settings, grad_mults=grad_mults_for_model(plain, scales, PATTERN)
        ),
        data,
    )
    trained = extract_scales(hs, PATTERN)  # the identity scales trained
    for name, kernel in _merged_kernels(hs, trained).items():
        ours = np.asarray(plain.get_layer(name).kernel)
        assert np.abs(ours - kernel).max() / np.abs(kernel).max() < 1e-5, name
    # Training moved the kernels: the match is not the starting point's.
    start = _merged_kernels(_hs_with_constant_scales(resnet_like())[0], scales)
    assert (
        np.abs(
            start["res_conv_a"]
            - np.asarray(plain.get_layer("res_conv_a").kernel)
        ).max()
        > 1e-3
    )


def test_reinitialize_and_mults_follow_the_pattern():
    plain = resnet_like()
    hs, _ = _hs_with_constant_scales(plain)
    scales = extract_scales(hs, PATTERN)
    reinitialize(plain, scales, seed=0, layer_pattern=PATTERN)
    kernel = np.asarray(plain.get_layer("res_conv_a").kernel)
    diagonal = kernel[1, 1, np.arange(8), np.arange(8)]
    off = kernel[1, 1][~np.eye(8, dtype=bool)]
    # The Rule of Initialization puts the identity scale on the diagonal.
    assert np.abs(diagonal - scales[1]["identity"]).max() < 0.5
    assert np.abs(diagonal).mean() > 3 * np.abs(off).mean()
    mults = grad_mults_for_model(plain, scales, PATTERN)
    assert sorted(mults) == sorted(f"{conv}/kernel" for conv in CONVS)
    with pytest.raises(
        ValueError, match="describe 3 blocks but the model has 5"
    ):
        reinitialize(plain, scales[:3], layer_pattern=PATTERN)


DW_PATTERN = r".*_dw"


def mobilenet_like(seed=0):
    """MobileNetV2-style: an inverted residual (1x1 expand, depthwise 3x3,
    1x1 project, residual add) and a stride-2 depthwise after
    ZeroPadding2D."""
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inputs = keras.Input((8, 8, 4))
    x = layers.Conv2D(12, 1, use_bias=False, name="expand")(inputs)
    x = layers.ReLU(6.0)(layers.BatchNormalization(name="expand_bn")(x))
    x = layers.DepthwiseConv2D(
        3, padding="same", use_bias=False, name="block_dw"
    )(x)
    x = layers.ReLU(6.0)(layers.BatchNormalization(name="block_dw_bn")(x))
    x = layers.Conv2D(4, 1, use_bias=False, name="project")(x)
    x = layers.BatchNormalization(name="project_bn")(x)
    x = layers.Add(name="residual")([inputs, x])
    x = layers.ZeroPadding2D(1)(x)
    x = layers.DepthwiseConv2D(
        3, strides=2, padding="valid", use_bias=False, name="down_dw"
    )(x)
    x = layers.ReLU(6.0)(layers.BatchNormalization(name="down_dw_bn")(x))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(
        inputs, layers.Dense(3, name="head")(x), name="mobilenet_like"
    )


def _merged_depthwise(hs, scales):
    """t * W (+ s on each channel's centre tap) of every depthwise conv."""
    kernels = {}
    convs = [layer for layer in hs.layers if layer.name.endswith("_dw")]
    for conv, block in zip(convs, scales):
        kernel = block["conv"][None, None, :, None] * np.asarray(conv.kernel)
        if block["identity"] is not None:
            kernel[1, 1, :, 0] += block["identity"]
        kernels[conv.name] = kernel
    return kernels


@pytest.mark.backends
def test_depthwise_blocks_of_a_users_network_train_exactly():
    plain = mobilenet_like()
    hs = csla_form(plain, DW_PATTERN)
    names = {layer.name for layer in hs.layers}
    assert {"block_dw_scale_conv", "block_dw_scale_identity"} <= names
    assert "down_dw_scale_conv" in names  # stride 2: no identity branch
    assert not {n for n in names if "conv1x1" in n or n == "down_dw_add"}
    rng = np.random.default_rng(3)
    for layer in hs.layers:
        if isinstance(layer, ChannelScale):
            layer.scale.assign(rng.uniform(0.3, 1.4, layer.scale.shape))
            layer.trainable = layer.name.endswith("_scale_identity")
    scales = extract_scales(hs, DW_PATTERN)
    assert [b["1x1"] for b in scales] == [None, None]
    assert [b["identity"] is not None for b in scales] == [True, False]
    merged = _merged_depthwise(hs, scales)
    for name, kernel in merged.items():
        plain.get_layer(name).kernel.assign(kernel)
    for layer in plain.layers:
        if layer.weights and layer.name not in merged:
            layer.set_weights(hs.get_layer(layer.name).get_weights())
    data = [
        (
            rng.uniform(-1, 1, (8, 8, 8, 4)).astype(np.float32),
            rng.integers(0, 3, 8),
        )
        for _ in range(STEPS)
    ]
    np.testing.assert_allclose(
        plain.predict_on_batch(data[0][0]),
        hs.predict_on_batch(data[0][0]),
        rtol=1e-4,
        atol=1e-5,
    )
    settings = dict(
        learning_rate=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3
    )
    _train(hs, RepOptSGD(**settings), data)
    mults = grad_mults_for_model(plain, scales, DW_PATTERN)
    assert sorted(mults) == ["block_dw/kernel", "down_dw/kernel"]
    _train(plain, RepOptSGD(**settings, grad_mults=mults), data)
    for name, kernel in _merged_depthwise(
        hs, extract_scales(hs, DW_PATTERN)
    ).items():
        ours = np.asarray(plain.get_layer(name).kernel)
        assert np.abs(ours - kernel).max() / np.abs(kernel).max() < 1e-5, name
    np.testing.assert_allclose(
        plain.predict_on_batch(data[0][0]),
        hs.predict_on_batch(data[0][0]),
        rtol=1e-4,
        atol=1e-5,
    )


def test_depthwise_reinit_follows_ghostnets_rule_and_no_match_is_an_error():
    plain = mobilenet_like()
    hs = csla_form(plain, DW_PATTERN)
    scales = extract_scales(hs, DW_PATTERN)
    reinitialize(plain, scales, seed=0, layer_pattern=DW_PATTERN)
    kernel = np.asarray(plain.get_layer("block_dw").kernel)
    # t * W + s * I: the identity scale (1 at init) on each centre tap.
    centre, rest = kernel[1, 1, :, 0], np.delete(kernel.reshape(9, -1), 4, 0)
    assert np.abs(centre).mean() > 2 * np.abs(rest).mean()
    for call in (
        lambda: extract_scales(hs, "nothing"),
        lambda: grad_mults_for_model(plain, scales, "nothing"),
        lambda: reinitialize(plain, scales, layer_pattern="nothing"),
        lambda: csla_form(plain, "nothing"),
    ):
        with pytest.raises(ValueError, match="No 3x3 .* matches 'nothing'"):
            call()
