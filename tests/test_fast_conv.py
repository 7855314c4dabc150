"""FastGradConv2D (fast CPU gradients, built-in padding) and FastBatchNorm."""

import keras
import numpy as np
import pytest


@pytest.mark.parametrize(
    "kernel_size,strides,padding,zero_padding,size",
    [
        (3, 1, "valid", 0, 7),
        (1, 1, "valid", 0, 7),
        (3, 2, "valid", 0, 7),
        (3, 1, "same", 0, 7),
        (3, 1, "valid", 1, 2),
        (3, 2, "valid", 1, 8),
        (3, 2, "valid", 1, 7),
        (1, 2, "valid", 0, 4),
        ((2, 3), 3, "valid", 2, 5),
        (5, 2, "valid", 1, 9),
        (3, 2, "valid", 1, 16),
        (1, 3, "valid", 0, 7),
        ((3, 1), 2, "valid", 1, 6),
    ],
)
@pytest.mark.parametrize("native_dk", [False, True], ids=["swapped", "tf"])
def test_fast_grad_conv_matches_keras_conv(
    kernel_size, strides, padding, zero_padding, size, native_dk, monkeypatch
):
    import tensorflow as tf

    from repopt_tf.models import tf_conv_gradients
    from repopt_tf.models.fast_conv import FastGradConv2D

    # Both kernel-gradient paths, whatever the rule picks for this shape.
    monkeypatch.setattr(
        tf_conv_gradients, "_native_kernel_gradient", lambda x: native_dk
    )

    x = tf.random.stateless_normal((4, size, size + 1, 5), seed=(1, 2))
    fast = FastGradConv2D(
        6,
        kernel_size,
        strides=strides,
        padding=padding,
        zero_padding=zero_padding,
    )
    stock = keras.Sequential(
        [
            keras.layers.ZeroPadding2D(zero_padding),
            keras.layers.Conv2D(
                6, kernel_size, strides=strides, padding=padding
            ),
        ]
    )
    fast.build(x.shape)
    stock.build(x.shape)
    stock.set_weights(fast.get_weights())
    assert fast.compute_output_shape(x.shape) == stock.compute_output_shape(
        x.shape
    )
    grads = []
    for layer in (fast, stock):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * tf.sin(y))
        grads.append(tape.gradient(loss, [x, *layer.trainable_weights]))
    np.testing.assert_allclose(fast(x), stock(x), rtol=1e-5, atol=1e-5)
    for ours, theirs in zip(*grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def test_kernel_gradient_rule_takes_tf_op_only_where_it_is_faster():
    import tensorflow as tf

    from repopt_tf.models.tf_conv_gradients import _native_kernel_gradient

    def rule(shape, dtype=tf.float32):
        return _native_kernel_gradient(tf.zeros(shape, dtype))

    assert not rule((128, 32, 32, 3))  # RepOpt-VGG-S's stem, batch 128
    assert not rule((128, 2, 2, 128))
    assert rule((32, 224, 224, 3))  # RepOpt-VGG-A0 at 224, batch 32
    assert rule((32, 14, 14, 192))  # a small batch: few swapped channels
    assert not rule((8, 8, 8, 32))  # ... but not on small inputs
    assert rule((128, 64, 64, 3))  # a large map
    assert not rule((32, 224, 224, 3), tf.bfloat16)  # TF's bf16 op is slow
    # A batch unknown while tracing keeps the swapped conv.
    assert not _native_kernel_gradient(tf.TensorSpec((None, 8, 8, 3)))


def test_fast_grad_conv_backward_work_waits_for_the_gradient(waits_for):
    # Work that needs only x or the kernel (transposing x, gathering the
    # phase kernel) must not run in the forward pass and be held until the
    # backward pass: that doubled the activation memory of a training step.
    import tensorflow as tf

    from repopt_tf.models.fast_conv import fast_grad_conv2d

    @tf.function
    def backward(x, kernel, dy):
        y = fast_grad_conv2d(x, kernel, 2, zero_padding=1)
        return tf.gradients(y, [x, kernel], grad_ys=dy), y

    graph = backward.get_concrete_function(
        tf.TensorSpec((None, 8, 8, 4)),
        tf.TensorSpec((3, 3, 4, 6)),
        tf.TensorSpec((None, 4, 4, 6)),
    ).graph
    x, kernel, dy = graph.inputs[:3]
    forward = {
        op
        for op in graph.get_operations()
        if op.type == "Conv2D" and op.inputs[0] is x
    }
    assert len(forward) == 1
    late = [
        op
        for op in graph.get_operations()
        if op.type
        not in ("Placeholder", "Const", "Identity", "IdentityN", "ZerosLike")
        and op not in forward
        and not waits_for(op, dy)
    ]
    assert late == []
    ops = {op.type for op in graph.get_operations()}
    assert {"Transpose", "DepthToSpace"} <= ops  # the fast path was taken


def test_fast_grad_conv_rejects_zero_padding_with_same():
    from repopt_tf.models.fast_conv import FastGradConv2D

    with pytest.raises(ValueError, match="zero_padding"):
        FastGradConv2D(4, 3, padding="same", zero_padding=1)
    with pytest.raises(ValueError, match="zero_padding"):
        FastGradConv2D(4, 3, zero_padding=-1)


def test_stock_gradient_path_matches_the_fast_one():
    """The GPU rule's stock-gradient path, forced on this CPU."""
    import tensorflow as tf

    from repopt_tf.models.fast_conv import FastGradConv2D
    from repopt_tf.models.fast_conv import set_fast_gradient

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 9, 9, 4)), tf.float32)
    layer = FastGradConv2D(6, 3, strides=2, zero_padding=1, use_bias=False)
    layer.build(x.shape)

    def gradients():
        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(tf.sin(layer(x)))
            return tape.gradient(loss, [x, layer.kernel])

        ops = {
            op.type
            for op in step.get_concrete_function(x).graph.get_operations()
        }
        return [g.numpy() for g in step(x)], ops

    try:
        set_fast_gradient(False)
        stock, stock_ops = gradients()
        set_fast_gradient(True)
        fast, fast_ops = gradients()
    finally:
        set_fast_gradient("auto")
    assert "Conv2DBackpropInput" in stock_ops
    assert "Conv2DBackpropInput" not in fast_ops
    for ours, theirs in zip(fast, stock):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="mode must be"):
        set_fast_gradient("gpu")


