"""Recurrent Parameter Generators (Wang et al., WACV 2023).

All generated kernels come from one shared trainable ring `W` of `N`
entries. Two schemes (`SCHEMES`) say which entries a layer takes and how
the kernels are scaled:

- `"window"`, the paper's text: layer `i` with `n_i` weights takes the
  contiguous ring window that starts at its `offset` (the sum of the earlier
  layers' sizes, wrapping mod N), shuffled within the window; each entry is
  used floor(T/N) or ceil(T/N) times over T generated weights; gains give
  every kernel He (fan-in) std from a ring of the weight-averaged He std;
  every block's 3x3 conv, the stem's too, is on the ring.
- `"authors"`, the authors' code (samaonline/Recurrent-Parameter-Generators,
  `SuperParams`): one global multiset of T indices (floor(T/N) copies of
  every entry, plus a random subset of N for the remainder), shuffled, and
  consecutive slices for the layers, so a layer draws from the whole ring;
  the ring starts with std sqrt(2 / 4608) and layer `i`'s kernel is scaled
  by sqrt(4608 / fan_out_i) (He fan-out std); N > T is allowed (no
  sharing); the stem conv and the classifier stay ordinary.

Either way::

    K_i = reshape(W[P_i(window)] * S_i * g_i, kernel_shape)

with `P_i` the layer's fixed random indices, `S_i` fixed random +-1 signs
(all drawn from the seed, so a checkpoint needs no side files) and
`g_i = sqrt(2 / fan_i) / ring_std`: the ring starts as N(0, ring_std^2), so
every kernel starts with He std. Choose `ring_std` near
the typical layer's He std so that gains are about 1: the gain also scales
the ring's gradient, and gains far from 1 change the effective learning rate
by g_i^2 (a unit-variance ring would make 3x3 kernels learn ~500x slower).
`mode` selects the paper's ablation: "shared" (every layer takes the ring
from its start, `W[q mod N]`, no permutation, no signs: naive sharing),
"permutation", "signed_permutation".
The ring gradient is the sum over every use, `dL/dW = sum_i R_i^T dL/dK_i`.

In a functional model the ring is a layer whose output (the ring vector)
feeds every `RingConv2D` / `RingDense` as a second input, so `.keras`
saving and `model.trainable_variables` see it once. `materialize(model)`
returns the same network with ordinary `FastGradConv2D` / `Dense` kernels.
"""

import keras
import numpy as np
from keras import ops

from repopt_tf.models.fast_conv import FastGradConv2D
from repopt_tf.models.fast_conv import fast_grad_conv2d
from repopt_tf.models.identity import with_identity

MODES = ("shared", "permutation", "signed_permutation")
SCHEMES = ("window", "authors")
ASSIGNMENTS = ("window", "global")
FANS = ("fan_in", "fan_out")
DEFAULT_RING_STD = 0.05  # He std of a 3x3 conv with ~90 input channels
# The authors' ring init: He std with fan_out = 512 * 3 * 3 for any network.
AUTHORS_RING_FAN = 4608


@keras.saving.register_keras_serializable(package="repopt_tf")
class ParameterRing(keras.layers.Layer):
    """The shared ring: a trainable vector of `size` entries, N(0, init_std^2).

    Called on any tensor (ignored), it returns the ring vector `(size,)`.
    """

    def __init__(self, size, seed=0, init_std=DEFAULT_RING_STD, **kwargs):
        super().__init__(**kwargs)
        if int(size) <= 0:
            raise ValueError(
                f"ParameterRing size must be positive, got {size}."
            )
        self.size = int(size)
        self.seed = int(seed)
        self.init_std = float(init_std)

    def build(self, input_shape):
        self.ring = self.add_weight(
            name="ring",
            shape=(self.size,),
            initializer=keras.initializers.RandomNormal(
                0.0, self.init_std, seed=self.seed
            ),
        )
        # Decayed like the kernels it generates (the RepOpt optimizers'
        # `decay_vectors=False` decays only kernels and these).
        self.ring.decays_like_kernels = True

    def call(self, inputs):
        del inputs
        return ops.convert_to_tensor(self.ring)

    def compute_output_shape(self, input_shape):
        return (self.size,)

    def get_config(self):
        return {
            **super().get_config(),
            "size": self.size,
            "seed": self.seed,
            "init_std": self.init_std,
        }


