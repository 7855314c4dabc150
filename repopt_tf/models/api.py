"""The entry points that dispatch to a model's family: `build_model`,
`block_convs`, `extract_scales`, `reinitialize` and `fuse_repvgg`.

A model's family is found from its `identity` (`repopt_tf.models.identity`,
saved with the model) in the registry (`repopt_tf.models.registry`); a
model of no family is handled by `ConvBlocks` on the blocks a
`layer_pattern` names.
"""

from repopt_tf.models.blocks import BLOCK_CONV
from repopt_tf.models.family import ConvBlocks
from repopt_tf.models.registry import family_of
from repopt_tf.models.registry import variant_of

# What reads a weights file into a model: `repopt_tf.checkpoints` (which
# depends on this module) plugs its `load_weights` in when imported.
_weights_loader = None


def set_weights_loader(loader):
    """Sets the function `build_model(weights=...)` calls as
    `loader(model, path)` (`repopt_tf.checkpoints.load_weights`)."""
    global _weights_loader
    _weights_loader = loader


def block_handler(model, layer_pattern=None):
    """The block handler for `model`: `ConvBlocks(layer_pattern)` when a
    pattern is given, else its family's, else `ConvBlocks(BLOCK_CONV)`."""
    if layer_pattern is not None:
        return ConvBlocks(layer_pattern)
    family, _ = variant_of(model)
    return family or ConvBlocks(BLOCK_CONV)


def build_model(
    name,
    num_classes=1000,
    input_shape=(224, 224, 3),
    kind="plain",
    include_preprocessing=True,
    mean=None,
    std=None,
    rpg_dof=None,
    rpg_mode="signed_permutation",
    rpg_seed=0,
    weights=None,
    rpg_scheme="window",
    rpg_size=None,
):
    """Builds a variant of any registered family (`list_models()`).

    Every model takes raw 0-255 pixels (`x / 255`, then `(x - mean) / std`
    inside the model, so an exported int8 model does too) and returns logits
    from a `Dense` layer named `classifier`. The model carries what it is in
    its config (`model.identity`: family, variant, kind, classes, input shape,
    preprocessing statistics), saved with it, so renaming it changes nothing.

    Args:
        name: one of `list_models()`.
        num_classes: classifier width (logits, no softmax).
        input_shape: `(H, W, C)` of raw 0-255 pixels.
        kind: `"plain"` (RepOpt target / plain net), `"hs"` (hyper-search
            CSLA model), `"repvgg"` (multi-branch training form; for
            RepOpt-GhostNet also `"repghost"`, the same), `"deploy"` (fused
            multi-branch form: conv with bias, no BN).
        include_preprocessing: put `x / 255` and `(x - mean) / std` inside
            the model.
        mean: per-channel means in [0, 1] pixel units; default ImageNet's
            for 3 channels, Fashion-MNIST's for 1 channel.
        std: per-channel standard deviations, as `mean`.
        rpg_dof: with kind "plain", generate the blocks' 3x3 kernels from
            one shared ring (Recurrent Parameter Generators) of
            `round(rpg_dof * T)` entries, T the generated weights.
        rpg_mode: the ring's mode (see `repopt_tf.models.rpg`).
        rpg_seed: the seed of the ring's indices, signs and init.
        weights: a file to load (Keras applications' convention): the
            authors' or timm's PyTorch checkpoint of this variant and kind
            (`.pth` or `.safetensors`, read without torch), a `.keras` model or
            `.weights.h5` (`load_weights`).
        rpg_scheme: "window" (the paper's text: contiguous windows, He
            fan-in gains, the stem on the ring) or "authors" (the authors'
            code: one global shuffled multiset, their init and fan-out
            gains, the stem off the ring); `repopt_tf.models.rpg`.
        rpg_size: the ring's entries instead of `rpg_dof` (above T: no
            sharing, "authors" scheme only).

    Returns:
        A functional `keras.Model` (a `RepOptModel`).

    Raises:
        ValueError: an unknown variant or kind, mean/std of the wrong length,
            RPG options on a family or kind without rings, or a weights file
            that does not fit (naming what does not).

    Examples:
        >>> from repopt_tf import build_model
        >>> model = build_model("repopt_vgg_tiny", 10, (32, 32, 3))
        >>> model.output_shape, model.identity["kind"]
        ((None, 10), 'plain')
        >>> build_model("repopt_vgg_tiny", 10, (32, 32, 3), kind="hs").name
        'repopt_vgg_tiny_hs'

    References:
        Ding et al., 2023 (RepOpt-VGG), https://arxiv.org/abs/2205.15242;
        Ding et al., 2021 (RepVGG), https://arxiv.org/abs/2101.03697;
        Wang et al., 2023 (RPG), https://arxiv.org/abs/2107.07110.
    """
    family = family_of(name)
    if kind not in family.kinds:
        raise ValueError(f"kind must be one of {family.kinds}, got {kind!r}.")
    options = dict(
        include_preprocessing=include_preprocessing, mean=mean, std=std
    )
    if rpg_dof is not None or rpg_size:
        options.update(
            rpg_dof=rpg_dof,
            rpg_mode=rpg_mode,
            rpg_seed=rpg_seed,
            rpg_scheme=rpg_scheme,
            rpg_size=rpg_size,
        )
    model = family.build(name, num_classes, tuple(input_shape), kind, **options)
    if weights is not None:
        _weights_loader(model, weights)
    return model


