"""CSLA re-parameterisation maths, numpy only (Ding et al., ICLR 2023, §3).

A CSLA ("constant-scale linear addition") block adds branches that are all
linear in one conv's input::

    y = s * conv_k(x, W) + t * conv_1(x, W1) + g * x

(`s`, `t`, `g` per output channel; the identity exists only for a map
C -> C at stride 1). It equals one `k x k` conv whose kernel is the sum of
the branch kernels, each padded to `k x k` at the centre tap
(`merge_branches`); the identity is `identity_kernel`, 1 at the centre tap
of output `c`'s own input channel (`c % Cin_per_group` for grouped and
depthwise convs). With the Keras layout `(k, k, Cin_per_group, Cout)`:

- Rule of Initialization (Eq. 4): `W'(0) = merge(s*W3, t*W1, g)`.
- Grad Mult (Eq. 3): `M = merge(s**p, t**p, 1)` with constant branch
  kernels of ones, `p = 2` for SGD, `p = 1` for AdamW.
- RepVGG fusion: each branch's BatchNorm folds into its kernel and bias
  (`fold_batch_norm`), then the kernels and biases add up.

A Grad Mult (or any kernel of this structure) is stored compactly as a
`CompactMult`: one value per output channel at every off-centre tap
(`surround`), one at the centre tap (`centre`) and one at the identity tap
(`identity`).
"""

import dataclasses

import numpy as np


def identity_fits(in_channels, out_channels, strides):
    """Whether a conv can have a CSLA identity branch: C -> C at stride 1
    (the branch reads each window's centre pixel, whatever the padding)."""
    return in_channels == out_channels and tuple(
        np.broadcast_to(strides, 2).tolist()
    ) == (1, 1)


def identity_kernel(kernel_size, in_channels, out_channels):
    """`(k, k, in_channels, out_channels)` kernel of `x -> x`: 1 at the centre
    tap `[k//2, k//2, c % in_channels, c]` (`in_channels` is per group)."""
    kernel = np.zeros(
        (kernel_size, kernel_size, in_channels, out_channels), np.float32
    )
    centre = kernel_size // 2
    outputs = np.arange(out_channels)
    kernel[centre, centre, outputs % in_channels, outputs] = 1.0
    return kernel


def pad_to(kernel, size):
    """A `(k, k, ...)` kernel zero-padded to `(size, size, ...)` at the centre."""
    margin = (size - kernel.shape[0]) // 2
    if margin < 0 or kernel.shape[0] != kernel.shape[1]:
        raise ValueError(
            f"Cannot centre a {kernel.shape[:2]} kernel in {size}x{size}."
        )
    widths = [(margin, margin)] * 2 + [(0, 0)] * (kernel.ndim - 2)
    return np.pad(kernel, widths)


def merge_branches(kernel, kernel_1x1=None, identity=None):
    """One kernel equal to the sum of the CSLA branches.

    Args:
        kernel: the `(k, k, Cin, Cout)` branch (already scaled).
        kernel_1x1: the `(1, 1, Cin, Cout)` branch, or None.
        identity: None (no identity branch), or a scalar or `(Cout,)` vector
            multiplying `identity_kernel`.
    """
    merged = np.array(kernel, np.float32)
    size, _, in_channels, out_channels = merged.shape
    if kernel_1x1 is not None:
        merged += pad_to(np.asarray(kernel_1x1, np.float32), size)
    if identity is not None:
        merged += identity_kernel(size, in_channels, out_channels) * np.asarray(
            identity, np.float32
        )
    return merged


