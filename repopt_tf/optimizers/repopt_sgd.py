"""RepOptSGD: SGD with Grad Mults (Ding et al., ICLR 2023, §3.2, App. A)."""

import keras
from keras import ops

from repopt_tf.optimizers.mult_state import GradMultMixin
from repopt_tf.optimizers.mult_state import auto_name


@keras.saving.register_keras_serializable(package="repopt_tf")
class RepOptSGD(GradMultMixin, keras.optimizers.SGD):
    """SGD whose gradients are multiplied by constant Grad Mults.

    Update of a variable `w` with gradient `g` and mult `M` (`M = 1` for
    variables without one), with PyTorch momentum semantics::

        d = g * M
        d = d + weight_decay * w      # coupled L2 (kernels only by default)
        buf = momentum * buf + d      # buf starts at 0, so buf_1 = d_1
        d = d + momentum * buf if nesterov else buf
        w = w - learning_rate * d

    With `M = grad_mult(s, t, has_identity, Cin, power=2)`, training one 3x3
    kernel this way is exactly training the CSLA block
    `s*conv3x3(x) + t*conv1x1(x) (+ x)` with the same rule, from
    `W'(0) = s*W3 + t*pad(W1) (+ I)` (Ding et al., App. A).

    Where it deliberately differs from `keras.optimizers.SGD`: weight decay
    is *coupled* L2 that passes through momentum, as in PyTorch and the
    paper's code, not Keras's decoupled decay, and by default it decays
    only kernels (`decay_vectors=False`); momentum is PyTorch's
    (`buf = momentum * buf + d`, the learning rate applied after), which
    under a learning-rate schedule is not Keras's `velocity = momentum *
    velocity - lr * g`.

    Clipping: `clipnorm` and `clipvalue` work as in Keras while no variable
    has a mult, and raise `ValueError` otherwise (they break the
    equivalence). `global_clipnorm=c` is supported and equivalence-preserving:
    the norm is the CSLA model's, `sqrt(sum over variables of sum(M * g**2))`,
    and every gradient is scaled by `c / max(norm, c)`.

    Args:
        learning_rate: float >= 0 or a `LearningRateSchedule`.
        momentum: float in [0, 1].
        nesterov: whether to use Nesterov momentum.
        weight_decay: coupled L2 coefficient, or None.
        grad_mults: dict `{variable.path: array}` of arrays shaped like
            their variable, e.g. from `grad_mult` or `grad_mults_for_model`.
        name: default `repopt_sgd`, `repopt_sgd_1`, ... as Keras names.
        decay_vectors: also decay 1-D variables (biases, BN, scales);
            default False: kernels (ndim >= 2) and the RPG ring only.
        **kwargs: the other `keras.optimizers.Optimizer` arguments.

    Returns:
        A Keras optimizer, for `model.compile(optimizer=...)`.

    Raises:
        ValueError: a mult whose shape differs from its variable's, a mult
            for no variable of the model, NaN/inf in a mult, or `clipnorm`
            / `clipvalue` with mults.

    Examples:
        >>> import keras, numpy as np
        >>> from repopt_tf import RepOptSGD
        >>> w = keras.Variable(np.ones((2, 2), np.float32), name="kernel")
        >>> opt = RepOptSGD(0.1, grad_mults={w.path: np.full((2, 2), 3.0)})
        >>> _ = opt.apply_gradients([(np.ones((2, 2), np.float32), w)])
        >>> round(float(w.numpy()[0, 0]), 6)  # 1 - 0.1 * 3 * 1
        0.7

    References:
        Ding et al., 2023, "Re-parameterizing Your Optimizers rather than
        Architectures", ICLR, https://arxiv.org/abs/2205.15242 (Sec. 3.2,
        Eq. 3); the official code, https://github.com/DingXiaoH/RepOptimizers
        (`repoptimizer/repoptimizer_sgd.py`).
    """

    _clip_advice = (
        "; `global_clipnorm` is supported and clips by the CSLA norm."
    )

    def __init__(
        self,
        learning_rate=0.01,
        momentum=0.0,
        nesterov=False,
        weight_decay=None,
        grad_mults=None,
        name=None,
        decay_vectors=False,
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            momentum=float(momentum),
            nesterov=nesterov,
            weight_decay=weight_decay,
            name=name or auto_name("repopt_sgd"),
            **kwargs,
        )
        self._init_grad_mults(
            grad_mults, learning_rate, weight_decay, decay_vectors
        )
        if self.global_clipnorm and self.gradient_accumulation_steps:
            raise ValueError(
                "`global_clipnorm` with `gradient_accumulation_steps` is not "
                "supported by RepOptSGD; use one of them."
            )

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        learning_rate = ops.cast(learning_rate, variable.dtype)
        step = self._multiply(gradient, variable)
        kernels = _tf_kernels()
        if self.weight_decay and self._decays_weight[index]:
            if kernels:
                step = kernels.add_coupled_l2(step, variable, self.weight_decay)
            else:
                step = step + ops.cast(self.weight_decay, step.dtype) * variable
        if self.momentum == 0:
            self.assign_sub(variable, learning_rate * step)
            return
        buffer = self.momentums[index]
        if kernels:
            kernels.apply_momentum(
                variable,
                buffer,
                step,
                learning_rate,
                self.momentum,
                self.nesterov,
            )
            return
        momentum = ops.cast(self.momentum, variable.dtype)
        new_buffer = momentum * buffer + step
        self.assign(buffer, new_buffer)
        if self.nesterov:
            step = step + momentum * new_buffer
        else:
            step = new_buffer
        self.assign_sub(variable, learning_rate * step)

    def _apply_weight_decay(self, variables):
        """No decoupled decay: the L2 term is coupled in `update_step`."""

    def _backend_apply_gradients(self, grads, trainable_variables):
        if self.global_clipnorm:
            grads = self._clip_by_csla_global_norm(grads, trainable_variables)
        super()._backend_apply_gradients(grads, trainable_variables)

    def _clip_gradients(self, grads):
        """Global clipping already happened, by the CSLA norm, before this
        point; `clipnorm` / `clipvalue` (no mults) clip as in Keras."""
        if self.global_clipnorm:
            return grads
        return super()._clip_gradients(grads)

    def _clip_by_csla_global_norm(self, grads, variables):
        squares = []
        for grad, variable in zip(grads, variables):
            square = self._scale(
                ops.square(ops.cast(grad, "float32")), variable
            )
            squares.append(ops.sum(square))
        norm = ops.sqrt(ops.sum(ops.stack(squares)))
        scale = self.global_clipnorm / ops.maximum(norm, self.global_clipnorm)
        return [grad * ops.cast(scale, grad.dtype) for grad in grads]

    def get_config(self):
        return {**super().get_config(), **self._grad_mults_config()}


def _tf_kernels():
    """`repopt_tf.optimizers.tf_sgd_kernels` on the TensorFlow backend (the
    same step in TF's in-place kernels), else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    from repopt_tf.optimizers import tf_sgd_kernels

    return tf_sgd_kernels
