"""Random state dicts in the reference layouts, at any variant's full size.

For tests and benchmarks on machines without the authors' files: the keys
and shapes that the reference code would save for a variant, in one `Form`,
filled like a torch model at init (conv U(+-1/sqrt(fan_in))) with random BN
statistics. Built from the variant table and the form's module paths, not
from a Keras model, so loading one checks the mapping independently.
"""

import numpy as np

from repopt_tf.csla import identity_fits
from repopt_tf.models.repopt_vgg.layouts import FORMS
from repopt_tf.models.repopt_vgg.layouts import HEAD
from repopt_tf.models.repopt_vgg.layouts import torch_block_prefix
from repopt_tf.models.repopt_vgg.model import VARIANTS
from repopt_tf.models.repopt_vgg.model import block_groups
from repopt_tf.models.repopt_vgg.model import block_plan

_IDENTITY_PARTS = ("bn_identity", "scale_identity")


def synthetic_state_dict(
    variant, form, num_classes=1000, in_channels=3, seed=0
):
    """`{key: float32 array}` as the reference would save `variant` in `form`."""
    form = next((f for f in FORMS if f.name == form), None) or _unknown(form)
    spec = VARIANTS[variant]
    tensors = _RandomTensors(seed)
    for (name, cin, cout, stride, _), groups in zip(
        block_plan(spec, in_channels), block_groups(spec)
    ):
        stage, index = (int(n) for n in name[len("stage") :].split("_block"))
        prefix = torch_block_prefix(stage, index)
        identity = identity_fits(cin, cout, stride)
        for part, module in form.modules.items():
            if part in _IDENTITY_PARTS and not identity:
                continue
            key = f"{prefix}.{module}"
            if part == "conv":
                deploy = form.kind == "deploy"
                tensors.conv(key, cout, cin, 3, bias=deploy, groups=groups)
            elif part == "conv1x1":
                tensors.conv(key, cout, cin, 1, groups=groups)
            elif part.startswith("bn"):
                tensors.batch_norm(key, cout)
            elif part.startswith("scale"):
                tensors.uniform(f"{key}.weight", 0.2, 1.5, cout)
            elif spec.get("se") and part == "se_reduce":
                tensors.conv(key, cout // 4, cout, 1, bias=True)
            elif spec.get("se") and part == "se_expand":
                tensors.conv(key, cout, cout // 4, 1, bias=True)
    tensors.dense(HEAD, num_classes, spec["widths"][-1])
    return tensors.float32()


class _RandomTensors:
    """A PyTorch-style state dict filled from one seeded generator, in the
    order the tensors are asked for."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.state = {}

    def uniform(self, name, low, high, shape):
        """Tensor `name`, uniform in [low, high)."""
        self.state[name] = self.rng.uniform(low, high, shape)

    def conv(self, key, cout, cin, size, bias=False, groups=1):
        """A conv's `weight` (OIHW) and optional `bias`, PyTorch's bound."""
        bound = 1.0 / np.sqrt(cin // groups * size * size)
        shape = (cout, cin // groups, size, size)
        self.uniform(f"{key}.weight", -bound, bound, shape)
        if bias:
            self.uniform(f"{key}.bias", -bound, bound, cout)

    def batch_norm(self, key, channels):
        """A BN's affine parameters and running statistics."""
        for name, low, high in (
            ("weight", 0.5, 1.5),
            ("bias", -0.2, 0.2),
            ("running_mean", -0.2, 0.2),
            ("running_var", 0.5, 1.5),
        ):
            self.uniform(f"{key}.{name}", low, high, channels)
        self.state[f"{key}.num_batches_tracked"] = np.array(100, np.int64)

    def dense(self, key, units, width):
        """A Linear layer's `weight` and `bias`."""
        bound = 1.0 / np.sqrt(width)
        self.uniform(f"{key}.weight", -bound, bound, (units, width))
        self.uniform(f"{key}.bias", -bound, bound, units)

    def float32(self):
        """The state dict, float tensors as float32 (counters stay int64)."""
        return {
            k: v if v.dtype == np.int64 else v.astype(np.float32)
            for k, v in self.state.items()
        }


def _unknown(form):
    raise ValueError(
        f"Unknown form {form!r}; forms: {', '.join(f.name for f in FORMS)}."
    )