def test_fast_batch_norm_equals_keras_batch_norm():
    import tensorflow as tf

    from repopt_tf.models.fast_norm import FastBatchNorm

    x = tf.constant(
        np.random.default_rng(0).normal(2, 3, (8, 5, 5, 4)), tf.float32
    )
    layers = [
        keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9),
        FastBatchNorm(epsilon=1e-5, momentum=0.9),
    ]
    results = []
    for layer in layers:
        layer.build(x.shape)
        layer.gamma.assign([1.0, 2.0, 0.5, 1.5])
        layer.beta.assign([0.0, 1.0, -1.0, 0.2])

        @tf.function
        def step(x, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(tf.sin(layer(x, training=True)))
            return [loss, *tape.gradient(loss, [x, layer.gamma, layer.beta])]

        ops = {
            op.type
            for op in step.get_concrete_function(x).graph.get_operations()
        }
        values = [v.numpy() for v in step(x)]
        results.append(
            (
                values
                + [
                    layer.moving_mean.numpy(),
                    layer.moving_variance.numpy(),
                    layer(x, training=False).numpy(),
                ],
                ops,
            )
        )
    (ours, our_ops), (keras_values, _) = results[1], results[0]
    assert "FusedBatchNormV3" in our_ops
    for a, b in zip(ours, keras_values):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=5e-5)
