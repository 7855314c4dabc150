"""RepOptSGD and RepOptAdamW as drop-ins for Keras's SGD and AdamW: with no
Grad Mults they do what Keras's optimizers do (a step, weight decay,
clipping, EMA, gradient accumulation, loss scaling, serialization, naming,
raw backend variables), except where their docstrings say they differ on
purpose (RepOptSGD's coupled L2 on kernels; RepOptAdamW's epsilon on
sqrt(v_hat)). The checks mirror the kinds Keras's own optimizer tests make;
the code is this project's."""

import keras
import numpy as np
import pytest
from keras import ops

from repopt_tf import RepOptAdamW
from repopt_tf import RepOptSGD

RNG = np.random.default_rng(11)
W0 = {"kernel": RNG.normal(size=(3, 4)), "bias": RNG.normal(size=(4,))}
GRADS = [
    {name: RNG.normal(size=value.shape) for name, value in W0.items()}
    for _ in range(6)
]


def _train(optimizer, steps=GRADS, scale=1.0):
    """Applies `steps` to fresh variables; returns their final values."""
    variables = {
        name: keras.Variable(value.astype(np.float32), name=name)
        for name, value in W0.items()
    }
    for grads in steps:
        optimizer.apply_gradients(
            [
                (ops.convert_to_tensor(grads[name] * scale, "float32"), v)
                for name, v in variables.items()
            ]
        )
    if getattr(optimizer, "use_ema", False):
        optimizer.finalize_variable_values(list(variables.values()))
    return {name: v.numpy() for name, v in variables.items()}


def _close(ours, theirs, atol=1e-6):
    for name in ours:
        np.testing.assert_allclose(ours[name], theirs[name], atol=atol)


PAIRS = [
    (
        lambda **kw: RepOptSGD(0.1, momentum=0.9, **kw),
        lambda **kw: keras.optimizers.SGD(0.1, momentum=0.9, **kw),
        1e-5,
    ),
    (
        lambda **kw: RepOptAdamW(0.01, weight_decay=0.0, **kw),
        lambda **kw: keras.optimizers.AdamW(0.01, weight_decay=0.0, **kw),
        1e-5,  # the epsilon form: an O(epsilon) difference
    ),
]
IDS = ["sgd", "adamw"]


@pytest.mark.backends
@pytest.mark.parametrize("ours,keras_one,atol", PAIRS, ids=IDS)
@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"clipnorm": 0.5},
        {"clipvalue": 0.2},
        {"global_clipnorm": 0.7},
        {"use_ema": True, "ema_momentum": 0.9},
        {"gradient_accumulation_steps": 2},
    ],
    ids=[
        "step",
        "clipnorm",
        "clipvalue",
        "global_clipnorm",
        "ema",
        "accumulate",
    ],
)
def test_without_mults_it_trains_as_keras_does(ours, keras_one, atol, settings):
    _close(_train(ours(**settings)), _train(keras_one(**settings)), atol)


@pytest.mark.backends
def test_adamw_decays_every_variable_like_keras_by_default():
    zero = [{name: np.zeros_like(value) for name, value in W0.items()}]
    ours = _train(RepOptAdamW(0.1, weight_decay=0.5), zero)
    theirs = _train(keras.optimizers.AdamW(0.1, weight_decay=0.5), zero)
    _close(ours, theirs, 1e-7)
    assert not np.allclose(ours["bias"], W0["bias"])  # biases too
    kernels_only = _train(
        RepOptAdamW(0.1, weight_decay=0.5, decay_vectors=False), zero
    )
    np.testing.assert_allclose(kernels_only["bias"], W0["bias"], rtol=1e-7)
    np.testing.assert_allclose(kernels_only["kernel"], theirs["kernel"])


@pytest.mark.backends
def test_sgd_couples_l2_into_the_gradient_on_kernels_by_default():
    zero = [{name: np.zeros_like(value) for name, value in W0.items()}]
    default = _train(RepOptSGD(1.0, weight_decay=0.5), zero)
    np.testing.assert_allclose(default["kernel"], 0.5 * W0["kernel"], 1e-6)
    np.testing.assert_allclose(default["bias"], W0["bias"], 1e-7)
    everything = _train(
        RepOptSGD(1.0, weight_decay=0.5, decay_vectors=True), zero
    )
    np.testing.assert_allclose(everything["bias"], 0.5 * W0["bias"], 1e-6)


@pytest.mark.backends
@pytest.mark.skipif(
    keras.backend.backend() == "jax",
    reason="Keras's own LossScaleOptimizer cannot apply eagerly on JAX "
    "(UnexpectedTracerError with keras.optimizers.SGD too)",
)
@pytest.mark.parametrize("ours,keras_one,atol", PAIRS, ids=IDS)
def test_under_a_loss_scale_optimizer(ours, keras_one, atol):
    scaled = keras.optimizers.LossScaleOptimizer(ours(), initial_scale=128.0)
    reference = keras.optimizers.LossScaleOptimizer(
        keras_one(), initial_scale=128.0
    )
    # Gradients of a scaled loss: the wrapper divides by the scale.
    _close(_train(scaled, scale=128.0), _train(reference, scale=128.0), atol)
    infinite = [{name: np.full(v.shape, np.inf) for name, v in W0.items()}]
    skipped = _train(
        keras.optimizers.LossScaleOptimizer(ours(), initial_scale=128.0),
        infinite,
    )
    _close(skipped, W0, 0)  # a non-finite step is skipped, as in Keras


@pytest.mark.backends
@pytest.mark.parametrize("cls", [RepOptSGD, RepOptAdamW])
def test_serialization_and_keras_style_names(cls):
    keras.backend.clear_session()
    first, second = cls(0.05), cls(0.05)
    prefix = "repopt_sgd" if cls is RepOptSGD else "repopt_adamw"
    assert (first.name, second.name) == (prefix, f"{prefix}_1")
    optimizer = cls(0.05, clipnorm=1.0, decay_vectors=True, name="mine")
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(again) is cls and again.name == "mine"
    assert again.get_config() == optimizer.get_config()
    assert again.decay_vectors and again.clipnorm == 1.0


@pytest.mark.parametrize("ours,keras_one,atol", PAIRS, ids=IDS)
def test_raw_tensorflow_variables_beside_keras_ones(ours, keras_one, atol):
    import tensorflow as tf

    def run(optimizer):
        raw = tf.Variable(W0["kernel"].astype(np.float32), name="raw")
        wrapped = keras.Variable(W0["bias"].astype(np.float32), name="bias")
        for grads in GRADS:
            optimizer.apply_gradients(
                [
                    (tf.constant(grads["kernel"], tf.float32), raw),
                    (tf.constant(grads["bias"], tf.float32), wrapped),
                ]
            )
        return {"kernel": raw.numpy(), "bias": wrapped.numpy()}

    _close(run(ours()), run(keras_one()), atol)


@pytest.mark.backends
def test_clipping_is_refused_only_where_a_mult_is_present():
    mults = {"kernel": np.full((3, 4), 2.0, np.float32)}
    for cls in (RepOptSGD, RepOptAdamW):
        with pytest.raises(ValueError, match="where a variable has a Grad"):
            cls(0.1, clipvalue=0.1, grad_mults=mults)
    RepOptSGD(0.1, global_clipnorm=1.0, grad_mults=mults)  # the CSLA norm
