"""RepOptimizers: Keras optimizers that train a plain net like its CSLA twin."""

from repopt_tf.optimizers.grad_mult import grad_mult
from repopt_tf.optimizers.grad_mult import grad_mults_for_model
from repopt_tf.optimizers.repopt_adamw import RepOptAdamW
from repopt_tf.optimizers.repopt_sgd import RepOptSGD

__all__ = ["RepOptAdamW", "RepOptSGD", "grad_mult", "grad_mults_for_model"]
