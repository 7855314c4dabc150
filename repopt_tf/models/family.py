"""Model-family handlers: what the runner and the optimizers ask of a model.

A RepOptimizer needs, for each family of models, the answers to four
questions (the reference's "handler"): which kernels are re-parameterised
(`block_convs`), what the trained scales of its hyper-search form are
(`extract_scales`), how a target model starts (`reinitialize`, the Rule of
Initialization) and what each kernel's Grad Mult is (`grad_mults`). A
`ModelFamily` adds its variant table, its builder and RepVGG-style fusion.
Families are listed in `repopt_tf.models.registry`; a new one is a module
with a `ModelFamily` and a line there.

`ConvBlocks(layer_pattern)` answers the four questions for blocks whose
CSLA form is `s*conv3x3(x) + t*conv1x1(x) (+ gamma*x)` on the 3x3 `Conv2D`
layers whose names fully match `layer_pattern`: RepOpt-VGG's blocks and any
user network's (`csla_form`). Scales are in the format of
`repopt_tf.scales.load_scales`: one dict per block, model order, with keys
`"conv"` (s), `"1x1"` (t) and `"identity"` (gamma, or None without one).
"""

import re
import warnings

import keras
import numpy as np

from repopt_tf.csla import csla_grad_mult
from repopt_tf.csla import identity_fits
from repopt_tf.csla import merge_branches
from repopt_tf.models.blocks import BLOCK_CONV
from repopt_tf.models.blocks import csla_layer_name


def is_3x3_conv(layer, regex):
    """Whether `layer` is a 3x3 `Conv2D` whose name fully matches `regex`:
    the layers that Grad Mults, scales and CSLA forms attach to."""
    return (
        isinstance(layer, keras.layers.Conv2D)
        and tuple(layer.kernel_size) == (3, 3)
        and re.fullmatch(regex, layer.name) is not None
    )


def can_carry_identity(layer):
    """`identity_fits` for a built conv layer."""
    return identity_fits(
        layer.kernel.shape[2], layer.kernel.shape[3], layer.strides
    )


def iter_layers(model):
    """The leaf layers of `model`, nested models flattened, in model order."""
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from iter_layers(layer)
        else:
            yield layer


def check_untrained(model, what):
    """Warns when a model's BN gammas are not all 1 (it looks trained)."""
    gammas = [
        np.asarray(layer.gamma)
        for layer in iter_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
        and layer.gamma is not None
    ]
    if gammas and not all(np.all(g == 1.0) for g in gammas):
        warnings.warn(
            f"{what}: BatchNorm gammas are not all 1, so this model looks "
            "trained; the Rule of Initialization overwrites its kernels. "
            "Skip reinitialisation when fine-tuning.",
            stacklevel=3,
        )


