"""CSLA block trained with plain SGD == one 3x3 conv trained with RepOptSGD.

The CSLA block is `s*conv3x3(x) + t*conv1x1(x) (+ gamma*x)` with constant
per-channel scales `s`, `t` and trainable W3, W1 and gamma (the identity
branch as a diagonal kernel, decayed like every kernel). The reference
optimizer is RepOptSGD without mults, i.e. PyTorch-semantics SGD. Both are
trained by Keras's own `train_on_batch`, so these tests run on every
backend (`tests/test_backend_matrix.py`).
"""

import keras
import numpy as np
import pytest
from keras import ops

from repopt_tf import RepOptAdamW
from repopt_tf import RepOptSGD
from repopt_tf import grad_mult

pytestmark = pytest.mark.backends

STEPS = 30
CIN = 4


def _problem(has_identity, seed=0):
    rng = np.random.default_rng(seed)
    cout, stride = (CIN, 1) if has_identity else (6, 2)
    out_size = 8 // stride
    return {
        "cout": cout,
        "stride": stride,
        "s": rng.uniform(0.2, 1.5, cout).astype(np.float32),
        "t": rng.uniform(0.2, 1.5, cout).astype(np.float32),
        "w3": rng.normal(0, 0.2, (3, 3, CIN, cout)).astype(np.float32),
        "w1": rng.normal(0, 0.2, (1, 1, CIN, cout)).astype(np.float32),
        "gamma": rng.uniform(0.5, 1.5, (1, 1, 1, cout)).astype(np.float32),
        "x": rng.normal(0, 1, (STEPS, 4, 8, 8, CIN)).astype(np.float32),
        "y": rng.normal(0, 1, (STEPS, 4, out_size, out_size, cout)).astype(
            np.float32
        ),
    }


def _equivalent_kernel(p, w3, w1, gamma, has_identity):
    kernel = p["s"] * w3 + p["t"] * np.pad(w1, [(1, 1), (1, 1), (0, 0), (0, 0)])
    if has_identity:
        diagonal = np.arange(p["cout"])
        kernel[1, 1, diagonal, diagonal] += gamma.reshape(-1)
    return kernel


def _conv(x, kernel, stride, padding=0):
    if padding:
        x = ops.pad(x, [[0, 0], [padding] * 2, [padding] * 2, [0, 0]])
    return ops.conv(x, kernel, strides=stride, padding="valid")


def _loss(target, output):
    return ops.mean(ops.square(ops.tanh(output) - target))


class _Block(keras.layers.Layer):
    """`function(x, *weights)` with trainable weights of the given values."""

    def __init__(self, values, function, **kwargs):
        super().__init__(**kwargs)
        self.values, self.function = values, function

    def build(self, input_shape):
        self.tensors = [
            self.add_weight(shape=value.shape, initializer="zeros", name=name)
            for name, value in self.values.items()
        ]
        for variable, value in zip(self.tensors, self.values.values()):
            variable.assign(value)

    def call(self, x):
        return self.function(x, *self.tensors)


def _train(values, forward, optimizer, p):
    """Trains the weights `values` of `forward` for STEPS batches; returns
    their final values."""
    block = _Block(values, forward, name="block")
    inputs = keras.Input((8, 8, CIN))
    model = keras.Model(inputs, block(inputs))
    model.compile(optimizer=optimizer, loss=_loss)
    for step in range(STEPS):
        model.train_on_batch(p["x"][step], p["y"][step])
    return [variable.numpy() for variable in block.tensors]


def train_csla(p, has_identity, make_optimizer):
    values = {"w3": p["w3"], "w1": p["w1"]}
    if has_identity:
        values["gamma"] = p["gamma"]

    def forward(x, w3, w1, gamma=None):
        y = ops.multiply(p["s"], _conv(x, w3, p["stride"], padding=1))
        y = y + ops.multiply(p["t"], _conv(x, w1, p["stride"]))
        if gamma is not None:
            y = y + gamma * x
        return y

    w3, w1, *gamma = _train(values, forward, make_optimizer(None), p)
    return _equivalent_kernel(
        p, w3, w1, gamma[0] if gamma else None, has_identity
    )


def train_repopt(p, has_identity, make_optimizer, power=2):
    init = _equivalent_kernel(p, p["w3"], p["w1"], p["gamma"], has_identity)
    mult = grad_mult(p["s"], p["t"], has_identity, CIN, power=power)
    (kernel,) = _train(
        {"kernel": init},
        lambda x, kernel: _conv(x, kernel, p["stride"], padding=1),
        make_optimizer({"block/kernel": mult}),
        p,
    )
    return init, kernel


def _relative(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("has_identity", [True, False])
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_csla_equals_repopt_sgd(has_identity, nesterov, schedule):
    p = _problem(has_identity)

    def make_optimizer(mults):
        lr = 0.5
        if schedule == "cosine":
            lr = keras.optimizers.schedules.CosineDecay(
                lr, STEPS, warmup_target=None
            )
        return RepOptSGD(
            lr,
            momentum=0.9,
            nesterov=nesterov,
            weight_decay=0.05,
            grad_mults=mults,
        )

    csla = train_csla(p, has_identity, make_optimizer)
    init, repopt = train_repopt(p, has_identity, make_optimizer)
    assert _relative(repopt, init) > 0.05, "training did not move the kernel"
    assert _relative(repopt, csla) < 1e-5


def test_csla_equals_repopt_sgd_with_global_clipnorm():
    p = _problem(True)

    def make_optimizer(mults):
        return RepOptSGD(
            0.5,
            momentum=0.9,
            nesterov=True,
            weight_decay=0.05,
            global_clipnorm=0.05,
            grad_mults=mults,
        )

    csla = train_csla(p, True, make_optimizer)
    init, repopt = train_repopt(p, True, make_optimizer)
    unclipped = train_repopt(
        p,
        True,
        lambda m: RepOptSGD(
            0.5, momentum=0.9, nesterov=True, weight_decay=0.05, grad_mults=m
        ),
    )[1]
    assert _relative(repopt, unclipped) > 1e-2, "the clip was not active"
    assert _relative(repopt, csla) < 1e-5


@pytest.mark.parametrize("negative_scales", [False, True])
def test_csla_vs_repopt_adamw_gap_is_bounded(negative_scales):
    """RepOptAdamW matches CSLA-AdamW up to epsilon when a position's branch
    scales share a sign (measured gap ~2e-5 after 30 steps); with mixed signs
    the power-1 rule of the official code departs from it by about as much as
    the kernel moves (measured ~1.4x), hence the advice to use |scales|."""
    p = _problem(True)
    if negative_scales:
        p["s"][::2] *= -1

    def make_optimizer(mults):
        return RepOptAdamW(0.01, weight_decay=0.05, grad_mults=mults)

    csla = train_csla(p, True, make_optimizer)
    init, repopt = train_repopt(p, True, make_optimizer, power=1)
    moved = _relative(csla, init)
    gap = _relative(repopt, csla)
    print(f"AdamW negative={negative_scales}: moved {moved:.3e}, gap {gap:.3e}")
    assert moved > 0.05
    if negative_scales:
        assert gap > 0.3 * moved
    else:
        assert gap < 1e-4
