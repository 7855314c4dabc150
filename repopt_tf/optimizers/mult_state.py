"""Per-variable Grad Mult state shared by the RepOpt optimizers.

The mults live in the optimizer as non-trainable variables created in
`build()`, index-aligned with the trainable variables (the pattern of
`keras/src/optimizers/muon.py`), so they are read by index inside
`update_step` (where, under `tf.distribute`, variables have no `.path`) and
are checkpointed with the optimizer. `get_config` stores them compactly so
that `from_config` and `.keras` files restore them exactly.

A Grad Mult with the CSLA structure (`repopt_tf.csla.CompactMult`) is kept
as its `(Cout,)` off-centre row plus its `(Cin, Cout)` centre tap, 1/9 of a
3x3 kernel's size; other mults are kept whole.
"""

from collections.abc import Mapping

import keras
import numpy as np
from keras import ops

from repopt_tf.csla import CompactMult
from repopt_tf.optimizers.grad_mult import decode_grad_mult
from repopt_tf.optimizers.grad_mult import encode_grad_mult


def variable_path(variable):
    """A variable's path; a raw backend variable (e.g. a `tf.Variable`
    beside Keras ones) has only a name."""
    return getattr(variable, "path", None) or variable.name


def normalize_grad_mults(grad_mults):
    """Returns `{path: float32 array}` from user input (paths, or Keras
    variables on backends where they are hashable)."""
    if grad_mults is None:
        return {}
    if not isinstance(grad_mults, Mapping):
        raise ValueError(
            "`grad_mults` must be a dict {variable.path: array}, got "
            f"{type(grad_mults).__name__}."
        )
    normalized = {}
    for key, value in grad_mults.items():
        path = key.path if isinstance(key, keras.Variable) else key
        if not isinstance(path, str):
            raise ValueError(
                "`grad_mults` keys must be variable paths (str) or "
                f"keras.Variable objects, got {key!r}."
            )
        if isinstance(value, Mapping):
            value = decode_grad_mult(value)
        array = np.asarray(value, dtype=np.float32)
        if not np.all(np.isfinite(array)):
            raise ValueError(f"Grad mult for {path!r} contains NaN or inf.")
        normalized[path] = array
    return normalized


