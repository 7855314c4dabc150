import keras
import numpy as np
import pytest

from repopt_tf.models import build_model
from repopt_tf.models.rpg import ParameterRing
from repopt_tf.models.rpg import RingConv2D
from repopt_tf.models.rpg import RingDense
from repopt_tf.models.rpg import materialize
from repopt_tf.models.rpg import ring_indices
from repopt_tf.models.rpg import ring_layers
from repopt_tf.models.rpg import ring_usage
from repopt_tf.optimizers import RepOptSGD


def _ring_net(size=300, mode="signed_permutation", seed=0, batch_norm=True):
    """Fan-ins 27, 36 and 6: a ring std of 0.3 keeps every gain near 1."""
    std = 0.3
    inputs = keras.Input((8, 8, 3))
    ring = ParameterRing(size, seed=seed, init_std=std, name="ring")(inputs)
    x = RingConv2D(
        4,
        3,
        padding="same",
        offset=0,
        seed=seed,
        mode=mode,
        ring_std=std,
        name="c1",
    )([inputs, ring])
    if batch_norm:
        x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = RingConv2D(
        6,
        3,
        strides=2,
        offset=108,
        seed=seed,
        mode=mode,
        ring_std=std,
        name="c2",
    )([x, ring])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = RingDense(
        5, offset=324, seed=seed, mode=mode, ring_std=std, name="fc"
    )([x, ring])
    return keras.Model(inputs, outputs)


def _data(n=16):
    rng = np.random.default_rng(0)
    return (rng.random((n, 8, 8, 3)).astype(np.float32), rng.integers(0, 5, n))


def test_ring_gradient_is_the_sum_over_its_uses():
    import tensorflow as tf

    model = _ring_net(batch_norm=False)
    ring_variable = model.get_layer("ring").ring
    x, y = _data()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x))
    grad = tape.gradient(loss, ring_variable)
    grad = tf.convert_to_tensor(grad).numpy()

    # The same forward with the generated kernels as explicit tensors.
    c1, c2, fc = (model.get_layer(n) for n in ("c1", "c2", "fc"))
    ring = tf.convert_to_tensor(ring_variable)
    kernels = [layer.generate_kernel(ring) for layer in (c1, c2, fc)]
    with tf.GradientTape() as tape:
        tape.watch(kernels)
        h = tf.nn.relu(tf.nn.conv2d(x, kernels[0], 1, "SAME"))
        h = tf.nn.conv2d(h, kernels[1], 2, "VALID")
        logits = tf.reduce_mean(h, axis=(1, 2)) @ kernels[2] + fc.bias
        explicit_loss = loss_fn(y, logits)
    kernel_grads = tape.gradient(explicit_loss, kernels)
    np.testing.assert_allclose(float(explicit_loss), float(loss), rtol=1e-6)
    expected = np.zeros(ring_variable.shape, np.float32)
    for layer, kernel_grad in zip((c1, c2, fc), kernel_grads):
        np.add.at(
            expected,
            layer._indices,
            layer._scaled_signs * kernel_grad.numpy().reshape(-1),
        )
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)
    # T = 108 + 216 + 30 = 354 > N = 300: some entries serve two layers.
    assert (
        np.bincount(
            np.concatenate([layer._indices for layer in (c1, c2, fc)]),
            minlength=300,
        ).max()
        == 2
    )


@pytest.mark.parametrize("dof", [0.013, 0.1, 0.37, 1.0])
def test_every_ring_entry_is_used_evenly(dof):
    model = build_model("repopt_vgg_tiny", 10, (16, 16, 1), rpg_dof=dof)
    size = model.get_layer("ring").size
    uses = np.bincount(
        np.concatenate([layer._indices for layer in ring_layers(model)]),
        minlength=size,
    )
    total = uses.sum()
    assert total == sum(
        int(np.prod(layer.kernel_shape)) for layer in ring_layers(model)
    )
    assert uses.min() == total // size and uses.max() == -(-total // size)


@pytest.mark.backends
def test_indices_and_signs_are_deterministic_from_the_seed():
    a = ring_indices(500, 300, offset=40, seed=7, mode="signed_permutation")
    b = ring_indices(500, 300, offset=40, seed=7, mode="signed_permutation")
    c = ring_indices(500, 300, offset=40, seed=8, mode="signed_permutation")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert set(np.unique(a[1])) == {-1.0, 1.0}
    shared, signs = ring_indices(500, 300, offset=40, seed=7, mode="shared")
    np.testing.assert_array_equal(shared, np.arange(500) % 300)
    assert np.all(signs == 1)
    permuted, signs = ring_indices(
        100, 300, offset=40, seed=7, mode="permutation"
    )
    assert sorted(permuted) == list(range(40, 140)) and np.all(signs == 1)
    x = np.random.default_rng(0).random((2, 16, 16, 1)).astype(np.float32)
    one = build_model(
        "repopt_vgg_tiny", 10, (16, 16, 1), rpg_dof=0.1, rpg_seed=3
    )
    two = build_model(
        "repopt_vgg_tiny", 10, (16, 16, 1), rpg_dof=0.1, rpg_seed=3
    )
    two.set_weights(one.get_weights())
    np.testing.assert_array_equal(
        one.predict_on_batch(x), two.predict_on_batch(x)
    )


