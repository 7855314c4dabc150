"""TensorFlow's fast CPU gradients of a zero-padded conv (`FastGradConv2D`).

On CPU, TF's `Conv2DBackpropInput` is many times slower than the forward
pass for small feature maps with many channels, and it dominated a
RepOpt-VGG-S training step (measurements: docs/results.md). For a conv with
stride `s` (the same in both directions), kernel `K` of `k` rows and zero
padding `p`, write each row of the unpadded input as `r = s*a + q` (phase
`q < s`). Row `r` is padded row `r + p = s*(a + c) + i0` with
`c, i0 = divmod(q + p, s)`, so

    dx[s*a + q] = sum_u dy[a + c - u] K[i0 + s*u],   i0 + s*u < k

(columns likewise): all `s*s` phases of `dx` are one stride-1 convolution
of a zero-extended window of `dy` with a small kernel of `s*s*C_in` output
channels gathered from `K`, followed by `depth_to_space(s)`. At `s = 1` this
is the textbook `conv(dy, flip(K)^T)` with padding `k-1-p`. It runs through
the fast forward kernel and needs no large workspace.

TF's CPU `Conv2DBackpropFilter` allocates a large im2col buffer whatever the
batch, the largest single allocation of a small net's training step
(`benchmarks/kernel_gradient.py` measures both). The kernel
gradient

    dK[i, j, c, d] = sum_{n, a, b} pad(x)[n, s*a + i, s*b + j, c] dy[n, a, b, d]

is instead one forward convolution with batch and channels swapped: input
`x` as `(C_in, H, W, N)`, kernel `dy` as `(H_out, W_out, N, C_out)` dilated
by `s`, output `(C_in, k_h, k_w, C_out)`. It needs only the two transposed
copies and is as fast or faster on the shapes measured (docs/results.md).
A 1x1 kernel without padding is a single matmul of the subsampled `x` and
`dy`. In float32 with large maps (`H*W > 1024`), or a small batch (`N < 64`:
few channels for the swapped conv) on a large input (`H*W*C_in >= 32768`
per image), TF's own op is faster, 2x over RepOpt-VGG-A0's convs at
224x224, batch 32, and its buffer (up to about 30 MB, allocated whatever
the batch: 18-21 MB even for RepOpt-VGG-tiny at batch 8) is small next to
such activations, so it runs there (`_native_kernel_gradient`). In bfloat16
TF's op is 30x slower than the swapped conv (no fast bf16 kernel on CPU):
never there.

Imported only on the TensorFlow backend (`repopt_tf.models.fast_conv`).
"""

import numpy as np
import tensorflow as tf


def cpu_only():
    """Whether no GPU is visible to TensorFlow (cuDNN's own gradient
    algorithms beat these rewrites on a GPU)."""
    return not tf.config.list_logical_devices("GPU")


def _window(dy, windows):
    """Crops `dy` to `[(start, length)]` windows along H and W.

    Returns the cropped `dy` and the conv paddings that zero-fill the rest.
    """
    begin, size, paddings = [0, 0, 0, 0], [-1, -1, -1, -1], [[0, 0]] * 4
    for axis, (start, length) in enumerate(windows, start=1):
        end = start + length
        begin[axis] = max(0, start)
        size[axis] = min(dy.shape[axis], end) - begin[axis]
        paddings[axis] = [max(0, -start), max(0, end - dy.shape[axis])]
    if any(begin) or any(
        n != dy.shape[i] for i, n in enumerate(size) if n >= 0
    ):
        dy = tf.slice(dy, begin, size)
    return dy, paddings


def _phase_taps(size, stride, padding):
    """Kernel rows feeding each phase of dx, by window offset.

    Returns `(start, taps)`: `dx[s*a + q]` sums `dy[a + start + t] K[taps[t, q]]`
    over `t`; `taps[t, q] == size` marks a zero row.
    """
    uses = []  # (dy offset, phase, kernel row)
    for q in range(stride):
        carry, first_row = divmod(q + padding, stride)
        for u, row in enumerate(range(first_row, size, stride)):
            uses.append((carry - u, q, row))
    start = min(offset for offset, _, _ in uses)
    taps = np.full((max(o for o, _, _ in uses) - start + 1, stride), size)
    for offset, q, row in uses:
        taps[offset - start, q] = row
    return start, taps


def _phase_kernel(kernel, stride, padding):
    """`(kh, kw, C_in, C_out)` -> window starts and the `(M_h, M_w, C_out,
    s*s*C_in)` kernel whose output channels are the phases of dx."""
    kh, kw, c_in, c_out = kernel.shape
    start_h, taps_h = _phase_taps(kh, stride, padding)
    start_w, taps_w = _phase_taps(kw, stride, padding)
    rows, cols = taps_h[:, None, :, None], taps_w[None, :, None, :]
    index = np.where((rows < kh) & (cols < kw), rows * kw + cols, kh * kw)
    taps = tf.concat(
        [
            tf.reshape(kernel, [kh * kw, c_in, c_out]),
            tf.zeros([1, c_in, c_out], kernel.dtype),
        ],
        axis=0,
    )
    # (t_h, t_w, q_h, q_w, C_in, C_out) -> (t_h, t_w, C_out, q_h * q_w * C_in)
    phases = tf.transpose(tf.gather(taps, index), [0, 1, 5, 2, 3, 4])
    shape = [len(taps_h), len(taps_w), c_out, stride * stride * c_in]
    return (start_h, start_w), tf.reshape(phases, shape)