def csla_grad_mult(
    scale_conv,
    scale_1x1,
    has_identity,
    in_channels,
    power=2,
    kernel_size=3,
    groups=1,
):
    """Grad Mult `merge(s**p, t**p, 1)` as a `(k, k, Cin, Cout)` array (Eq. 3).

    `scale_1x1` None: the block has no 1x1 branch (a depthwise block
    `t*dwconv(x) + s*x`, where `scale_conv` is `t`). `in_channels` is per
    group; a depthwise conv has `in_channels=1, groups=Cout`.

    Raises:
        ValueError: when `s` and `t` differ in length, `power` is not 1 or
            2, or an identity is asked for on a map that is not C -> C.
    """
    s = np.asarray(scale_conv, np.float32).reshape(-1)
    if scale_1x1 is not None:
        t = np.asarray(scale_1x1, np.float32).reshape(-1)
        if s.shape != t.shape:
            raise ValueError(
                f"scale_conv and scale_1x1 must have the same length, got "
                f"{s.shape[0]} and {t.shape[0]}."
            )
    if power not in (1, 2):
        raise ValueError(f"power must be 1 (AdamW) or 2 (SGD), got {power}.")
    in_channels = int(in_channels)
    if has_identity and in_channels * groups != s.shape[0]:
        raise ValueError(
            "An identity branch needs in_channels == out_channels, got "
            f"in_channels={in_channels * groups}, out_channels={s.shape[0]}."
        )
    shape = (kernel_size, kernel_size, in_channels, s.shape[0])
    return merge_branches(
        np.broadcast_to(s**power, shape),
        None
        if scale_1x1 is None
        else np.broadcast_to(t**power, (1, 1) + shape[2:]),
        1.0 if has_identity else None,
    )


def fold_batch_norm(kernel, gamma, beta, mean, var, epsilon):
    """`(kernel, bias)` of `BN(conv(x, kernel))` as one conv with bias."""
    std = np.sqrt(np.asarray(var) + epsilon)
    scale = np.asarray(gamma) / std
    return np.asarray(kernel) * scale, np.asarray(beta) - np.asarray(
        mean
    ) * scale


@dataclasses.dataclass
class CompactMult:
    """A `(k, k, Cin, Cout)` array that is `surround[c]` at every off-centre
    tap of output `c`, `centre[c]` at its centre tap and `identity[c]` at its
    identity tap (the centre tap of input `c % Cin`); `identity` None means
    `centre` there too."""

    shape: tuple
    surround: np.ndarray
    centre: np.ndarray
    identity: np.ndarray | None = None

    def __post_init__(self):
        self.shape = tuple(int(n) for n in self.shape)
        for field in ("surround", "centre", "identity"):
            value = getattr(self, field)
            if value is not None:
                setattr(self, field, np.asarray(value, np.float32).reshape(-1))

    @classmethod
    def of(cls, array):
        """The compact form of `array`, or None when it has no such structure."""
        array = np.asarray(array, np.float32)
        if (
            array.ndim != 4
            or array.shape[0] != array.shape[1]
            or array.shape[0] % 2 == 0
            or array.shape[0] == 1
        ):
            return None
        size, _, in_channels, out_channels = array.shape
        taps = array.reshape(size * size, in_channels, out_channels)
        surround = taps[0, 0]
        centre_tap = taps[size * size // 2]
        outputs = np.arange(out_channels)
        own = outputs % in_channels
        # The centre value of output c at another input than its own.
        other = (own + 1) % in_channels
        compact = cls(
            array.shape,
            surround.copy(),
            centre_tap[other, outputs].copy(),
            centre_tap[own, outputs].copy(),
        )
        if np.array_equal(compact.identity, compact.centre):
            compact.identity = None
        return compact if np.array_equal(compact.expand(), array) else None

    def centre_tap(self):
        """The `(Cin, Cout)` centre tap."""
        _, _, in_channels, out_channels = self.shape
        tap = np.broadcast_to(self.centre, (in_channels, out_channels)).copy()
        if self.identity is not None:
            outputs = np.arange(out_channels)
            tap[outputs % in_channels, outputs] = self.identity
        return tap

    def expand(self):
        """The full array."""
        array = np.broadcast_to(self.surround, self.shape).copy()
        centre = self.shape[0] // 2
        array[centre, centre] = self.centre_tap()
        return array

    def to_config(self):
        """JSON-safe dict; `CompactMult.from_config` inverts it."""
        config = {
            "shape": list(self.shape),
            "surround": self.surround.tolist(),
            "centre": self.centre.tolist(),
        }
        if self.identity is not None:
            config["identity"] = self.identity.tolist()
        return config

    @classmethod
    def from_config(cls, config):
        def vector(key):
            return (
                None
                if config.get(key) is None
                else np.asarray(config[key], np.float32)
            )

        return cls(
            tuple(config["shape"]),
            vector("surround"),
            vector("centre"),
            vector("identity"),
        )