def test_initial_kernels_have_kaiming_std_and_gains_near_one():
    import tensorflow as tf

    model = build_model("repopt_vgg_s", 10, (32, 32, 3), rpg_dof=0.2)
    ring = tf.convert_to_tensor(model.get_layer("ring").ring)
    gains = []
    for layer in ring_layers(model):
        fan_in = int(np.prod(layer.kernel_shape[:-1]))
        std = float(np.std(layer.generate_kernel(ring)))
        assert std == pytest.approx(np.sqrt(2 / fan_in), rel=0.15)
        gains.append(np.abs(layer._scaled_signs).max())
    # Gains scale the ring's gradient: the bulk of the layers stay near 1.
    assert 0.5 < np.median(gains) < 2.0


@pytest.mark.backends
def test_materialize_and_save_load_keep_outputs(tmp_path):
    model = _ring_net()
    x, y = _data()
    model.compile(
        optimizer=RepOptSGD(0.05, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, epochs=2, verbose=0)
    expected = model.predict(x, verbose=0)

    plain = materialize(model)
    assert not ring_layers(plain)
    assert {type(layer).__name__ for layer in plain.layers} >= {
        "FastGradConv2D",
        "Dense",
    }
    np.testing.assert_allclose(
        plain.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6
    )
    model.save(tmp_path / "rpg.keras")
    loaded = keras.models.load_model(tmp_path / "rpg.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)
    assert [v.path for v in loaded.trainable_variables].count("ring/ring") == 1


def test_materialized_rpg_exports_full_integer():
    from repopt_tf.export import check_full_integer
    from repopt_tf.export import convert_int8

    x, _ = _data()
    assert check_full_integer(convert_int8(materialize(_ring_net()), x)) is None


def test_trains_with_repoptsgd_and_under_mirrored_strategy():
    import tensorflow as tf

    x, y = _data(32)
    initial = _ring_net(batch_norm=False).get_weights()

    def train(strategy):
        with strategy.scope():
            model = _ring_net(batch_norm=False)
            model.set_weights(initial)
            model.compile(
                optimizer=RepOptSGD(0.1, momentum=0.9, weight_decay=1e-4),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True
                ),
            )
        history = model.fit(
            x, y, batch_size=8, epochs=4, shuffle=False, verbose=0
        )
        return model.get_weights(), history.history["loss"]

    single, losses = train(tf.distribute.get_strategy())
    mirrored, _ = train(
        tf.distribute.MirroredStrategy(
            ["CPU:0", "CPU:1"],
            cross_device_ops=tf.distribute.ReductionToOneDevice(),
        )
    )
    assert losses[-1] < losses[0]
    for a, b in zip(single, mirrored):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bad_ring_settings_give_clear_errors():
    for dof in (0, -0.5):
        with pytest.raises(ValueError, match="or rpg_dof .* > 0, got"):
            build_model("repopt_vgg_tiny", 10, (16, 16, 1), rpg_dof=dof)
    with pytest.raises(ValueError, match="would leave entries unused"):
        build_model("repopt_vgg_tiny", 10, (16, 16, 1), rpg_dof=1.5)
    with pytest.raises(ValueError, match="rpg_scheme must be one of"):
        build_model(
            "repopt_vgg_tiny", 10, (16, 16, 1), rpg_dof=0.5, rpg_scheme="x"
        )
    with pytest.raises(ValueError, match="need kind='plain'"):
        build_model("repopt_vgg_tiny", 10, (16, 16, 1), kind="hs", rpg_dof=0.1)
    with pytest.raises(ValueError, match="size must be positive"):
        ParameterRing(0)
    with pytest.raises(ValueError, match="mode must be one of"):
        RingConv2D(4, 3, mode="tied")
    assert ring_usage(_ring_net(size=300)) == (300, 354)
    with pytest.raises(
        ValueError, match="400 entries but the model generates only 354"
    ):
        ring_usage(_ring_net(size=400))
    inputs = keras.Input((8, 8, 3))
    with pytest.raises(
        ValueError, match="second input must be the ring vector"
    ):
        RingConv2D(4, 3, name="lost")([inputs, inputs])


@pytest.mark.backends
def test_shared_mode_is_naive_prefix_sharing():
    model = _ring_net(size=50, mode="shared")
    for name in ("c1", "c2", "fc"):
        layer = model.get_layer(name)
        count = int(np.prod(layer.kernel_shape))
        np.testing.assert_array_equal(layer._indices, np.arange(count) % 50)
        assert np.all(layer._scaled_signs > 0)


def test_ring_conv_zero_padding_equals_a_padding_layer():
    import tensorflow as tf

    inputs = keras.Input((7, 7, 3))
    ring = ParameterRing(200, init_std=0.3, name="ring")(inputs)
    inside = RingConv2D(
        4, 3, strides=2, zero_padding=1, ring_std=0.3, name="inside"
    )([inputs, ring])
    padded = keras.layers.ZeroPadding2D(1)(inputs)
    outside = RingConv2D(4, 3, strides=2, ring_std=0.3, name="outside")(
        [padded, ring]
    )
    model = keras.Model(inputs, [inside, outside])
    x = tf.random.stateless_normal((2, 7, 7, 3), seed=(3, 4))
    with tf.GradientTape(persistent=True) as tape:
        a, b = model(x)
        losses = [tf.reduce_sum(t * tf.sin(t)) for t in (a, b)]
    assert a.shape == b.shape == (2, 4, 4, 4)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    ring_variable = model.get_layer("ring").ring
    grads = [tape.gradient(loss, ring_variable) for loss in losses]
    np.testing.assert_allclose(*grads, rtol=1e-4, atol=1e-5)
    # The RPG blocks of build_model pad inside the conv too.
    rpg = build_model("repopt_vgg_tiny", 10, (16, 16, 3), rpg_dof=0.5)
    assert all(
        layer.zero_padding == 1
        for layer in ring_layers(rpg)
        if isinstance(layer, RingConv2D)
    )
    assert not any(
        isinstance(layer, keras.layers.ZeroPadding2D) for layer in rpg.layers
    )


def _authors(size=None, dof=None, seed=0):
    return build_model(
        "repopt_vgg_tiny",
        10,
        (16, 16, 1),
        rpg_dof=dof,
        rpg_size=size,
        rpg_seed=seed,
        rpg_scheme="authors",
    )


def test_authors_scheme_draws_every_layer_from_the_whole_ring():
    model = _authors(dof=0.1)
    rings = ring_layers(model)
    size, total = ring_usage(model)
    assert "stage0_block0_conv" not in [r.name for r in rings]  # stem off
    assert isinstance(
        model.get_layer("stage0_block0_conv"), keras.layers.Conv2D
    )
    counts = np.bincount(
        np.concatenate([r._indices for r in rings]), minlength=size
    )
    assert set(counts) <= {total // size, total // size + 1}
    assert counts.sum() == total
    for layer in rings:  # not a window: spread over the whole ring
        spread = layer._indices.max() - layer._indices.min()
        assert spread > 0.9 * size, layer.name
    again = ring_layers(_authors(dof=0.1))
    for a, b in zip(rings, again):  # from the seed alone
        np.testing.assert_array_equal(a._indices, b._indices)
        np.testing.assert_array_equal(a._scaled_signs, b._scaled_signs)
    other = ring_layers(_authors(dof=0.1, seed=1))
    assert any((a._indices != b._indices).any() for a, b in zip(rings, other))


def test_authors_scheme_allows_a_ring_larger_than_its_kernels():
    total = ring_usage(_authors(dof=0.5))[1]
    model = _authors(size=total + 100)
    assert ring_usage(model) == (total + 100, total)
    used = np.concatenate([r._indices for r in ring_layers(model)])
    assert len(np.unique(used)) == total  # no entry is shared


def test_authors_init_and_fan_out_gains():
    model = _authors(size=200_000)  # many entries: a clean std estimate
    ring = next(x for x in model.layers if isinstance(x, ParameterRing))
    ring_values = np.asarray(ring.ring)
    assert ring.init_std == pytest.approx(np.sqrt(2 / 4608))
    assert np.std(ring_values) == pytest.approx(np.sqrt(2 / 4608), rel=0.02)
    for layer in ring_layers(model):
        k, _, cin, cout = layer.kernel_shape
        gain = np.abs(layer._scaled_signs)
        np.testing.assert_allclose(gain, np.sqrt(4608 / (cout * k * k)), 1e-6)
        kernel = np.asarray(layer.generate_kernel(ring.ring))
        assert kernel.std() == pytest.approx(
            np.sqrt(2 / (cout * k * k)), rel=0.2
        )


def test_the_ring_is_weight_decayed_like_the_kernels_it_makes():
    from repopt_tf.configs import base
    from repopt_tf.training.recipe import build_optimizer

    train = base.get_config().train
    for scheme in ("window", "authors"):
        model = build_model(
            "repopt_vgg_tiny", 10, (16, 16, 1), rpg_dof=0.2, rpg_scheme=scheme
        )
        optimizer = build_optimizer(train, 0.1, weight_decay=0.5)
        variables = model.trainable_variables
        before = {v.path: np.asarray(v).copy() for v in variables}
        optimizer.apply_gradients(
            [(keras.ops.zeros(v.shape), v) for v in variables]
        )
        changed = {
            v.path for v in variables if not np.allclose(v, before[v.path])
        }
        assert "ring/ring" in changed, scheme
        assert not any("gamma" in p or "bias" in p for p in changed)


def test_authors_scheme_saves_loads_and_materializes(tmp_path):
    model = _authors(dof=0.2)
    images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 1))
    model.save(tmp_path / "a.keras")
    loaded = keras.models.load_model(tmp_path / "a.keras")
    np.testing.assert_allclose(loaded(images), model(images), atol=1e-6)
    np.testing.assert_allclose(
        materialize(model)(images), model(images), atol=1e-5
    )