def block_convs(model, layer_pattern=None):
    """The re-parameterised convs of `model` in model order (its family's,
    or the 3x3 convs whose names fully match `layer_pattern`)."""
    return block_handler(model, layer_pattern).block_convs(model)


def extract_scales(hs_model, layer_pattern=None):
    """The trained scales of a hyper-search model, in `load_scales` format.

    A hyper-search (HS) model trains the CSLA form
    `s * conv3x3(x) + t * conv1x1(x) (+ gamma * x)` with trainable per-channel
    scales; after the search these scales define the Grad Mults of the target
    model (`grad_mults_for_model`) and its initial kernels (`reinitialize`).

    Args:
        hs_model: a model built with `kind="hs"`, or `csla_form(model,
            layer_pattern)` of your own network.
        layer_pattern: regex (full match) of the block convs, for a model of
            no registered family.

    Returns:
        `[{"conv": s, "1x1": t or None, "identity": gamma or None}, ...]`, one
        dict of float32 vectors per block, in model order.

    Raises:
        ValueError: the model has no trainable scales (not a hyper-search
            model), or the pattern matches no conv.

    Examples:
        >>> from repopt_tf import build_model, extract_scales
        >>> hs = build_model("repopt_vgg_tiny", 10, (32, 32, 3), kind="hs")
        >>> blocks = extract_scales(hs)
        >>> len(blocks), sorted(blocks[1]), blocks[0]["identity"] is None
        (6, ['1x1', 'conv', 'identity'], True)

    References:
        Ding et al., 2023, Sec. 3.3 (hyper-search),
        https://arxiv.org/abs/2205.15242.
    """
    return block_handler(hs_model, layer_pattern).extract_scales(hs_model)


def reinitialize(
    model, blocks, use_identity_scales=True, seed=None, layer_pattern=None
):
    """Sets every block kernel of a plain model by the Rule of Initialization.

    The rule (Ding et al., Eq. 4): the target's kernel starts as the CSLA
    block's equivalent kernel, `W'(0) = merge(s * W3, t * W1, gamma * I)`,
    with `W3`, `W1` drawn like PyTorch's default conv init,
    U(+-1/sqrt(fan_in)), merged at the 3x3 centre tap.

    Args:
        model: a `kind="plain"` model, or any model whose 3x3 convs matching
            `layer_pattern` are its RepOpt blocks.
        blocks: scales in `load_scales` format, one per block.
        use_identity_scales: add the searched identity scale on the identity
            tap (the official code's default) instead of 1.
        seed: for the random branch kernels.
        layer_pattern: regex (full match) of the block convs' names.

    Returns:
        None; the kernels are assigned in place. Warns when the model's BN
        gammas are not all 1: reinitialising a trained model throws its
        training away (fine-tuning should skip this).

    Raises:
        ValueError: the scales do not fit the blocks (count, width, identity).

    Examples:
        >>> from repopt_tf import build_model, extract_scales, reinitialize
        >>> blocks = extract_scales(build_model("repopt_vgg_tiny", 10, (32, 32, 3), kind="hs"))
        >>> plain = build_model("repopt_vgg_tiny", 10, (32, 32, 3))
        >>> reinitialize(plain, blocks, seed=0)
        >>> kernel = plain.get_layer("stage2_block1_conv").kernel.numpy()
        >>> bool(abs(kernel[1, 1, 0, 0]) > abs(kernel[0, 0, 0, 0]))  # + identity
        True

    References:
        Ding et al., 2023, Sec. 3.2, Eq. 4, https://arxiv.org/abs/2205.15242.
    """
    block_handler(model, layer_pattern).reinitialize(
        model, blocks, use_identity_scales, seed
    )


def fuse_repvgg(model):
    """Returns the deploy (`kind="deploy"`) twin of a multi-branch model.

    Structural re-parameterization (RepVGG): each branch's BN folds into its
    conv, the 1x1 kernel and the identity land on the 3x3 centre tap, and the
    biases add, so the deploy model computes the same function (in inference
    mode) with one 3x3 conv per block.

    Args:
        model: a model built with `kind="repvgg"` (or a family's own
            multi-branch kind, e.g. `"repghost"`).

    Returns:
        A new `kind="deploy"` model with the folded weights.

    Raises:
        ValueError: the model is not a multi-branch model of a registered
            family.

    Examples:
        >>> import numpy as np
        >>> from repopt_tf import build_model, fuse_repvgg
        >>> repvgg = build_model("repopt_vgg_tiny", 10, (32, 32, 3), kind="repvgg")
        >>> deploy = fuse_repvgg(repvgg)
        >>> x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3))
        >>> bool(np.allclose(deploy(x), repvgg(x), atol=1e-4))
        True

    References:
        Ding et al., 2021, "RepVGG: Making VGG-style ConvNets Great Again",
        https://arxiv.org/abs/2101.03697.
    """
    family, variant = variant_of(model)
    if family is None:
        raise ValueError(
            f"fuse_repvgg expects a model built with kind='repvgg', got "
            f"{model.name!r}."
        )
    return family.fuse(model, variant)
