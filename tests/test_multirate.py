import keras
import numpy as np
import pytest
import tensorflow as tf

from repopt_tf.multirate import MultirateModel
from repopt_tf.multirate import MultirateOptimizer
from repopt_tf.optimizers import RepOptSGD


def _net(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="body")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    return keras.Model(inputs, outputs)


def _data(n=48):
    rng = np.random.default_rng(0)
    return rng.random((n, 8, 8, 2)).astype(np.float32), rng.integers(0, 3, n)


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _multirate(k, drift=True, base=None, weights=None):
    model = MultirateModel(*_io(_net()))
    if weights is not None:
        model.set_weights(weights)
    base = base or keras.optimizers.SGD(0.05, momentum=0.9)
    model.compile(
        optimizer=MultirateOptimizer(
            base, k=k, slow_variables="body", linear_drift=drift
        ),
        loss=LOSS,
    )
    return model


def _io(model):
    return model.inputs, model.outputs


@pytest.mark.parametrize("drift", [True, False])
def test_k1_equals_the_base_optimizer(drift):
    x, y = _data()
    reference = _net()
    initial = reference.get_weights()
    reference.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=LOSS
    )
    reference.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    model = _multirate(1, drift, weights=initial)
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    moved = max(
        np.abs(a - b).max() for a, b in zip(reference.get_weights(), initial)
    )
    assert moved > 1e-3
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _algorithm1(theta_f, theta_s, hessian, h, k, mu, steps, drift):
    """Algorithm 1 by hand on f = 0.5 theta^T H theta, fast = first entry."""
    theta = np.array([theta_f, theta_s], np.float64)
    p_fast = p_slow = 0.0
    for t in range(steps):
        grad = hessian @ theta
        if t % k == 0:
            p_slow = mu * p_slow + grad[1]
            if not drift:
                theta[1] -= h * p_slow
        p_fast = mu * p_fast + grad[0]
        theta[0] -= (h / k) * p_fast
        if drift:
            theta[1] -= (h / k) * p_slow
    return theta


