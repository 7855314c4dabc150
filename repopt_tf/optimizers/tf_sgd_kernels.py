"""TensorFlow's in-place kernels for `RepOptSGD`'s step on the TF backend.

The maths is `RepOptSGD`'s (its docstring); these run it in fewer, in-place
TF ops, with nothing computed before the gradient exists. Imported only on
the TensorFlow backend (`repopt_tf.optimizers.repopt_sgd`).
"""

import keras
import tensorflow as tf
from keras import ops


def add_coupled_l2(step, variable, weight_decay):
    """`step + weight_decay * variable`, not run before `step` exists: TF
    would otherwise compute `wd * w` at the start of the training step and
    hold it through the backward pass, where the step's memory peaks."""
    with tf.control_dependencies([step]):
        return step + ops.cast(weight_decay, variable.dtype) * variable


def apply_momentum(variable, buffer, step, learning_rate, momentum, nesterov):
    """`buf = mu * buf + d; w -= lr * (d + mu * buf if nesterov else buf)`
    in place, in one `ResourceApplyMomentum` kernel."""
    tf.raw_ops.ResourceApplyMomentum(
        var=_handle(variable),
        accum=_handle(buffer),
        lr=learning_rate,
        grad=step,
        momentum=ops.cast(momentum, variable.dtype),
        use_nesterov=nesterov,
    )


def _handle(variable):
    """The TF resource handle of a Keras or TF variable."""
    return (
        variable.value if isinstance(variable, keras.Variable) else variable
    ).handle
