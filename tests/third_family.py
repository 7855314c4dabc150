"""A third model family, written outside the library as a user would.

`TwoStage`: a plain two-stage net, `s{i}_conv` (3x3, stride 2) -> `s{i}_bn`
-> ReLU per stage, global pooling and a `classifier`. Its PyTorch twin
(`nn.Sequential` stages under `features`, a `head` Linear) saves the state
dict `features.{i}.0.weight` (conv), `features.{i}.1.*` (BN), `head.*`;
its hyper-search files name the scales `features.{i}.scale_{conv,1x1}`.
Importing this module registers the family; nothing in `repopt_tf` names
it (tests/test_third_family.py drives it end to end).
"""

import re

import keras

from repopt_tf.models.blocks import batch_norm
from repopt_tf.models.family import ModelFamily
from repopt_tf.models.identity import RepOptModel
from repopt_tf.models.identity import make_identity
from repopt_tf.models.preprocessing import image_input
from repopt_tf.models.registry import register_family
from repopt_tf.models.scale_keys import ScaleKeys
from repopt_tf.models.state_dict_layout import Form
from repopt_tf.models.state_dict_layout import Layout

VARIANTS = {
    "twostage_tiny": {"widths": (8, 16), "description": "2 stages, 8-16"},
    "twostage_wide": {"widths": (16, 32), "description": "2 stages, 16-32"},
}
PLAIN = Form(
    "twostage_plain",
    "plain",
    "TwoStage plain form (features.i.0/1)",
    {"conv": "0", "bn": "1"},
    "features",
)
_LAYER = re.compile(r"s(\d+)_(conv|bn)")


def build_twostage(variant, num_classes, input_shape, kind, **options):
    """The plain model of `variant` (only `kind="plain"` exists)."""
    inputs, x, stats = image_input(
        input_shape,
        options.get("include_preprocessing", True),
        options.get("mean"),
        options.get("std"),
    )
    for index, width in enumerate(VARIANTS[variant]["widths"]):
        x = keras.layers.ZeroPadding2D(1, name=f"s{index}_pad")(x)
        x = keras.layers.Conv2D(
            width, 3, strides=2, use_bias=False, name=f"s{index}_conv"
        )(x)
        x = keras.layers.ReLU(name=f"s{index}_relu")(
            batch_norm(f"s{index}_bn")(x)
        )
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(num_classes, name="classifier")(x)
    return RepOptModel(
        inputs,
        outputs,
        name=f"{variant}_{kind}",
        identity=make_identity(
            "twostage", variant, kind, num_classes, input_shape, stats
        ),
    )


class TwoStageLayout(Layout):
    """`features.{i}.0` conv, `features.{i}.1` BN, `head` Linear."""

    forms = (PLAIN,)
    head = "head"

    def recognizes(self, state):
        return any(key.startswith("features.") for key in state)

    def module(self, layer_name, form, model):
        match = _LAYER.fullmatch(layer_name)
        if match is None:
            return None
        stage, part = match.groups()
        return f"features.{stage}.{form.modules[part]}"

    def num_classes(self, state):
        head = state.get("head.weight")
        return None if head is None else int(head.shape[0])

    def channels(self, state):
        return int(state["features.0.0.weight"].shape[1])

    def widths(self, state):
        return tuple(
            int(value.shape[0])
            for key, value in sorted(state.items())
            if re.fullmatch(r"features\.\d+\.0\.weight", key)
        )

    def matching_variants(self, state):
        widths = self.widths(state)
        return [n for n, s in VARIANTS.items() if s["widths"] == widths]

    def looks_like(self, state):
        names = self.matching_variants(state) or ["no variant"]
        return f"{' / '.join(names)} (widths {self.widths(state)})"

    def variant_prefix(self, form):
        return "twostage_"


class TwoStage(ModelFamily):
    """The family: `ConvBlocks` on `s{i}_conv`, one layout, scale keys."""

    name = "twostage"
    label = "TwoStage"
    variants = VARIANTS
    kinds = ("plain",)
    layouts = (TwoStageLayout(),)
    scale_keys = ScaleKeys(
        pattern=r"features\.(\d+)\.scale_(?P<branch>conv|1x1)\.weight",
        branches={"conv": "conv", "1x1": "1x1"},
        required=frozenset({"conv", "1x1"}),
        block_label="features.{0}",
        example="features.i.scale_*.weight",
    )
    config_name = "twostage"
    mode_prefix = "two_"

    def __init__(self):
        super().__init__(r"s\d+_conv", (keras.layers.Conv2D,))

    def build(self, variant, num_classes, input_shape, kind, **options):
        return build_twostage(
            variant, num_classes, input_shape, kind, **options
        )

    def configure(self, config):
        config.model = "twostage_tiny"
        config.train.weight_decay = 1e-4
        return config


FAMILY = TwoStage()
register_family(FAMILY)