def ring_indices(count, ring_size, offset, seed, mode):
    """`(indices int32 (count,), signs float32 (count,))` of one layer of
    the window scheme."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    if mode == "shared":
        return (np.arange(count) % ring_size).astype(np.int32), np.ones(
            count, np.float32
        )
    window = (offset + np.arange(count)) % ring_size
    rng = np.random.default_rng([seed, offset])
    indices = rng.permutation(window).astype(np.int32)
    if mode == "permutation":
        return indices, np.ones(count, np.float32)
    signs = rng.integers(0, 2, count).astype(np.float32) * 2 - 1
    return indices, signs


def global_indices(total, ring_size, seed):
    """The authors' assignment: all `total` indices of a model, as one
    shuffled multiset of floor(total / N) copies of every ring entry plus
    a random subset of N for the remainder (entries used at most once
    when N >= total); layers take consecutive slices.

    Examples:
        >>> sorted(np.bincount(global_indices(10, 4, seed=0)).tolist())
        [2, 2, 3, 3]
    """
    rng = np.random.default_rng([seed, ring_size, total])
    copies = np.tile(np.arange(ring_size), total // ring_size)
    rest = rng.choice(ring_size, total % ring_size, replace=False)
    return rng.permutation(np.concatenate([copies, rest])).astype(np.int32)


def layer_indices(count, ring_size, offset, seed, mode, assignment, total):
    """`(indices, signs)` of the layer whose weights start at `offset`,
    under `assignment` ("window" or "global", module docstring)."""
    if assignment not in ASSIGNMENTS:
        raise ValueError(
            f"assignment must be one of {ASSIGNMENTS}, got {assignment!r}."
        )
    if assignment == "window" or mode == "shared":
        return ring_indices(count, ring_size, offset, seed, mode)
    indices = global_indices(total, ring_size, seed)[offset : offset + count]
    if len(indices) != count:
        raise ValueError(
            f"a layer of {count} weights at offset {offset} does not fit the "
            f"{total} weights the ring was planned for."
        )
    if mode == "permutation":
        return indices, np.ones(count, np.float32)
    rng = np.random.default_rng([seed, offset])
    return indices, rng.integers(0, 2, count).astype(np.float32) * 2 - 1


class _RingKernel:
    """Shared logic of ring layers: indices, signs, gain and generation."""

    def _init_ring(self, offset, seed, mode, ring_std, assignment, total, fan):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
        if fan not in FANS:
            raise ValueError(f"fan must be one of {FANS}, got {fan!r}.")
        self.offset, self.seed, self.mode = int(offset), int(seed), mode
        self.ring_std = float(ring_std)
        self.assignment, self.total, self.fan = assignment, int(total), fan

    def _build_ring(self, kernel_shape, ring_shape):
        if len(ring_shape) != 1 or ring_shape[0] is None:
            raise ValueError(
                f"{self.name}: the second input must be the ring vector of a "
                f"ParameterRing, shape (N,); got shape {tuple(ring_shape)}."
            )
        ring_size = ring_shape[-1]
        count = int(np.prod(kernel_shape))
        indices, signs = layer_indices(
            count,
            ring_size,
            self.offset,
            self.seed,
            self.mode,
            self.assignment,
            self.total,
        )
        if self.fan == "fan_in":
            fan = int(np.prod(kernel_shape[:-1]))
        else:  # receptive field x output channels, as torch's fan_out
            fan = int(np.prod(kernel_shape[:-2])) * int(kernel_shape[-1])
        self.kernel_shape = tuple(kernel_shape)
        self._indices = indices
        gain = np.sqrt(2.0 / fan) / self.ring_std
        self._scaled_signs = (signs * gain).astype(np.float32)

    def generate_kernel(self, ring):
        # Constants as tensors: on PyTorch, numpy operands would ask the
        # ring (which needs a gradient) for a numpy copy.
        values = ops.take(ring, ops.convert_to_tensor(self._indices))
        values = values * ops.convert_to_tensor(self._scaled_signs)
        return ops.reshape(values, self.kernel_shape)

    def plain_layer(self, ring):
        """The ordinary Conv2D / Dense holding the generated kernel and bias."""
        layer = self._empty_plain_layer()
        weights = [ops.convert_to_numpy(self.generate_kernel(ring))]
        if self.use_bias:
            weights.append(ops.convert_to_numpy(self.bias))
        layer.set_weights(weights)
        return layer

    def _ring_config(self):
        return {
            "offset": self.offset,
            "seed": self.seed,
            "mode": self.mode,
            "ring_std": self.ring_std,
            "assignment": self.assignment,
            "total": self.total,
            "fan": self.fan,
        }


@keras.saving.register_keras_serializable(package="repopt_tf")
class RingConv2D(_RingKernel, keras.layers.Layer):
    """Conv2D whose kernel is generated from a ring; call on `[x, ring]`.

    Convolves like `FastGradConv2D` (same arguments, incl. `zero_padding`)
    and materializes into one.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        use_bias=False,
        offset=0,
        seed=0,
        mode="signed_permutation",
        ring_std=DEFAULT_RING_STD,
        zero_padding=0,
        assignment="window",
        total=0,
        fan="fan_in",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = tuple(np.broadcast_to(kernel_size, 2).tolist())
        self.strides = tuple(np.broadcast_to(strides, 2).tolist())
        self.padding = padding
        self.use_bias = use_bias
        self.zero_padding = int(zero_padding)
        self._init_ring(offset, seed, mode, ring_std, assignment, total, fan)

    def build(self, input_shape):
        x_shape, ring_shape = input_shape
        self._build_ring(
            (*self.kernel_size, x_shape[-1], self.filters), ring_shape
        )
        self.bias = (
            self.add_weight(
                name="bias", shape=(self.filters,), initializer="zeros"
            )
            if self.use_bias
            else None
        )

    def call(self, inputs):
        x, ring = inputs
        y = fast_grad_conv2d(
            x,
            self.generate_kernel(ring),
            self.strides,
            self.padding,
            self.zero_padding,
        )
        return y if self.bias is None else y + self.bias

    def _plain_conv(self):
        return FastGradConv2D(
            self.filters,
            self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            zero_padding=self.zero_padding,
            use_bias=self.use_bias,
            name=self.name,
        )

    def compute_output_shape(self, input_shape):
        return self._plain_conv().compute_output_shape(input_shape[0])

    def _empty_plain_layer(self):
        conv = self._plain_conv()
        conv.build((None, None, None, self.kernel_shape[2]))
        return conv

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "zero_padding": self.zero_padding,
            "use_bias": self.use_bias,
            **self._ring_config(),
        }