class GradMultMixin:
    """Adds `grad_mults` to a Keras optimizer.

    Subclasses call `_init_grad_mults` in `__init__` and use
    `self._multiply(gradient, variable)` (and `self._scale(tensor, variable)`)
    in `update_step`.
    Weight decay (coupled or decoupled, per subclass) applies to every
    variable not excluded by `exclude_from_weight_decay` (by variable, name
    or path part) with `decay_vectors=True`, as in Keras; with
    `decay_vectors=False` only to kernels (`ndim >= 2`) and to variables
    that generate kernels (`decays_like_kernels`: the RPG ring), as the
    reference training scripts do.
    """

    def _init_grad_mults(
        self, grad_mults, learning_rate, weight_decay, decay_vectors
    ):
        self.grad_mults = normalize_grad_mults(grad_mults)
        self.decay_vectors = bool(decay_vectors)
        if isinstance(learning_rate, (int, float)) and learning_rate < 0:
            raise ValueError(
                f"`learning_rate` must be >= 0, got {learning_rate}."
            )
        if weight_decay is not None and weight_decay < 0:
            raise ValueError(
                f"`weight_decay` must be >= 0, got {weight_decay}."
            )
        for arg in ("clipnorm", "clipvalue"):
            if getattr(self, arg) is not None and self.grad_mults:
                raise ValueError(
                    f"`{arg}` clips each gradient on its own, which breaks "
                    "the CSLA equivalence of a RepOptimizer (Ding et al., "
                    "§3.2) where a variable has a Grad Mult. Leave it None"
                    + self._clip_advice
                )

    _clip_advice = "."

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._build_grad_mults(variables)

    def _build_grad_mults(self, variables):
        by_path = {variable_path(variable): variable for variable in variables}
        unknown = sorted(set(self.grad_mults) - set(by_path))
        if unknown:
            raise ValueError(
                f"`grad_mults` names {len(unknown)} variable(s) that are not "
                f"trainable variables of this model: {unknown[:5]}. Known "
                f"paths include: {sorted(by_path)[:5]}."
            )
        self._grad_mult_variables = [None] * len(variables)
        self._decays_weight = [False] * len(variables)
        for index, variable in enumerate(variables):
            self._decays_weight[index] = self._use_weight_decay(variable)
            mult = self.grad_mults.get(variable_path(variable))
            if mult is None:
                continue
            if tuple(mult.shape) != tuple(variable.shape):
                raise ValueError(
                    f"Grad mult for {variable_path(variable)!r} has shape "
                    f"{tuple(mult.shape)}, the variable has shape "
                    f"{tuple(variable.shape)}."
                )
            self._grad_mult_variables[index] = self._add_mult_state(
                variable, mult
            )

    def _add_mult_state(self, variable, mult):
        """A full mult variable, or `(row, centre)` variables (module doc)."""
        compact = CompactMult.of(mult)
        if compact is None:
            return self.add_variable_from_reference(
                variable,
                name="grad_mult",
                initializer=lambda shape, dtype, m=mult: ops.cast(m, dtype),
            )
        return tuple(
            self.add_variable(
                part.shape,
                initializer=lambda shape, dtype, m=part: ops.cast(m, dtype),
                dtype=variable.dtype,
                name=f"{variable_path(variable).replace('/', '_')}_grad_mult_{kind}",
            )
            for kind, part in (
                ("row", compact.surround),
                ("centre", compact.centre_tap()),
            )
        )

    def _scale(self, tensor, variable):
        """`tensor * M` for the mult `M` of `variable` (`M = 1` without one)."""
        mult = self._grad_mult_variables[self._get_variable_index(variable)]
        if mult is None:
            return tensor
        if not isinstance(mult, tuple):
            return tensor * ops.cast(mult, tensor.dtype)
        row, centre = (ops.cast(part, tensor.dtype) for part in mult)
        # Taps in row-major order: the centre of an odd k x k kernel is
        # tap k*k // 2, every other tap takes the row.
        shape = tuple(variable.shape)
        taps = ops.reshape(tensor, (-1, *shape[2:]))
        middle = shape[0] * shape[1] // 2
        scaled = ops.concatenate(
            [
                taps[:middle] * row,
                taps[middle : middle + 1] * centre,
                taps[middle + 1 :] * row,
            ],
            axis=0,
        )
        return ops.reshape(scaled, shape)

    def _multiply(self, gradient, variable):
        """`gradient * M` in the variable's dtype (`M = 1` without a mult)."""
        return self._scale(ops.cast(gradient, variable.dtype), variable)

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """Keras's method; `var_names` also match anywhere in a variable's
        path (`"scale_identity"` for `stage2_block1_scale_identity/scale`),
        not only in its short name."""
        super().exclude_from_weight_decay(var_list, var_names)
        self._excluded_path_parts = tuple(var_names or ())

    def _use_weight_decay(self, variable):
        excluded = getattr(self, "_excluded_path_parts", ())
        kernel_like = len(variable.shape) >= 2 or getattr(
            variable, "decays_like_kernels", False
        )
        return (
            (self.decay_vectors or kernel_like)
            and super()._use_weight_decay(variable)
            and not any(part in variable_path(variable) for part in excluded)
        )

    def _grad_mults_config(self):
        return {
            "grad_mults": {
                path: encode_grad_mult(mult)
                for path, mult in self.grad_mults.items()
            },
            "decay_vectors": self.decay_vectors,
        }


def auto_name(prefix):
    """Keras-style unique names: `repopt_sgd`, `repopt_sgd_1`, ..."""
    uid = keras.backend.get_uid(prefix)
    return prefix if uid == 1 else f"{prefix}_{uid - 1}"
