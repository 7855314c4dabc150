"""Model-family handlers: what the runner and the optimizers ask of a model.

A RepOptimizer needs, for each family of models, the answers to four
questions (the reference's "handler"): which kernels are re-parameterised
(`block_convs`), what the trained scales of its hyper-search form are
(`extract_scales`), how a target model starts (`reinitialize`, the Rule of
Initialization) and what each kernel's Grad Mult is (`grad_mults`). A
`ModelFamily` adds its variant table, its builder and RepVGG-style fusion.
Families register themselves with `repopt_tf.models.registry`; a new one
is a folder (or a module) with a `ModelFamily` and a `register_family` call.

`ConvBlocks(layer_pattern)` answers the four questions for blocks whose
CSLA form is `s*conv3x3(x) (+ t*conv1x1(x)) (+ gamma*x)` on the 3x3 conv
layers whose names fully match `layer_pattern`: dense blocks on `Conv2D`s,
depthwise blocks `t*dwconv3x3(x) + s*x` on `DepthwiseConv2D`s
(`layer_types`; each family says which), and any user network's on both
(`csla_form`). A pattern
that matches no conv is an error, never an empty result. Scales are in
the format of `repopt_tf.scales.load_scales`: one dict per block, model
order, with keys `"conv"` (the 3x3 branch's scale), `"1x1"` (None without a
1x1 branch) and `"identity"` (None without one). A depthwise kernel
`(k, k, C, 1)` is handled in the grouped layout `(k, k, 1, C)` of
`repopt_tf.csla` (`repopt_tf.models.conv_layout`).
"""

import re
import warnings

import keras
import numpy as np

from repopt_tf.backend import to_numpy
from repopt_tf.csla import csla_grad_mult
from repopt_tf.csla import identity_fits
from repopt_tf.csla import merge_branches
from repopt_tf.models.blocks import BLOCK_CONV
from repopt_tf.models.blocks import csla_layer_name
from repopt_tf.models.conv_layout import conv_geometry
from repopt_tf.models.conv_layout import grouped_layout
from repopt_tf.models.conv_layout import variable_layout
from repopt_tf.models.fusion import fuse_into
from repopt_tf.models.fusion import has_branches
from repopt_tf.models.identity import num_classes_of
from repopt_tf.models.preprocessing import preprocessing_options

# The layers a user's network may point at: regular and depthwise 3x3 convs.
CONV_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def is_3x3_conv(layer, regex, layer_types=CONV_TYPES):
    """Whether `layer` is a 3x3 conv of `layer_types` whose name fully
    matches `regex`: the layers that Grad Mults, scales and CSLA forms
    attach to."""
    return (
        isinstance(layer, layer_types)
        and tuple(layer.kernel_size) == (3, 3)
        and re.fullmatch(regex, layer.name) is not None
    )


def can_carry_identity(layer):
    """`identity_fits` for a built conv layer."""
    in_channels, out_channels, groups = conv_geometry(layer)
    return identity_fits(in_channels * groups, out_channels, layer.strides)


def variant_spec(variants, name, family_label):
    """`variants[name]`, else a ValueError listing the family's variants."""
    if name not in variants:
        raise ValueError(
            f"Unknown {family_label} model {name!r}. Available: "
            f"{', '.join(sorted(variants))}."
        )
    return variants[name]


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
        to_numpy(layer.gamma)
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


def no_match_error(model, layer_pattern, layer_types=CONV_TYPES):
    """The ValueError for a pattern that names none of `model`'s convs."""
    names = "/".join(t.__name__ for t in layer_types)
    found = [
        layer.name
        for layer in iter_layers(model)
        if is_3x3_conv(layer, ".*", layer_types)
    ]
    return ValueError(
        f"No 3x3 {names} of {model.name} matches {layer_pattern!r}; its 3x3 "
        f"convs are: {', '.join(found) or 'none'}."
    )