@keras.saving.register_keras_serializable(package="repopt_tf")
class RingDense(_RingKernel, keras.layers.Layer):
    """Dense whose kernel is generated from a ring; call on `[x, ring]`."""

    def __init__(
        self,
        units,
        use_bias=True,
        offset=0,
        seed=0,
        mode="signed_permutation",
        ring_std=DEFAULT_RING_STD,
        assignment="window",
        total=0,
        fan="fan_in",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = int(units)
        self.use_bias = use_bias
        self._init_ring(offset, seed, mode, ring_std, assignment, total, fan)

    def build(self, input_shape):
        x_shape, ring_shape = input_shape
        self._build_ring((x_shape[-1], self.units), ring_shape)
        self.bias = (
            self.add_weight(
                name="bias", shape=(self.units,), initializer="zeros"
            )
            if self.use_bias
            else None
        )

    def call(self, inputs):
        x, ring = inputs
        y = ops.matmul(x, self.generate_kernel(ring))
        return y if self.bias is None else y + self.bias

    def compute_output_shape(self, input_shape):
        return (*input_shape[0][:-1], self.units)

    def _empty_plain_layer(self):
        dense = keras.layers.Dense(
            self.units, use_bias=self.use_bias, name=self.name
        )
        dense.build((None, self.kernel_shape[0]))
        return dense

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "use_bias": self.use_bias,
            **self._ring_config(),
        }


