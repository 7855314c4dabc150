"""timm's RepVGG state-dict layout (`.safetensors` from the Hugging Face
hub, or `.pth`), mapped onto our models.

`TIMM_REPVGG` (timm `byobnet.py`, `repvgg_a0` ... `repvgg_b3g4`): the
stem `stem`, block i of stage N `stages.{N-1}.{i}` (our
`stage{N}_block{i}`), the head `head.fc`. Training form (kind repvgg):
`conv_kxk.conv/bn`, `conv_1x1.conv/bn`, `identity` (a BN); after
timm's `reparameterize()` (kind deploy): `reparam_conv`. These are the
authors' RepVGG modules under other names, so the architecture is read
the same way (`layouts.describe_state` of the renamed keys).
`repvgg_d2se` is refused: its SE sits before the ReLU at C/16, where
RepOpt-VGG's (`repopt_vgg_l2_se`) sits after it at C/4.
"""

from repopt_tf.models.repopt_vgg.layouts import HEAD
from repopt_tf.models.repopt_vgg.layouts import RepOptVGGLayout
from repopt_tf.models.state_dict_layout import Form

_RENAMES = {  # timm module -> the authors' RepVGG module
    "conv_kxk": "rbr_dense",
    "conv_1x1": "rbr_1x1",
    "identity": "rbr_identity",
    "reparam_conv": "rbr_reparam",
}


def reference_key(key):
    """A timm RepVGG key under the authors' RepVGG names."""
    parts = key.split(".")
    if parts[0] == "stem":
        parts = ["stage0", *parts[1:]]
    elif parts[0] == "stages" and len(parts) > 2 and parts[1].isdigit():
        parts = [f"stage{int(parts[1]) + 1}", *parts[2:]]
    elif parts[:2] == ["head", "fc"]:
        parts = [HEAD, *parts[2:]]
    return ".".join(_RENAMES.get(part, part) for part in parts)


def _reference(state):
    return {reference_key(key): value for key, value in state.items()}


class TimmRepVGGLayout(RepOptVGGLayout):
    """timm's RepVGG (module docstring)."""

    forms = (
        Form(
            "timm_repvgg_deploy",
            "deploy",
            "timm RepVGG reparameterized form (reparam_conv)",
            {"conv": "reparam_conv"},
            "reparam_conv",
        ),
        Form(
            "timm_repvgg_train",
            "repvgg",
            "timm RepVGG training form (conv_kxk/conv_1x1)",
            {
                "conv": "conv_kxk.conv",
                "bn": "conv_kxk.bn",
                "conv1x1": "conv_1x1.conv",
                "bn1x1": "conv_1x1.bn",
                "bn_identity": "identity",
            },
            "conv_kxk",
        ),
    )
    head = "head.fc"

    def recognizes(self, state):
        return any(
            key.startswith(("stem.conv_kxk.", "stem.reparam_conv."))
            for key in state
        )

    def detect_form(self, state, source="state dict"):
        if any(".attn." in key for key in state):
            raise ValueError(
                f"{source} is timm's RepVGG with SE blocks (repvgg_d2se: SE "
                "before the ReLU, C/16 channels), which is not in this "
                "library's family: RepOpt-VGG's SE (repopt_vgg_l2_se) sits "
                "after the ReLU at C/4. Use a RepVGG without SE (repvgg_a0 "
                "... repvgg_b3g4)."
            )
        return super().detect_form(state, source)

    def module(self, layer_name, form, model):
        module = super().module(layer_name, form, model)
        if module is None:
            return None
        stage, _, rest = module.partition(".")
        if stage == "stage0":
            return f"stem.{rest}"
        index, _, rest = rest.partition(".")
        return f"stages.{int(stage[5:]) - 1}.{index}.{rest}"

    def num_classes(self, state):
        return super().num_classes(_reference(state))

    def channels(self, state):
        return super().channels(_reference(state))

    def matching_variants(self, state):
        return super().matching_variants(_reference(state))

    def looks_like(self, state):
        return super().looks_like(_reference(state))

    def variant_prefix(self, form):
        return "repvgg_"


TIMM_REPVGG = TimmRepVGGLayout()
