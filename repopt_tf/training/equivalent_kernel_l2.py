"""RepVGG's own weight decay: L2 on each block's equivalent kernel.

The RepVGG training recipe (Ding et al., CVPR 2021; `get_custom_L2` and
`--custwd` of the authors' code) does not decay the 3x3 and 1x1 kernels of a
block separately. With `t = gamma / sqrt(moving_var + eps)` of each branch's
BN, held constant (no gradient), it adds to the loss

    weight_decay / 2 * sum over blocks of L,
    L = sum(K3**2) - sum(K3c**2)                      # the 8 surround taps
      + sum((K3c * t3 + K1 * t1)**2 / (t3**2 + t1**2))  # the fused centre

where `K3c` is the 3x3 kernel's centre tap, and turns ordinary weight decay
off for both kernels. This penalises the kernel that the fused model
actually carries (normalised to an L2 coefficient comparable to plain
decay), which is where RepVGG's int8 collapse was traced.

`add_equivalent_kernel_l2(model, weight_decay)` attaches it to a
`kind="repvgg"` model: each block's penalty is the Keras regularizer of its
1x1 kernel (so it enters `model.losses` and the gradient of `fit`), and the
paths of the kernels it covers are returned for
`optimizer.exclude_from_weight_decay`. It is a training-time setting: a
saved model does not carry it.
"""

import keras
from keras import ops

from repopt_tf.models.blocks import split_block_layer


class EquivalentKernelL2(keras.regularizers.Regularizer):
    """`weight_decay / 2 * L` of one RepVGG block (module docstring), called
    with the block's 1x1 kernel `(1, 1, Cin/groups, Cout)`."""

    def __init__(self, weight_decay, conv, bn, bn_1x1):
        self.weight_decay = float(weight_decay)
        self.kernel_3x3 = conv.kernel
        self.bn = bn
        self.bn_1x1 = bn_1x1

    def __call__(self, kernel_1x1):
        t3 = _bn_scale(self.bn)
        t1 = _bn_scale(self.bn_1x1)
        kernel_3x3 = ops.convert_to_tensor(self.kernel_3x3)
        centre = kernel_3x3[1, 1]
        surround = ops.sum(ops.square(kernel_3x3)) - ops.sum(ops.square(centre))
        fused_centre = centre * t3 + kernel_1x1[0, 0] * t1
        centre_term = ops.sum(
            ops.square(fused_centre) / (ops.square(t3) + ops.square(t1))
        )
        return 0.5 * self.weight_decay * (surround + centre_term)

    def get_config(self):
        # Holds live variables of the model: not serialised with it.
        return {"weight_decay": self.weight_decay}


def _bn_scale(bn):
    scale = bn.gamma / ops.sqrt(bn.moving_variance + bn.epsilon)
    return ops.stop_gradient(scale)


def add_equivalent_kernel_l2(model, weight_decay):
    """Attaches RepVGG's custom L2 to every block of a `kind="repvgg"` model
    (one with `{block}_conv`, `{block}_conv1x1`, `{block}_bn` and
    `{block}_bn1x1` layers) and returns the paths of the kernels it covers.

    Raises:
        ValueError: when the model has no such block (another form, or a
            family whose RepVGG-style branch has no 1x1 conv).
    """
    layers = {layer.name: layer for layer in model.layers}
    covered = []
    for name, layer in layers.items():
        parts = split_block_layer(name)
        if parts is None or parts[3] != "conv1x1":
            continue
        block = parts[0]
        layer.kernel.regularizer = EquivalentKernelL2(
            weight_decay,
            layers[f"{block}_conv"],
            layers[f"{block}_bn"],
            layers[f"{block}_bn1x1"],
        )
        covered += [layers[f"{block}_conv"].kernel.path, layer.kernel.path]
    if not covered:
        raise ValueError(
            f"{model.name} has no RepVGG block with a 1x1 branch "
            "({block}_conv1x1 and {block}_bn1x1): RepVGG's custom L2 "
            "(repvgg.custom_l2) needs the RepVGG training form "
            "(mode=baseline_repvgg on a RepOpt-VGG / RepVGG variant)."
        )
    return covered
