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
    rng = np.random.default_rng(seed)
    spec = VARIANTS[variant]
    state = {}

    def conv(key, cout, cin, size, bias=False, groups=1):
        bound = 1.0 / np.sqrt(cin // groups * size * size)
        state[f"{key}.weight"] = rng.uniform(
            -bound, bound, (cout, cin // groups, size, size)
        )
        if bias:
            state[f"{key}.bias"] = rng.uniform(-bound, bound, cout)

    def batch_norm(key, channels):
        state[f"{key}.weight"] = rng.uniform(0.5, 1.5, channels)
        state[f"{key}.bias"] = rng.uniform(-0.2, 0.2, channels)
        state[f"{key}.running_mean"] = rng.uniform(-0.2, 0.2, channels)
        state[f"{key}.running_var"] = rng.uniform(0.5, 1.5, channels)
        state[f"{key}.num_batches_tracked"] = np.array(100, np.int64)

    for (name, cin, cout, stride, _), groups in zip(
        block_plan(spec, in_channels), block_groups(spec)
    ):
        stage, index = (int(n) for n in name[len("stage") :].split("_block"))
        prefix = torch_block_prefix(stage, index)
        identity = identity_fits(cin, cout, stride)
        for part, module in form.modules.items():
            key = f"{prefix}.{module}"
            if part in _IDENTITY_PARTS and not identity:
                continue
            if part == "conv":
                conv(
                    key, cout, cin, 3, bias=form.kind == "deploy", groups=groups
                )
            elif part == "conv1x1":
                conv(key, cout, cin, 1, groups=groups)
            elif part.startswith("bn"):
                batch_norm(key, cout)
            elif part.startswith("scale"):
                state[f"{key}.weight"] = rng.uniform(0.2, 1.5, cout)
            elif spec.get("se") and part == "se_reduce":
                conv(key, cout // 4, cout, 1, bias=True)
            elif spec.get("se") and part == "se_expand":
                conv(key, cout, cout // 4, 1, bias=True)
    width = spec["widths"][-1]
    bound = 1.0 / np.sqrt(width)
    state[f"{HEAD}.weight"] = rng.uniform(-bound, bound, (num_classes, width))
    state[f"{HEAD}.bias"] = rng.uniform(-bound, bound, num_classes)
    return {
        k: v if v.dtype == np.int64 else v.astype(np.float32)
        for k, v in state.items()
    }


def _unknown(form):
    raise ValueError(
        f"Unknown form {form!r}; forms: {', '.join(f.name for f in FORMS)}."
    )