class ConvBlocks:
    """RepOpt handling of 3x3 conv blocks named by `layer_pattern`."""

    def __init__(self, layer_pattern=BLOCK_CONV):
        self.layer_pattern = layer_pattern

    def block_convs(self, model):
        """The block convs, in model order."""
        return [
            layer
            for layer in iter_layers(model)
            if is_3x3_conv(layer, self.layer_pattern)
        ]

    def extract_scales(self, hs_model):
        """Returns `[{"conv": s, "1x1": t, "identity": gamma or None}, ...]`."""
        layers = {layer.name: layer for layer in iter_layers(hs_model)}
        blocks = []
        for conv in self.block_convs(hs_model):
            names = {
                part: csla_layer_name(conv.name, f"scale_{part}")
                for part in ("conv", "1x1", "identity")
            }
            if names["conv"] not in layers or names["1x1"] not in layers:
                raise ValueError(
                    f"{hs_model.name} is not a hyper-search model: conv "
                    f"{conv.name} has no trainable scales ({names['conv']}; "
                    "build it with kind='hs', or with csla_form for your own "
                    "model)."
                )
            identity = layers.get(names["identity"])
            blocks.append(
                {
                    "conv": np.asarray(layers[names["conv"]].scale, np.float32),
                    "1x1": np.asarray(layers[names["1x1"]].scale, np.float32),
                    "identity": None
                    if identity is None
                    else np.asarray(identity.scale).reshape(-1),
                }
            )
        return blocks

    def pair(self, model, blocks):
        """`[(conv layer, scales), ...]` after checking that they fit.

        Raises:
            ValueError: naming the block, when the number of matched layers,
                a width, or the presence of an identity branch does not fit.
        """
        convs = self.block_convs(model)
        if len(convs) != len(blocks):
            raise ValueError(
                f"The scales describe {len(blocks)} blocks but the model has "
                f"{len(convs)} 3x3 Conv2D layers matching "
                f"{self.layer_pattern!r}."
            )
        for index, (layer, block) in enumerate(zip(convs, blocks)):
            where = f"Block {index} (layer {layer.name!r})"
            in_channels, out_channels = layer.kernel.shape[2:]
            for key in ("conv", "1x1"):
                width = np.asarray(block[key]).size
                if width != out_channels:
                    raise ValueError(
                        f"{where}: scale {key!r} has {width} channels, the "
                        f"layer has {out_channels} output channels."
                    )
            has_identity = block.get("identity") is not None
            if has_identity and not can_carry_identity(layer):
                raise ValueError(
                    f"{where}: the scales have an identity branch but the "
                    f"layer maps {in_channels}->{out_channels} channels with "
                    f"strides {tuple(layer.strides)}."
                )
            if can_carry_identity(layer) and not has_identity:
                raise ValueError(
                    f"{where}: the layer can carry an identity branch "
                    f"({in_channels}->{out_channels}, stride 1) but its "
                    "scales have none; the scales were searched for another "
                    "topology."
                )
        return list(zip(convs, blocks))

    def grad_mults(self, model, blocks, power=2):
        """`{kernel.path: M}`, `M = merge(s**p, t**p, 1)` (`repopt_tf.csla`)."""
        return {
            layer.kernel.path: csla_grad_mult(
                block["conv"],
                block["1x1"],
                block.get("identity") is not None,
                layer.kernel.shape[2],
                power,
            )
            for layer, block in self.pair(model, blocks)
        }

    def reinitialize(self, model, blocks, use_identity_scales=True, seed=None):
        """Rule of Initialization (Eq. 4): `W'(0) = merge(s*W3, t*W1, g)`,
        with W3 and W1 drawn like PyTorch's default conv init,
        U(+-1/sqrt(fan_in)), and `g` the searched identity scale (or 1)."""
        pairs = self.pair(model, blocks)
        check_untrained(model, "reinitialize()")
        init = keras.initializers.VarianceScaling(
            1.0 / 3.0, "fan_in", "uniform", seed=seed
        )
        for conv, scales in pairs:
            shape = tuple(conv.kernel.shape)
            identity = scales.get("identity")
            if identity is not None and not use_identity_scales:
                identity = 1.0
            kernel = merge_branches(
                scales["conv"] * np.asarray(init(shape)),
                scales["1x1"] * np.asarray(init((1, 1) + shape[2:])),
                identity,
            )
            conv.kernel.assign(kernel)


class ModelFamily(ConvBlocks):
    """A family of models: its variant table, builder and block handling.

    Subclasses set `name`, `variants` (`{variant: spec}` with a
    `description`) and `kinds` (the forms `build` makes), and implement
    `build` and `fuse`. The block methods default to `ConvBlocks` on the
    family's `layer_pattern`; a family with other blocks overrides them.
    """

    name = None
    variants = {}
    kinds = ()

    def build(self, variant, num_classes, input_shape, kind, **options):
        """A functional model of `variant` in form `kind` (see `build_model`)."""
        raise NotImplementedError

    def fuse(self, model, variant):
        """The deploy twin of `model`, a `variant` in the family's
        multi-branch training form."""
        raise NotImplementedError