def _input_gradient(dy, kernel, stride, padding, input_shape):
    """dx of `conv(pad(x, padding), kernel, stride)` (see the module doc)."""
    (start_h, start_w), phase_kernel = _phase_kernel(kernel, stride, padding)
    height, width = input_shape[1], input_shape[2]
    rows, cols = -(-height // stride), -(-width // stride)
    dy, paddings = _window(
        dy,
        [
            (start_h, rows + phase_kernel.shape[0] - 1),
            (start_w, cols + phase_kernel.shape[1] - 1),
        ],
    )
    dx = tf.nn.conv2d(dy, phase_kernel, 1, paddings)
    if stride > 1:
        dx = tf.nn.depth_to_space(dx, stride)
    if stride * rows != height or stride * cols != width:
        dx = dx[:, :height, :width, :]
    return dx


def _native_kernel_gradient(x):
    """Whether TF's `Conv2DBackpropFilter` is the faster kernel gradient
    for input `x` (the rule in the module doc)."""
    batch, height, width = x.shape[:3]
    if None in (batch, height, width) or x.dtype != tf.float32:
        return False
    size = height * width
    return size > 1024 or (batch < 64 and size * x.shape[3] >= 32768)


def _tf_kernel_gradient(x, dy, kernel, stride, padding):
    """TF's own CPU op for dK of `conv(pad(x, padding), K, stride)`."""
    return tf.compat.v1.nn.conv2d_backprop_filter(
        x, kernel.shape, dy, [1, stride, stride, 1], _explicit(padding)
    )


def _kernel_gradient(x, dy, kernel, stride, padding):
    """dK of `conv(pad(x, padding), K, stride)`: a matmul for an unpadded
    1x1 kernel, TF's op where `_native_kernel_gradient` says it is faster,
    else the swapped conv (see the module doc)."""
    kh, kw, c_in, c_out = kernel.shape
    if (kh, kw, padding) == (1, 1, 0):
        if stride > 1:  # a 1x1 pool picks every s-th position, fast on CPU
            x = tf.nn.max_pool2d(x, 1, stride, "VALID")
        return tf.reshape(
            tf.linalg.matmul(
                tf.reshape(x, [-1, c_in]),
                tf.reshape(dy, [-1, c_out]),
                transpose_a=True,
            ),
            kernel.shape,
        )
    if _native_kernel_gradient(x):
        return _tf_kernel_gradient(x, dy, kernel, stride, padding)
    return _swapped_kernel_gradient(x, dy, kernel, stride, padding)


def _swapped_kernel_gradient(x, dy, kernel, stride, padding):
    """dK as one forward conv with batch and channels swapped."""
    kh, kw = kernel.shape[:2]
    # Pad the far side only as far as the last tap row/column reaches.
    paddings = (
        [[0, 0]]
        + [
            [
                padding,
                max(
                    0,
                    stride * (dy.shape[axis] - 1)
                    + size
                    - x.shape[axis]
                    - padding,
                ),
            ]
            for axis, size in ((1, kh), (2, kw))
        ]
        + [[0, 0]]
    )
    dk = tf.nn.conv2d(
        tf.transpose(x, [3, 1, 2, 0]),
        tf.transpose(dy, [1, 2, 0, 3]),
        1,
        paddings,
        dilations=stride,
    )
    return tf.transpose(dk[:, :kh, :kw, :], [1, 2, 0, 3])


def _explicit(padding):
    """`tf.nn.conv2d` padding; "VALID" for none (explicit zeros would
    convert to a TFLite PAD that copies the input for nothing)."""
    if not padding:
        return "VALID"
    return [[0, 0], [padding, padding], [padding, padding], [0, 0]]


def conv_fast_gradients(x, kernel, stride, padding):
    """`conv(pad(x, padding), kernel, stride)` with the gradients above."""

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):
            # Otherwise TF computes the transposed x and the phase kernel in
            # the forward pass and holds them until the backward pass.
            # The scopes name the two halves in profiles.
            with tf.control_dependencies([dy]):
                with tf.name_scope("input_gradient"):
                    dx = _input_gradient(dy, kernel, stride, padding, x.shape)
                with tf.name_scope("kernel_gradient"):
                    dk = _kernel_gradient(x, dy, kernel, stride, padding)
            return dx, dk

        return tf.nn.conv2d(x, kernel, stride, _explicit(padding)), grad

    return conv(x, tf.convert_to_tensor(kernel))
