"""The registry of model families.

A family (`repopt_tf.models.family.ModelFamily`) registers itself with
`register_family`, timm's `@register_model` pattern: the built-in families
do so in their folders (`repopt_tf.models.repopt_vgg`,
`repopt_tf.models.repopt_ghostnet`), a user's in their own module. Every
part of the library that depends on a family (model building, checkpoint
layouts, scale files, configs, training) iterates `FAMILIES`, so adding one
edits no library file.
"""

from repopt_tf.models.identity import identity_of

FAMILIES = {}


def register_family(family):
    """Adds a model family to the registry.

    Args:
        family: a `ModelFamily` instance, or a subclass (then used as a class
            decorator: it is instantiated with no arguments).

    Returns:
        What was passed (the instance, or the class).

    Raises:
        ValueError: another family has the same name or one of its variants.

    Examples:
        >>> from repopt_tf.models.registry import FAMILIES
        >>> sorted(FAMILIES)
        ['repopt_ghostnet', 'repopt_vgg']

    References:
        timm's `@register_model`, the pattern followed here:
        https://github.com/huggingface/pytorch-image-models
        (`timm/models/_registry.py`); a whole family registered from
        outside the package: tests/third_family.py.
    """
    instance = family() if isinstance(family, type) else family
    if not instance.name or not instance.variants:
        raise ValueError(
            f"{type(instance).__name__} needs a name and variants."
        )
    known = FAMILIES.get(instance.name)
    if known is not None and type(known) is not type(instance):
        raise ValueError(f"A family named {instance.name!r} is registered.")
    for other in FAMILIES.values():
        shared = set(other.variants) & set(instance.variants)
        if other.name != instance.name and shared:
            raise ValueError(
                f"{instance.name} and {other.name} both have the variants "
                f"{', '.join(sorted(shared))}."
            )
    FAMILIES[instance.name] = instance
    return family


def list_models():
    """Names accepted by `build_model`, over every registered family.

    Returns:
        A sorted list of variant names (`repopt_vgg_*`, `repvgg_*`,
        `repopt_ghostnet_*`, and any family registered with
        `register_family`).

    Examples:
        >>> from repopt_tf import list_models
        >>> "repopt_vgg_b1" in list_models(), "repopt_ghostnet_0_5x" in list_models()
        (True, True)

    References:
        Ding et al., 2023, Table 1 (the RepOpt-VGG variants),
        https://arxiv.org/abs/2205.15242.
    """
    return sorted(
        name for family in FAMILIES.values() for name in family.variants
    )


def family_of(variant):
    """The family whose variant table has `variant`."""
    for family in FAMILIES.values():
        if variant in family.variants:
            return family
    raise ValueError(
        f"Unknown model {variant!r}. Available: {', '.join(list_models())}."
    )


def family_named(config_name):
    """The family whose `config_name` (train.py's name for it) is given."""
    names = {f.config_name: f for f in FAMILIES.values() if f.config_name}
    if config_name not in names:
        raise ValueError(
            f"Unknown model family {config_name!r}; registered: "
            f"{', '.join(sorted(names))}."
        )
    return names[config_name]


def variant_of(model):
    """`(family, variant)` of a model built by `build_model` (its
    `identity`; `repopt_tf.models.identity`), else `(None, None)`."""
    identity = model_identity(model)
    if identity is None or identity["family"] not in FAMILIES:
        return None, None
    return FAMILIES[identity["family"]], identity["variant"]


def model_identity(model):
    """`identity_of(model)` over the registered families' variants."""
    variants = {
        variant: family.name
        for family in FAMILIES.values()
        for variant in family.variants
    }
    return identity_of(model, variants)


def registered_layouts():
    """Every registered family's state-dict layouts, in registration order
    (within a family, its own order: most specific first)."""
    return tuple(
        layout for family in FAMILIES.values() for layout in family.layouts
    )