class RingPlan:
    """Hands out the entries of one ring to the convs of a model.

    `RingPlan.for_kernels(inputs, shapes, dof, mode, seed, scheme, size)`
    adds the ring layer for kernels of the given shapes (module docstring
    for the schemes): `size` entries, or `round(dof * T)` for `T` generated
    weights. `plan.conv(filters, kernel_size, strides, name, **conv_args)`
    is a conv factory: it returns a layer that applies the next
    `RingConv2D`.
    """

    def __init__(self, ring, seed, mode, ring_std, scheme="window", total=0):
        self.ring, self.seed, self.mode = ring, seed, mode
        self.ring_std, self.scheme, self.total = ring_std, scheme, total
        self.offset = 0

    @classmethod
    def for_kernels(
        cls, inputs, shapes, dof, mode, seed, scheme="window", size=None
    ):
        if scheme not in SCHEMES:
            raise ValueError(
                f"rpg_scheme must be one of {SCHEMES}, got {scheme!r}."
            )
        total = sum(int(np.prod(shape)) for shape in shapes)
        size = ring_size_for(total, dof, size, scheme)
        if scheme == "authors":
            ring_std = float(np.sqrt(2.0 / AUTHORS_RING_FAN))
        else:
            he_variance = sum(
                int(np.prod(shape)) * 2 / int(np.prod(shape[:-1]))
                for shape in shapes
            )
            ring_std = float(np.sqrt(he_variance / total))
        ring = ParameterRing(size, seed=seed, init_std=ring_std, name="ring")(
            inputs
        )
        return cls(ring, seed, mode, ring_std, scheme, total)

    def conv(self, filters, kernel_size, strides=1, name=None, **conv_args):
        """A callable `x -> RingConv2D(...)([x, ring])` on the next slice."""

        def apply(x):
            authors = self.scheme == "authors"
            layer = RingConv2D(
                filters,
                kernel_size,
                strides=strides,
                offset=self.offset,
                seed=self.seed,
                mode=self.mode,
                ring_std=self.ring_std,
                assignment="global" if authors else "window",
                total=self.total,
                fan="fan_out" if authors else "fan_in",
                name=name,
                **conv_args,
            )
            self.offset += kernel_size * kernel_size * x.shape[-1] * filters
            return layer([x, self.ring])

        return apply


def ring_size_for(total, dof=None, size=None, scheme="window"):
    """The ring's entries: `size`, else `round(dof * total)`; more than
    `total` only in the authors' scheme (no sharing).

    Raises:
        ValueError: neither given, or out of range, with the reason.
    """
    if size:
        size = int(size)
    elif dof is not None and dof > 0:
        size = max(1, round(dof * total))
    else:
        raise ValueError(
            f"An RPG ring needs rpg_size (entries) or rpg_dof (a fraction of "
            f"the {total} generated weights) > 0, got {dof!r}."
        )
    if size > total and scheme != "authors":
        raise ValueError(
            f"A window-scheme ring of {size} entries for {total} generated "
            "weights would leave entries unused (rpg_dof <= 1); the authors' "
            "scheme allows it (rpg_scheme='authors': no sharing)."
        )
    return size


def ring_layers(model):
    return [layer for layer in model.layers if isinstance(layer, _RingKernel)]


def _the_ring(model, caller):
    """The model's one `ParameterRing`; raises unless there is exactly one."""
    rings = [
        layer for layer in model.layers if isinstance(layer, ParameterRing)
    ]
    if len(rings) != 1:
        raise ValueError(
            f"{caller} expects one ParameterRing, found {len(rings)}."
        )
    return rings[0]


def ring_usage(model):
    """`(N, T)`: ring size and generated weights; raises if N > T under the
    window scheme.

    A window-scheme ring larger than the weights it generates leaves entries
    that no layer uses (they would never train); under the authors' global
    assignment N > T means no sharing. Build custom RPG models, then check
    them with this.
    """
    size = _the_ring(model, "ring_usage").size
    layers = ring_layers(model)
    total = sum(int(np.prod(layer.kernel_shape)) for layer in layers)
    if size > total and any(ring.assignment == "window" for ring in layers):
        raise ValueError(
            f"The ring has {size} entries but the model generates only {total} "
            f"weights: {size - total} entries would never be used."
        )
    return size, total


def materialize(model):
    """The same network with plain FastGradConv2D / Dense kernels (no ring).

    Ring layers become ordinary layers holding their generated kernels; every
    other layer is cloned with its weights. Outputs are numerically identical.
    """
    ring = ops.convert_to_tensor(_the_ring(model, "materialize").ring)

    def clone(layer):
        if isinstance(layer, _RingKernel):
            return layer.plain_layer(ring)
        return layer.__class__.from_config(layer.get_config())

    def call(layer, *args, **kwargs):
        if isinstance(layer, keras.layers.InputLayer):
            return layer(*args, **kwargs)
        inputs = args[0]
        if isinstance(
            layer, (keras.layers.Conv2D, keras.layers.Dense)
        ) and isinstance(inputs, (list, tuple)):
            inputs = inputs[0]  # drop the ring input
        return layer(inputs, *args[1:], **kwargs)

    plain = keras.models.clone_model(
        model, clone_function=clone, call_function=call
    )
    for layer in model.layers:
        if layer.weights and not isinstance(
            layer, (_RingKernel, ParameterRing)
        ):
            plain.get_layer(layer.name).set_weights(layer.get_weights())
    identity = getattr(model, "identity", None)
    return with_identity(plain, identity) if identity else plain