@pytest.mark.parametrize("drift", [True, False])
@pytest.mark.parametrize("k", [3, 5])
def test_schedule_matches_algorithm_1_on_a_quadratic(drift, k):
    hessian = np.array([[2.0, 0.5], [0.5, 1.0]])
    h, mu, steps = 0.3, 0.9, 17
    fast = keras.Variable(np.float32(1.0), name="fast")
    slow = keras.Variable(np.float32(-2.0), name="slow")
    optimizer = MultirateOptimizer(
        keras.optimizers.SGD(h / k, momentum=mu),
        k=k,
        slow_variables=[slow],
        linear_drift=drift,
    )
    optimizer.build([fast, slow])
    assert float(optimizer.slow_learning_rate) == pytest.approx(h)
    slow_steps = 0
    for _ in range(steps):
        grad = hessian @ np.array([fast.numpy(), slow.numpy()], np.float64)
        is_slow = optimizer.is_slow_step()
        slow_steps += is_slow
        optimizer.apply_multirate(
            [tf.constant(grad[0], tf.float32)],
            [tf.constant(grad[1], tf.float32)] if is_slow else None,
        )
    expected = _algorithm1(1.0, -2.0, hessian, h, k, mu, steps, drift)
    assert slow_steps == -(-steps // k)
    np.testing.assert_allclose(
        [fast.numpy(), slow.numpy()], expected, rtol=2e-5
    )
    other = _algorithm1(1.0, -2.0, hessian, h, k, mu, steps, not drift)
    assert np.abs(other - expected).max() > 1e-3  # drift on/off really differ


def _op_types(model, slow):
    x, y = _data(8)
    step = tf.function(lambda a, b: model.multirate_step((a, b), slow=slow))
    graph = step.get_concrete_function(tf.constant(x), tf.constant(y)).graph
    return [op.type for op in graph.get_operations()]


def test_fast_steps_compute_no_slow_gradients():
    model = _multirate(4)
    model.optimizer.build(model.trainable_variables)
    fast_ops = _op_types(model, slow=False)
    slow_ops = _op_types(model, slow=True)
    assert "Conv2DBackpropFilter" in slow_ops
    assert "Conv2DBackpropFilter" not in fast_ops
    assert "Conv2DBackpropInput" not in fast_ops  # nothing below the head
    assert "MatMul" in fast_ops


def test_fit_with_repoptsgd_base_callbacks_and_resume(tmp_path):
    x, y = _data()
    model = _multirate(
        3, base=RepOptSGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    )
    log = tmp_path / "log.csv"
    history = model.fit(
        x,
        y,
        batch_size=8,
        epochs=4,
        shuffle=False,
        verbose=0,
        callbacks=[keras.callbacks.CSVLogger(str(log))],
    )
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert len(log.read_text().splitlines()) == 5
    assert int(model.optimizer.iterations) == 24

    model.fit(
        x, y, batch_size=8, epochs=1, shuffle=False, verbose=0
    )  # 30 steps
    model.save(tmp_path / "mid.keras")
    loaded = keras.models.load_model(tmp_path / "mid.keras")
    assert isinstance(loaded, MultirateModel)
    assert int(loaded.optimizer.iterations) == 30
    for ours, theirs in zip(
        model.optimizer.variables, loaded.optimizer.variables
    ):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_mirrored_strategy_matches_one_device():
    x, y = _data()
    initial = _net().get_weights()

    def train(strategy):
        with strategy.scope():
            model = _multirate(3, weights=initial)
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        return model.get_weights()

    single = train(tf.distribute.get_strategy())
    mirrored = train(
        tf.distribute.MirroredStrategy(
            ["CPU:0", "CPU:1"],
            cross_device_ops=tf.distribute.ReductionToOneDevice(),
        )
    )
    for a, b in zip(single, mirrored):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bad_settings_give_clear_errors():
    sgd = keras.optimizers.SGD(0.1)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        MultirateOptimizer(sgd, k=0, slow_variables="body")
    with pytest.raises(
        ValueError, match="base_optimizer must be a Keras optimizer"
    ):
        MultirateOptimizer("sgd", k=2, slow_variables="body")
    with pytest.raises(ValueError, match="momentum must be in"):
        MultirateOptimizer(sgd, k=2, slow_variables="body", momentum=1.5)
    model = _net()
    for pattern in ("nothing_matches", "."):
        optimizer = MultirateOptimizer(
            keras.optimizers.SGD(0.1), k=2, slow_variables=pattern
        )
        with pytest.raises(ValueError, match="must select some but not all"):
            optimizer.build(model.trainable_variables)
    wrapped = MultirateModel(*_io(_net()))
    wrapped.compile(optimizer="sgd", loss=LOSS)
    with pytest.raises(ValueError, match="compiled with a MultirateOptimizer"):
        wrapped.fit(*_data(8), verbose=0)


def _apply_random(optimizer, w0, grads):
    variable = keras.Variable(w0, name="w")
    for g in grads:
        optimizer.apply_gradients([(tf.constant(g), variable)])
    return variable


def test_random_subset_with_no_slow_weights_is_momentum_sgd():
    from repopt_tf.multirate import RandomSubsetMultirate

    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4, 5)).astype(np.float32)
    grads = rng.normal(size=(7, 4, 5)).astype(np.float32)
    ours = _apply_random(
        RandomSubsetMultirate(0.05, k=3, slow_fraction=0.0), w0, grads
    )
    keras_sgd = _apply_random(
        keras.optimizers.SGD(0.05, momentum=0.9), w0, grads
    )
    np.testing.assert_allclose(
        ours.numpy(), keras_sgd.numpy(), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("drift", [True, False])
def test_random_subset_schedule_by_hand(drift):
    from repopt_tf.multirate import RandomSubsetMultirate

    k, h_fast, mu, steps = 3, 0.05, 0.9, 10
    rng = np.random.default_rng(1)
    w0 = rng.normal(size=(6, 6)).astype(np.float32)
    grads = rng.normal(size=(steps, 6, 6)).astype(np.float32)
    optimizer = RandomSubsetMultirate(
        h_fast, k=k, slow_fraction=0.4, momentum=mu, linear_drift=drift, seed=3
    )
    variable = _apply_random(optimizer, w0, grads)

    w, p_fast, p_slow = (
        w0.astype(np.float64),
        np.zeros_like(w0),
        np.zeros_like(w0),
    )
    masks = [optimizer.slow_mask(variable, t).numpy() for t in range(steps)]
    for t, g in enumerate(grads):
        slow = masks[t] == 1
        p_fast = np.where(slow, p_fast, mu * p_fast + g)
        if t % k == 0:
            p_slow = np.where(slow, mu * p_slow + g, p_slow)
        w = w - np.where(slow, 0, h_fast * p_fast)
        if drift:
            w = w - np.where(slow, h_fast * p_slow, 0)
        elif t % k == 0:
            w = w - np.where(slow, k * h_fast * p_slow, 0)
    np.testing.assert_allclose(variable.numpy(), w, rtol=1e-5, atol=1e-6)
    # One draw per block, re-drawn at block boundaries, ~40% slow.
    assert np.array_equal(masks[0], masks[2]) and not np.array_equal(
        masks[2], masks[3]
    )
    assert 0.2 < np.mean(masks) < 0.6


def test_random_subset_trains_with_fit_and_round_trips_config():
    from repopt_tf.multirate import RandomSubsetMultirate

    model = _net()
    model.compile(
        optimizer=RandomSubsetMultirate(0.05, k=4, slow_fraction=0.3), loss=LOSS
    )
    history = model.fit(*_data(), batch_size=8, epochs=4, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    config = model.optimizer.get_config()
    assert (
        RandomSubsetMultirate.from_config(dict(config)).get_config() == config
    )
    with pytest.raises(ValueError, match="slow_fraction must be in"):
        RandomSubsetMultirate(slow_fraction=1.5)