class ConvBlocks:
    """RepOpt handling of 3x3 conv blocks named by `layer_pattern`."""

    def __init__(self, layer_pattern=BLOCK_CONV, layer_types=CONV_TYPES):
        self.layer_pattern = layer_pattern
        self.layer_types = layer_types

    def block_convs(self, model):
        """The block convs, in model order (maybe none)."""
        return [
            layer
            for layer in iter_layers(model)
            if is_3x3_conv(layer, self.layer_pattern, self.layer_types)
        ]

    def matched_convs(self, model):
        """`block_convs`, or `no_match_error` when there are none."""
        convs = self.block_convs(model)
        if not convs:
            raise no_match_error(model, self.layer_pattern, self.layer_types)
        return convs

    def extract_scales(self, hs_model):
        """Returns `[{"conv": s, "1x1": t or None, "identity": gamma or
        None}, ...]`."""
        layers = {layer.name: layer for layer in iter_layers(hs_model)}

        def scale(conv, part):
            layer = layers.get(csla_layer_name(conv.name, f"scale_{part}"))
            return (
                None
                if layer is None
                else to_numpy(layer.scale, np.float32).reshape(-1)
            )

        blocks = []
        for conv in self.matched_convs(hs_model):
            if scale(conv, "conv") is None:
                raise ValueError(
                    f"{hs_model.name} is not a hyper-search model: conv "
                    f"{conv.name} has no trainable scales "
                    f"({csla_layer_name(conv.name, 'scale_conv')}; build it "
                    "with kind='hs', or with csla_form for your own model)."
                )
            blocks.append(
                {
                    part: scale(conv, part)
                    for part in ("conv", "1x1", "identity")
                }
            )
        return blocks

    def pair(self, model, blocks):
        """`[(conv layer, scales), ...]` after checking that they fit.

        Raises:
            ValueError: naming the block, when the number of matched layers,
                a width, or the presence of an identity branch does not fit.
        """
        convs = self.matched_convs(model)
        if len(convs) != len(blocks):
            raise ValueError(
                f"The scales describe {len(blocks)} blocks but the model has "
                f"{len(convs)} 3x3 "
                f"{'/'.join(t.__name__ for t in self.layer_types)} layers "
                f"matching {self.layer_pattern!r}."
            )
        for index, (layer, block) in enumerate(zip(convs, blocks)):
            where = f"Block {index} (layer {layer.name!r})"
            in_channels, out_channels, groups = conv_geometry(layer)
            in_channels *= groups
            for key in ("conv", "1x1"):
                if key == "1x1" and block.get(key) is None:
                    continue
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
        mults = {}
        for layer, block in self.pair(model, blocks):
            in_channels, _, groups = conv_geometry(layer)
            mult = csla_grad_mult(
                block["conv"],
                block.get("1x1"),
                block.get("identity") is not None,
                in_channels,
                power,
                groups=groups,
            )
            mults[layer.kernel.path] = variable_layout(layer, mult)
        return mults

    def reinitialize(self, model, blocks, use_identity_scales=True, seed=None):
        """Rule of Initialization (Eq. 4): `W'(0) = merge(s*W3, t*W1, g)`,
        with W3 and W1 drawn like PyTorch's default conv init,
        U(+-1/sqrt(fan_in)), and `g` the searched identity scale (or 1).
        Without a 1x1 branch (depthwise blocks) `W'(0) = t*W + g*I`."""
        pairs = self.pair(model, blocks)
        check_untrained(model, "reinitialize()")
        init = keras.initializers.VarianceScaling(
            1.0 / 3.0, "fan_in", "uniform", seed=seed
        )
        for conv, scales in pairs:
            shape = grouped_layout(conv, conv.kernel).shape
            identity = scales.get("identity")
            if identity is not None and not use_identity_scales:
                identity = 1.0
            kernel = scales["conv"] * np.asarray(init(shape))
            kernel_1x1 = None
            if scales.get("1x1") is not None:
                kernel_1x1 = scales["1x1"] * np.asarray(
                    init((1, 1) + shape[2:])
                )
            kernel = merge_branches(kernel, kernel_1x1, identity)
            conv.kernel.assign(variable_layout(conv, kernel))


class ModelFamily(ConvBlocks):
    """A family of models: everything the library knows about it.

    Subclasses set `name` (saved in each model's identity), `label` (for
    people), `variants` (`{variant: spec}` with a `description`), `kinds`
    (the forms `build` makes) and `branch_kind`, and implement `build`;
    `fuse` folds the branch form into `"deploy"`. The block methods are
    `ConvBlocks` on the family's `layer_pattern` and `layer_types`. What the
    rest of the library reads from a family, so that none of it names one:

    - `layouts`: its reference state-dict layouts
      (`repopt_tf.models.state_dict_layout.Layout`), most specific first;
    - `scale_keys`: how its scales are named in the authors' files
      (`repopt_tf.models.scale_keys.ScaleKeys`), or None;
    - `config_name`, `configure(config)`: the family as a train.py config
      argument (`configs/quickstart.py:NAME`) and its defaults;
      `mode_prefix` and `mode_aliases` its single-stage modes
      (`configs/fashion_mnist.py:PREFIX_MODE`).

    A family is registered with `repopt_tf.models.registry.register_family`.
    """

    name = None
    label = None
    variants = {}
    kinds = ()
    # The structural multi-branch baseline's kind (`fuse` takes it).
    branch_kind = "repvgg"
    layouts = ()
    scale_keys = None
    config_name = None
    mode_prefix = ""
    mode_aliases = {}

    def configure(self, config):
        """Sets a train.py config to this family's default variant and
        recipe (`repopt_tf.configs.base`); the default keeps the config."""
        return config

    def build(self, variant, num_classes, input_shape, kind, **options):
        """A functional model of `variant` in form `kind` (see `build_model`)."""
        raise NotImplementedError

    def fuse(self, model, variant):
        """The deploy twin of `model`, a `variant` in the family's
        multi-branch training form (`branch_kind`)."""
        if not has_branches(model, self.block_convs(model)):
            raise ValueError(
                f"fuse_repvgg expects a model built with "
                f"kind={self.branch_kind!r}, got {model.name!r}."
            )
        deploy = self.build(
            variant,
            num_classes_of(model),
            model.input_shape[1:],
            "deploy",
            **preprocessing_options(model),
        )
        return fuse_into(model, deploy, self.block_convs(deploy))
