"""The reference RepOpt-GhostNet / RepGhostNet state-dict layouts
(`GHOSTNET`), mapped onto `repopt_tf.models.repopt_ghostnet` models.

DingXiaoH/RepOptimizers `repoptghostnet_model.py` saves, for modes `target`,
`hs` and `rep`: `conv_stem`, `bn1`; per bottleneck `blocks.{i}.{j}` (our
`stage{i+1}_block{j}`) the ghost modules `ghostK` with `primary_conv.0`
(1x1) and `.1` (BN) and `cheap_operation.0` (the depthwise conv), then

- `ghost_target` (kind plain): `final_bn`;
- `ghost_hs` (kind hs): `cheap_operation.1` (scale t), `fusion_scale` (s),
  `final_bn`;
- `ghost_rep` (kind repghost, RepGhostNet): `cheap_operation.1` (BN),
  `fusion_bn`;

and `conv_dw` / `bn_dw` (stride 2), `se.conv_reduce` / `se.conv_expand`,
`shortcut.0`-`.3` (depthwise, BN, 1x1, BN); the last `blocks.{n}.0.conv` /
`.bn1` (our `expand_*`), `conv_head` and `classifier`.
"""

import re

from repopt_tf.models.repopt_ghostnet.model import VARIANTS
from repopt_tf.models.repopt_ghostnet.model import bottleneck_plan
from repopt_tf.models.state_dict_layout import Form
from repopt_tf.models.state_dict_layout import Layout

HEAD = "classifier"
FORMS = (
    Form(
        "ghost_rep",
        "repghost",
        "RepGhostNet form (fusion_bn)",
        {"bn": "cheap_operation.1", "bn_identity": "fusion_bn"},
        "fusion_bn",
    ),
    Form(
        "ghost_hs",
        "hs",
        "RepOpt-GhostNet hyper-search form (fusion_scale)",
        {
            "bn": "final_bn",
            "scale_conv": "cheap_operation.1",
            "scale_identity": "fusion_scale",
        },
        "fusion_scale",
    ),
    Form(
        "ghost_target",
        "plain",
        "RepOpt-GhostNet target form (final_bn)",
        {"bn": "final_bn"},
        "final_bn",
    ),
)
_MODULE_PARTS = {
    "primary_conv": "primary_conv.0",
    "primary_bn": "primary_conv.1",
    "conv": "cheap_operation.0",
}
_BOTTLENECK_PARTS = {
    "dw": "conv_dw",
    "dw_bn": "bn_dw",
    "se_reduce": "se.conv_reduce",
    "se_expand": "se.conv_expand",
    "shortcut_dw": "shortcut.0",
    "shortcut_dw_bn": "shortcut.1",
    "shortcut_conv": "shortcut.2",
    "shortcut_bn": "shortcut.3",
}
_FIXED = {"stem_conv": "conv_stem", "stem_bn": "bn1", "head_conv": "conv_head"}
_LAYER = re.compile(r"stage(\d+)_block(\d+)_(?:(ghost\d)_)?(\w+)")
_PRIMARY = re.compile(
    r"blocks\.(\d+)\.(\d+)\.ghost([12])\.primary_conv\.0\.weight"
)


def _widths(state):
    """`[(mid, out), ...]` per bottleneck, from the primary 1x1 convs."""
    found = {}
    for key, value in state.items():
        match = _PRIMARY.fullmatch(key)
        if match:
            stage, index, module = (int(n) for n in match.groups())
            found[stage, index, module] = int(value.shape[0])
    bottlenecks = sorted({key[:2] for key in found})
    return [
        (found.get((*b, 1)), found.get((*b, 2))) for b in bottlenecks
    ], bottlenecks


class RepOptGhostNetLayout(Layout):
    """RepOpt-GhostNet and RepGhostNet checkpoints (module docstring)."""

    forms = FORMS
    head = HEAD

    def recognizes(self, state):
        return "conv_stem.weight" in state or any(
            ".ghost1." in key for key in state
        )

    def module(self, layer_name, form, model):
        if layer_name in _FIXED:
            return _FIXED[layer_name]
        if layer_name in ("expand_conv", "expand_bn"):
            # blocks.{n}.0 after the n bottleneck stages (our stage1..n).
            stages = max(
                int(match.group(1))
                for layer in model.layers
                if (match := _LAYER.fullmatch(layer.name))
            )
            part = "conv" if layer_name == "expand_conv" else "bn1"
            return f"blocks.{stages}.0.{part}"
        match = _LAYER.fullmatch(layer_name)
        if match is None:
            return None
        stage, index, ghost, part = match.groups()
        prefix = f"blocks.{int(stage) - 1}.{index}"
        if ghost is None:
            module = _BOTTLENECK_PARTS.get(part)
        else:
            module = _MODULE_PARTS.get(part) or form.modules.get(part)
            module = module and f"{ghost}.{module}"
        return module and f"{prefix}.{module}"

    def num_classes(self, state):
        head = state.get(f"{HEAD}.weight")
        return None if head is None else int(head.shape[0])

    def channels(self, state):
        stem = state.get("conv_stem.weight")
        return None if stem is None else int(stem.shape[1])

    def matching_variants(self, state):
        widths, bottlenecks = _widths(state)
        matches = []
        for name, spec in sorted(VARIANTS.items()):
            plan = list(bottleneck_plan(spec))
            positions = [
                (stage - 1, index)
                for stage, index in (
                    map(int, row[0][5:].split("_block")) for row in plan
                )
            ]
            if positions == bottlenecks and widths == [
                (row[2], row[3]) for row in plan
            ]:
                matches.append(name)
        return matches

    def looks_like(self, state):
        widths, bottlenecks = _widths(state)
        names = self.matching_variants(state)
        text = (
            f"{len(bottlenecks)} ghost bottlenecks, widths "
            f"{[out for _, out in widths]}"
        )
        if names:
            return f"{' / '.join(names)} ({text})"
        return f"no variant in the table ({text})"

    def variant_prefix(self, form):
        return "repopt_ghostnet_"


GHOSTNET = RepOptGhostNetLayout()
