import keras
import numpy as np
import pytest

from repopt_tf import grad_mult
from repopt_tf import grad_mults_for_model
from repopt_tf.optimizers.grad_mult import decode_grad_mult
from repopt_tf.optimizers.grad_mult import encode_grad_mult


def _reference_mult(s, t, has_identity, cin, power):
    """Eq. 3 of the paper written out entry by entry."""
    cout = len(s)
    mult = np.zeros((3, 3, cin, cout), np.float32)
    for p in range(3):
        for q in range(3):
            for i in range(cin):
                for c in range(cout):
                    value = s[c] ** power
                    if (p, q) == (1, 1):
                        value += t[c] ** power
                        if has_identity and i == c:
                            value += 1.0
                    mult[p, q, i, c] = value
    return mult


@pytest.mark.parametrize("power", [1, 2])
@pytest.mark.parametrize("has_identity,cin", [(True, 5), (False, 3)])
def test_grad_mult_matches_eq3(power, has_identity, cin):
    rng = np.random.default_rng(0)
    s, t = rng.uniform(0.1, 2, 5), rng.uniform(0.1, 2, 5)
    got = grad_mult(s, t, has_identity, cin, power=power)
    np.testing.assert_allclose(
        got, _reference_mult(s, t, has_identity, cin, power), rtol=1e-6
    )
    assert got.shape == (3, 3, cin, 5) and got.dtype == np.float32


def test_grad_mult_bad_input():
    with pytest.raises(ValueError, match="same length"):
        grad_mult(np.ones(3), np.ones(4), False, 3)
    with pytest.raises(ValueError, match="identity branch needs"):
        grad_mult(np.ones(4), np.ones(4), True, 3)
    with pytest.raises(ValueError, match="power"):
        grad_mult(np.ones(4), np.ones(4), False, 3, power=3)


@pytest.mark.parametrize(
    "mult",
    [
        grad_mult(np.linspace(0.1, 1, 6), np.linspace(1, 2, 6), True, 6),
        grad_mult(np.linspace(0.1, 1, 6), np.linspace(1, 2, 6), False, 4),
        grad_mult(np.linspace(0.1, 1, 2), np.linspace(1, 2, 2), False, 1),
        np.random.default_rng(1).random((3, 3, 4, 4)).astype(np.float32),
        np.random.default_rng(2).random((7, 5)).astype(np.float32),
    ],
)
def test_encode_decode_is_lossless(mult):
    encoded = encode_grad_mult(mult)
    np.testing.assert_array_equal(decode_grad_mult(encoded), mult)


def test_block_structured_mults_encode_compactly():
    mult = grad_mult(np.ones(64), np.ones(64), True, 64)
    assert "surround" in encode_grad_mult(mult)
    mult[0, 2, 3, 4] += 1.0
    assert "float32_base64" in encode_grad_mult(mult)


def _three_conv_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.ZeroPadding2D(1)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, name="b0_conv")(x)
    x = keras.layers.ZeroPadding2D(1)(x)
    x = keras.layers.Conv2D(4, 3, name="b1_conv")(x)
    x = keras.layers.Conv2D(4, 1, name="pointwise")(x)
    x = keras.layers.ZeroPadding2D(1)(x)
    x = keras.layers.Conv2D(4, 3, name="head_conv")(x)
    return keras.Model(inputs, x)


def _blocks(identities):
    return [
        {
            "conv": np.full(4, 0.5),
            "1x1": np.full(4, 0.25),
            "identity": np.ones(4) if has_id else None,
        }
        for has_id in identities
    ]


def test_grad_mults_for_model_pairs_layers_in_order():
    model = _three_conv_model()
    mults = grad_mults_for_model(
        model, _blocks([False, True]), layer_pattern=r"b\d+_conv"
    )
    assert list(mults) == ["b0_conv/kernel", "b1_conv/kernel"]
    np.testing.assert_array_equal(
        mults["b1_conv/kernel"],
        grad_mult(np.full(4, 0.5), np.full(4, 0.25), True, 4),
    )
    assert mults["b0_conv/kernel"].shape == (3, 3, 3, 4)


def test_grad_mults_for_model_errors_name_the_block():
    model = _three_conv_model()
    with pytest.raises(
        ValueError, match="describe 2 blocks but the model has 3"
    ):
        grad_mults_for_model(model, _blocks([False, True]))
    with pytest.raises(ValueError, match="Block 0 .*identity branch"):
        grad_mults_for_model(model, _blocks([True, True]), r"b\d+_conv")
    with pytest.raises(ValueError, match="Block 1 .*have none"):
        grad_mults_for_model(model, _blocks([False, False]), r"b\d+_conv")
    blocks = _blocks([False, True])
    blocks[1]["conv"] = np.ones(5)
    with pytest.raises(ValueError, match="Block 1 .*'conv' has 5 channels"):
        grad_mults_for_model(model, blocks, r"b\d+_conv")
