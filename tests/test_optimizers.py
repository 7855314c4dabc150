import copy

import keras
import numpy as np
import pytest
from keras import ops

from repopt_tf import RepOptAdamW
from repopt_tf import RepOptSGD
from repopt_tf import grad_mult
from repopt_tf import grad_mults_for_model


def _pytorch_sgd(w0, grads, mult, lr, momentum, nesterov, wd):
    """PyTorch SGD (dampening 0) with a Grad Mult, written out in numpy."""
    w, buf = w0.astype(np.float64), None
    for g in grads:
        d = g * mult + wd * w
        buf = d if buf is None else momentum * buf + d
        d = d + momentum * buf if nesterov else buf
        w = w - lr * d
    return w


def _apply(optimizer, w0, grads, path="w"):
    variable = keras.Variable(w0, name=path)
    for g in grads:
        optimizer.apply_gradients([(ops.convert_to_tensor(g), variable)])
    return variable.numpy()


@pytest.mark.backends
@pytest.mark.parametrize("nesterov", [False, True])
def test_single_variable_matches_numpy_reference(nesterov):
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 3, 2, 2)).astype(np.float32)
    grads = rng.normal(size=(5, 3, 3, 2, 2)).astype(np.float32)
    mult = grad_mult([0.5, 2.0], [1.0, 0.1], True, 2)
    optimizer = RepOptSGD(
        0.1,
        momentum=0.9,
        nesterov=nesterov,
        weight_decay=0.01,
        grad_mults={"w": mult},
    )
    expected = _pytorch_sgd(w0, grads, mult, 0.1, 0.9, nesterov, 0.01)
    np.testing.assert_allclose(
        _apply(optimizer, w0, grads), expected, rtol=1e-5
    )


@pytest.mark.backends
def test_zero_mult_entries_never_move():
    rng = np.random.default_rng(1)
    w0 = rng.normal(size=(3, 3, 4, 4)).astype(np.float32)
    grads = rng.normal(size=(10, 3, 3, 4, 4)).astype(np.float32)
    mult = rng.uniform(0.5, 2, w0.shape).astype(np.float32)
    frozen = rng.random(w0.shape) < 0.3
    mult[frozen] = 0.0
    w = _apply(
        RepOptSGD(0.1, momentum=0.9, nesterov=True, grad_mults={"w": mult}),
        w0,
        grads,
    )
    np.testing.assert_array_equal(w[frozen], w0[frozen])
    assert np.all(w[~frozen] != w0[~frozen])


@pytest.mark.backends
@pytest.mark.parametrize("cls", [RepOptSGD, RepOptAdamW])
def test_grad_mults_are_stored_as_row_and_centre_tap(cls):
    variable = keras.Variable(np.ones((3, 3, 4, 4), "float32"), name="w")
    structured = grad_mult(np.arange(1.0, 5.0), np.ones(4), True, 4)
    random = np.random.default_rng(2).uniform(0.5, 2, (3, 3, 4, 4))
    stored = []
    for mult in (structured, random):
        optimizer = cls(grad_mults={"w": mult})
        optimizer.build([variable])
        stored.append(
            sorted(
                tuple(v.shape)
                for v in optimizer.variables
                if "grad_mult" in v.name
            )
        )
    assert stored == [[(4,), (4, 4)], [(3, 3, 4, 4)]]


@pytest.mark.backends
@pytest.mark.parametrize("nesterov", [False, True])
def test_mult_one_equals_plain_sgd(nesterov):
    rng = np.random.default_rng(2)
    w0 = rng.normal(size=(6, 3)).astype(np.float32)
    grads = rng.normal(size=(8, 6, 3)).astype(np.float32)
    ones = RepOptSGD(
        0.05,
        momentum=0.9,
        nesterov=nesterov,
        grad_mults={"w": np.ones_like(w0)},
    )
    without = RepOptSGD(0.05, momentum=0.9, nesterov=nesterov)
    # Keras's SGD folds the LR into the buffer; at constant LR and without
    # weight decay it is the same rule.
    keras_sgd = keras.optimizers.SGD(0.05, momentum=0.9, nesterov=nesterov)
    reference = _apply(without, w0, grads)
    np.testing.assert_array_equal(_apply(ones, w0, grads), reference)
    np.testing.assert_allclose(
        _apply(keras_sgd, w0, grads), reference, rtol=1e-5, atol=1e-6
    )


