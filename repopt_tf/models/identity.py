"""A model that knows what it is: `RepOptModel`, a functional `keras.Model`
whose `identity` (family, variant, kind, classes, input shape) is part of
its config, so it survives `.keras` save and load and a renamed model is
still recognised.

`identity_of(model)` reads it; for models saved before identities existed
(and only for those) it falls back to the old naming rule
`{variant}_{kind}` (`legacy_identity`).
"""

import keras

IDENTITY_KEYS = ("family", "variant", "kind", "num_classes", "input_shape")


@keras.saving.register_keras_serializable(package="repopt_tf")
class RepOptModel(keras.Model):
    """A functional model built by `build_model`, with its `identity`.

    Args:
        *args, **kwargs: `keras.Model(inputs, outputs, name=...)`'s.
        identity: `{family, variant, kind, num_classes, input_shape}`.

    Examples:
        >>> import keras
        >>> x = keras.Input((4,))
        >>> model = RepOptModel(x, keras.layers.Dense(2)(x), identity={
        ...     "family": "demo", "variant": "demo_s", "kind": "plain",
        ...     "num_classes": 2, "input_shape": [4]})
        >>> RepOptModel.from_config(model.get_config()).identity["variant"]
        'demo_s'
    """

    def __init__(self, *args, identity=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.identity = dict(identity) if identity else None

    def get_config(self):
        return {**super().get_config(), "identity": self.identity}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        identity = config.pop("identity", None)
        model = super().from_config(config, custom_objects)
        model.identity = identity
        return model


def make_identity(
    family, variant, kind, num_classes, input_shape, preprocessing=None
):
    """The identity dict a builder gives its model; `preprocessing` is the
    `preprocessing_stats` inside the model, or None without them."""
    return {
        "family": family,
        "variant": variant,
        "kind": kind,
        "num_classes": int(num_classes),
        "input_shape": [int(d) for d in input_shape],
        "preprocessing": preprocessing,
    }


def num_classes_of(model):
    """A model's class count: its identity's, else its `classifier`'s
    width (a model of no family, or saved before identities)."""
    identity = getattr(model, "identity", None) or {}
    if "num_classes" in identity:
        return identity["num_classes"]
    return model.get_layer("classifier").units


def with_identity(model, identity):
    """`model` as a `RepOptModel` carrying `identity` (the same layers and
    weights; a new functional wrapper when `model` is another class)."""
    if isinstance(model, RepOptModel):
        model.identity = dict(identity)
        return model
    return RepOptModel(
        model.inputs, model.outputs, name=model.name, identity=identity
    )


def identity_of(model, variants=None):
    """The identity of a model: its own, else (a model saved before
    identities existed) the one its name gives under the old rule, when
    `variants` (`{variant: family name}`) is given; else None."""
    identity = getattr(model, "identity", None)
    if identity:
        return identity
    return legacy_identity(model, variants or {})


def legacy_identity(model, variants):
    """`{family, variant, kind}` from a name `{variant}_{kind}` (the rule
    of files written before `RepOptModel`), longest variant first."""
    matches = [v for v in variants if model.name.startswith(f"{v}_")]
    if not matches:
        return None
    variant = max(matches, key=len)
    kind = model.name[len(variant) + 1 :]
    return {
        "family": variants[variant],
        "variant": variant,
        "kind": "plain" if kind.startswith("rpg") else kind,
    }
