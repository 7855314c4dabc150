"""RepVGG's custom L2 (`repopt_tf.training.equivalent_kernel_l2`)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from repopt_tf.configs import base
from repopt_tf.models import build_model
from repopt_tf.training.equivalent_kernel_l2 import add_equivalent_kernel_l2
from repopt_tf.training.recipe import build_optimizer

WEIGHT_DECAY = 0.01


def _repvgg(seed=0):
    keras.utils.set_random_seed(seed)
    model = build_model("repopt_vgg_tiny", 10, (16, 16, 1), kind="repvgg")
    rng = np.random.default_rng(seed)
    for layer in model.layers:  # distinct BN scales t per branch
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.gamma.assign(rng.uniform(0.3, 2.0, shape))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, shape))
    return model


def _blocks(model):
    return sorted(
        layer.name.removesuffix("_conv1x1")
        for layer in model.layers
        if layer.name.endswith("_conv1x1")
    )


def _scale(bn):
    gamma, var = bn.gamma.numpy(), bn.moving_variance.numpy()
    return gamma / np.sqrt(var + bn.epsilon)


def _expected(model):
    """`(penalty, {kernel path: gradient})` written out in numpy."""
    penalty, grads = 0.0, {}
    for block in _blocks(model):
        conv = model.get_layer(f"{block}_conv")
        conv1x1 = model.get_layer(f"{block}_conv1x1")
        k3, k1 = conv.kernel.numpy(), conv1x1.kernel.numpy()[0, 0]
        t3 = _scale(model.get_layer(f"{block}_bn"))
        t1 = _scale(model.get_layer(f"{block}_bn1x1"))
        centre = k3[1, 1]
        fused = centre * t3 + k1 * t1
        norm = t3**2 + t1**2
        surround = (k3**2).sum() - (centre**2).sum()
        penalty += 0.5 * WEIGHT_DECAY * (surround + (fused**2 / norm).sum())
        grad3 = WEIGHT_DECAY * k3
        grad3[1, 1] = WEIGHT_DECAY * t3 * fused / norm
        grads[conv.kernel.path] = grad3
        grads[conv1x1.kernel.path] = (WEIGHT_DECAY * t1 * fused / norm)[
            None, None
        ]
    return penalty, grads


def test_penalty_is_repvggs_formula_with_scales_held_constant():
    model = _repvgg()
    covered = add_equivalent_kernel_l2(model, WEIGHT_DECAY)
    blocks = _blocks(model)
    assert len(blocks) == 6 and len(covered) == 12  # stem + 5 blocks
    expected, grads = _expected(model)
    bn = [model.get_layer(f"{b}_bn").gamma for b in blocks]
    with tf.GradientTape() as tape:
        penalty = sum(model.losses)
    assert len(model.losses) == len(blocks)
    np.testing.assert_allclose(float(penalty), expected, rtol=1e-5)
    kernels = [v for v in model.trainable_variables if v.path in grads]
    computed = tape.gradient(penalty, kernels + bn)
    for variable, gradient in zip(kernels, computed[: len(kernels)]):
        np.testing.assert_allclose(
            gradient.numpy(), grads[variable.path], rtol=1e-5, atol=1e-8
        )
    # t = gamma / sqrt(var + eps) is held constant (no gradient to BN).
    assert all(g is None for g in computed[len(kernels) :])


def test_one_training_step_is_sgd_on_loss_plus_penalty_without_decay():
    """fit's step with the custom L2 differs from a step without any decay
    exactly by `-lr * d(penalty)`: the penalty enters the loss, and the
    covered kernels get no ordinary decay (the classifier still does)."""
    train = base.get_config().train
    train.momentum, train.nesterov = 0.0, False
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (8, 16, 16, 1)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 10, 8), 10)
    after = {}
    for custom in (True, False):
        model = _repvgg()
        no_decay = ()
        if custom:
            no_decay = add_equivalent_kernel_l2(model, WEIGHT_DECAY)
        optimizer = build_optimizer(
            train, 0.1, WEIGHT_DECAY if custom else 0.0, no_decay=no_decay
        )
        model.compile(optimizer=optimizer, loss="categorical_crossentropy")
        start = {v.path: v.numpy() for v in model.trainable_variables}
        model.train_on_batch(x, y)
        if custom:
            _, grads = _expected_at(model, start)
            decayed = [
                v.path
                for v in model.trainable_variables
                if optimizer._use_weight_decay(v)
            ]
            assert decayed == ["classifier/kernel"]
        after[custom] = {v.path: v.numpy() for v in model.trainable_variables}
    for path, gradient in grads.items():
        np.testing.assert_allclose(
            after[True][path] - after[False][path],
            -0.1 * gradient,
            rtol=1e-4,
            atol=1e-7,
        )
    np.testing.assert_allclose(  # plain decay there: -lr * wd * w
        after[True]["classifier/kernel"] - after[False]["classifier/kernel"],
        -0.1 * WEIGHT_DECAY * start["classifier/kernel"],
        rtol=1e-4,
        atol=1e-7,
    )


def _expected_at(model, kernels):
    """`_expected` with the kernels before the step (the BN statistics the
    penalty read: the step's updated moving variances)."""
    now = {v.path: v.numpy() for v in model.trainable_variables}
    for variable in model.trainable_variables:
        variable.assign(kernels[variable.path])
    try:
        return _expected(model)
    finally:
        for variable in model.trainable_variables:
            variable.assign(now[variable.path])


def test_a_model_without_1x1_branches_is_refused():
    plain = build_model("repopt_vgg_tiny", 10, (16, 16, 1), kind="plain")
    with pytest.raises(ValueError, match="no RepVGG block with a 1x1"):
        add_equivalent_kernel_l2(plain, WEIGHT_DECAY)