@pytest.mark.backends
def test_weight_decay_only_on_kernels_and_respects_exclusions():
    optimizer = RepOptSGD(1.0, weight_decay=0.5)
    kernel = keras.Variable(np.ones((2, 2), np.float32), name="kernel")
    bias = keras.Variable(np.ones(2, np.float32), name="bias")
    excluded = keras.Variable(np.ones((2, 2), np.float32), name="excluded")
    optimizer.exclude_from_weight_decay(var_list=[excluded])
    zeros = [ops.zeros((2, 2)), ops.zeros(2), ops.zeros((2, 2))]
    optimizer.apply_gradients(zip(zeros, [kernel, bias, excluded]))
    np.testing.assert_allclose(kernel.numpy(), 0.5)
    np.testing.assert_allclose(bias.numpy(), 1.0)
    np.testing.assert_allclose(excluded.numpy(), 1.0)


def _official_adamw(w0, grads, mult, lr, wd, eps, beta_1=0.9, beta_2=0.999):
    """The update of the official `repoptimizer_adamw.py`
    (`_single_tensor_adamw`), transcribed in float64 numpy."""
    w, m, v = w0.astype(np.float64), np.zeros_like(w0, np.float64), 0.0
    for step, g in enumerate(grads, start=1):
        g = g * mult
        w = w * (1 - lr * wd)
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g * g
        denom = np.sqrt(v) / np.sqrt(1 - beta_2**step) + eps
        w = w - lr / (1 - beta_1**step) * (m * mult) / denom
    return w


@pytest.mark.backends
@pytest.mark.parametrize("eps", [1e-8, 1e-3])
def test_adamw_is_the_official_update_with_its_epsilon(eps):
    rng = np.random.default_rng(3)
    w0 = rng.normal(size=(4, 4)).astype(np.float32)
    grads = rng.normal(size=(10, 4, 4)).astype(np.float32) * 1e-3
    mult = rng.uniform(0.5, 2.0, (4, 4)).astype(np.float32)
    ours = _apply(
        RepOptAdamW(
            0.01, weight_decay=0.1, epsilon=eps, grad_mults={"w": mult}
        ),
        w0,
        grads,
    )
    official = _official_adamw(w0, grads, mult, 0.01, 0.1, eps)
    np.testing.assert_allclose(ours, official, rtol=0, atol=1e-5)
    assert np.abs(ours - official).max() < 2e-6  # float32 rounding only


def _mults_with_dense_fallback():
    rng = np.random.default_rng(4)
    return {
        "block/kernel": grad_mult(rng.random(4), rng.random(4), True, 4),
        "other/kernel": rng.random((3, 3, 2, 4)).astype(np.float32),
    }


@pytest.mark.backends
@pytest.mark.parametrize("cls", [RepOptSGD, RepOptAdamW])
def test_config_round_trip_keeps_mults(cls):
    mults = _mults_with_dense_fallback()
    lr = keras.optimizers.schedules.CosineDecay(0.1, 100, warmup_steps=5)
    optimizer = cls(learning_rate=lr, weight_decay=4e-5, grad_mults=mults)
    config = optimizer.get_config()
    restored = cls.from_config(copy.deepcopy(config))
    assert restored.get_config() == config
    for path, mult in mults.items():
        np.testing.assert_array_equal(restored.grad_mults[path], mult)
    serialized = keras.optimizers.serialize(optimizer)
    again = keras.optimizers.deserialize(serialized)
    assert type(again) is cls
    assert set(again.grad_mults) == set(mults)


