"""RepVGG fusion: fold the training-time branches into one 3x3 conv.

For a block `BN(conv3x3) (+ BN(conv1x1)) (+ BN(x))`, each BN folds into its
branch (`repopt_tf.csla.fold_batch_norm`; the identity's kernel is
`identity_kernel`), the branch kernels merge at the centre tap and the biases
add (`merge_branches`). Layer names follow `repopt_tf.models.blocks`.
"""

import numpy as np

from repopt_tf.backend import to_numpy
from repopt_tf.csla import fold_batch_norm
from repopt_tf.csla import merge_branches
from repopt_tf.models.blocks import csla_layer_name
from repopt_tf.models.conv_layout import grouped_layout
from repopt_tf.models.conv_layout import variable_layout


def fold_layer(kernel, bn):
    """`(kernel, bias)` of Keras BatchNormalization `bn` after `kernel`."""
    gamma, beta, mean, var = (to_numpy(w) for w in bn.weights)
    return fold_batch_norm(kernel, gamma, beta, mean, var, bn.epsilon)


def has_branches(model, convs):
    """Whether every block conv of `model` has a training-time branch (a
    1x1 conv or an identity BN): a family's multi-branch form."""
    names = {layer.name for layer in model.layers}
    return bool(convs) and all(
        csla_layer_name(conv.name, "conv1x1") in names
        or csla_layer_name(conv.name, "bn_identity") in names
        for conv in convs
    )


def fused_block_kernel(model, conv_name):
    """`(kernel, bias)` of the block of conv `conv_name` in a RepVGG-style
    model: `bn(conv) (+ bn1x1(conv1x1)) (+ bn_identity(x))` (a depthwise
    block has no 1x1 branch)."""
    names = {layer.name for layer in model.layers}

    def layer(part):
        return model.get_layer(csla_layer_name(conv_name, part))

    conv = model.get_layer(conv_name)
    kernel, bias = fold_layer(grouped_layout(conv, conv.kernel), layer("bn"))
    kernel_1x1, bias_1x1 = None, 0.0
    if csla_layer_name(conv_name, "conv1x1") in names:
        kernel_1x1, bias_1x1 = fold_layer(
            to_numpy(layer("conv1x1").kernel), layer("bn1x1")
        )
    identity, bias_identity = None, 0.0
    if csla_layer_name(conv_name, "bn_identity") in names:
        # BN(x) is the identity kernel scaled by gamma / std, plus a bias.
        identity, bias_identity = fold_layer(1.0, layer("bn_identity"))
    kernel = merge_branches(kernel, kernel_1x1, identity)
    return (
        variable_layout(conv, kernel),
        (bias + bias_1x1 + bias_identity).astype(np.float32),
    )


def fuse_into(model, deploy, deploy_convs):
    """Copies `model`'s fused blocks into `deploy`'s convs and its other
    weights by layer name; returns `deploy`."""
    fused = {conv.name for conv in deploy_convs}
    for conv in deploy_convs:
        conv.set_weights(fused_block_kernel(model, conv.name))
    for layer in deploy.layers:
        if layer.weights and layer.name not in fused:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return deploy