def _small_convnet(batch_norm=True):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.ZeroPadding2D(1)(inputs)
    x = keras.layers.Conv2D(8, 3, use_bias=False, name="b0_conv")(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(
            epsilon=1e-5, momentum=0.9, name="b0_bn"
        )(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.ZeroPadding2D(1)(x)
    x = keras.layers.Conv2D(8, 3, use_bias=False, name="b1_conv")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(4, name="fc")(x)
    return keras.Model(inputs, outputs)


def _blocks():
    rng = np.random.default_rng(5)
    return [
        {
            "conv": rng.uniform(0.3, 1, 8),
            "1x1": rng.uniform(0.3, 1, 8),
            "identity": None,
        },
        {
            "conv": rng.uniform(0.3, 1, 8),
            "1x1": rng.uniform(0.3, 1, 8),
            "identity": np.ones(8),
        },
    ]


def _data(n=32):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(n, 8, 8, 3)).astype(np.float32)
    x[..., :2] += rng.choice([-0.5, 0.5], size=(n, 1, 1, 2))
    means = x[..., :2].mean(axis=(1, 2))
    y = (means[:, 0] > 0) * 2 + (means[:, 1] > 0)
    return x, y


def _compile(model, **optimizer_kwargs):
    mults = grad_mults_for_model(model, _blocks())
    model.compile(
        optimizer=RepOptSGD(grad_mults=mults, **optimizer_kwargs),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return mults


@pytest.mark.backends
def test_fit_with_schedule_reduces_loss():
    keras.utils.set_random_seed(0)
    model = _small_convnet()
    lr = keras.optimizers.schedules.CosineDecay(0.05, 40)
    _compile(
        model, learning_rate=lr, momentum=0.9, nesterov=True, weight_decay=4e-5
    )
    x, y = _data()
    history = model.fit(x, y, batch_size=8, epochs=10, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.backends
def test_saved_model_resumes_the_same_trajectory(tmp_path):
    keras.utils.set_random_seed(0)
    model = _small_convnet()
    mults = _compile(
        model,
        learning_rate=0.05,
        momentum=0.9,
        nesterov=True,
        weight_decay=1e-3,
    )
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)

    assert isinstance(loaded.optimizer, RepOptSGD)
    for key, mult in mults.items():
        np.testing.assert_array_equal(loaded.optimizer.grad_mults[key], mult)
    for ours, theirs in zip(
        model.optimizer.variables, loaded.optimizer.variables
    ):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())

    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for ours, theirs in zip(model.weights, loaded.weights):
        np.testing.assert_allclose(
            ours.numpy(), theirs.numpy(), rtol=1e-6, atol=1e-7
        )


def _train_under(strategy, initial_weights):
    with strategy.scope():
        model = _small_convnet(batch_norm=False)
        model.set_weights(initial_weights)
        _compile(
            model,
            learning_rate=0.05,
            momentum=0.9,
            nesterov=True,
            weight_decay=1e-3,
        )
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    return model.get_weights()


def test_mirrored_strategy_matches_one_device():
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    initial = _small_convnet(batch_norm=False).get_weights()
    single = _train_under(tf.distribute.get_strategy(), initial)
    mirrored = _train_under(
        tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"]), initial
    )
    moved = max(np.abs(a - b).max() for a, b in zip(single, initial))
    assert moved > 1e-3
    for a, b in zip(single, mirrored):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.backends
def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="learning_rate.*>= 0"):
        RepOptSGD(learning_rate=-0.1)
    with pytest.raises(ValueError, match="weight_decay.*>= 0"):
        RepOptSGD(weight_decay=-1.0)
    mult = {"w": np.ones(3)}
    with pytest.raises(ValueError, match="`clipnorm`.*CSLA"):
        RepOptSGD(clipnorm=1.0, grad_mults=mult)
    with pytest.raises(ValueError, match="`clipvalue`.*CSLA"):
        RepOptAdamW(clipvalue=1.0, grad_mults=mult)
    with pytest.raises(ValueError, match="global_clipnorm"):
        RepOptAdamW(global_clipnorm=1.0, grad_mults=mult)
    with pytest.raises(ValueError, match="NaN"):
        RepOptSGD(grad_mults={"w": [np.nan]})
    with pytest.raises(ValueError, match="must be a dict"):
        RepOptSGD(grad_mults=[np.ones(3)])

    model = _small_convnet()
    wrong_shape = RepOptSGD(
        grad_mults={"b0_conv/kernel": np.ones((3, 3, 3, 4))}
    )
    with pytest.raises(
        ValueError,
        match=r"b0_conv/kernel.*\(3, 3, 3, 4\).*"
        r"\(3, 3, 3, 8\)",
    ):
        wrong_shape.build(model.trainable_variables)
    unknown = RepOptSGD(grad_mults={"nope/kernel": np.ones(3)})
    with pytest.raises(ValueError, match="nope/kernel"):
        unknown.build(model.trainable_variables)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RepOptSGD(
            0.1,
            momentum=0.9,
            nesterov=True,
            weight_decay=1e-4,
            grad_mults={"w": np.full((3, 3, 2, 2), 2.0)},
        ),
        lambda: _random_subset_multirate(0.1, k=2),
    ],
)
def test_update_math_waits_for_the_gradient(make, waits_for):
    # TF would otherwise compute `weight_decay * w`, `momentum * buf` or the
    # slow mask at the start of a training step and hold them through the
    # backward pass: variable-sized buffers at the step's memory peak.
    import tensorflow as tf

    variable = keras.Variable(np.ones((3, 3, 2, 2), "float32"), name="w")
    optimizer = make()
    optimizer.build([variable])

    @tf.function
    def apply(gradient):
        optimizer.apply_gradients([(gradient, variable)])

    graph = apply.get_concrete_function(tf.TensorSpec((3, 3, 2, 2))).graph
    gradient = graph.inputs[0]
    sized = [
        op
        for op in graph.get_operations()
        if op.type in ("Mul", "AddV2", "Sub", "RealDiv")
        and op.outputs[0].shape.rank == 4
    ]
    assert sized
    assert [op.name for op in sized if not waits_for(op, gradient)] == []


def _random_subset_multirate(*args, **kwargs):
    from repopt_tf.multirate import RandomSubsetMultirate

    return RandomSubsetMultirate(*args, **kwargs)
