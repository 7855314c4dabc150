"""A family's reference state-dict layout, declared beside its model.

A `Layout` (each family has its own in its folder: `ModelFamily.layouts`,
e.g. `repopt_tf.models.repopt_vgg.layouts.VGG`) says which state dicts it
reads (`recognizes`), their `Form` (`detect_form`), the torch module of each
Keras layer (`module`), and what the file describes (classes, input
channels, matching variants). `repopt_tf.checkpoints` reads the files and
copies them in (`load_state_dict` works on any layout).

Tensors convert by layer type: conv weights `(Cout, Cin, kh, kw)` ->
`(kh, kw, Cin, Cout)`, depthwise `(C, 1, kh, kw)` -> `(kh, kw, C, 1)`; BN
`weight, bias, running_mean, running_var` -> `gamma, beta, moving_mean,
moving_variance` (`num_batches_tracked` is ignored); Linear `(K, C)` ->
Dense `(C, K)`; scale vectors -> `ChannelScale`.
"""

import dataclasses

import keras
import numpy as np

from repopt_tf.models.blocks import ChannelScale


@dataclasses.dataclass(frozen=True)
class Form:
    name: str
    kind: str
    description: str
    modules: dict  # Keras layer part -> torch module path
    marker: str  # a module that only this form has


class Layout:
    """A family's state-dict layouts (module docstring). Subclasses set
    `forms`, `head` (the classifier's module) and `variant_prefix` (of the
    variants `model_from_checkpoint` prefers), and implement the methods."""

    forms = ()
    head = None

    def recognizes(self, state):
        raise NotImplementedError

    def module(self, layer_name, form, model):
        """The torch module path of Keras layer `layer_name` of `model`, or
        None."""
        raise NotImplementedError

    def num_classes(self, state):
        raise NotImplementedError

    def channels(self, state):
        raise NotImplementedError

    def matching_variants(self, state):
        raise NotImplementedError

    def looks_like(self, state):
        """A phrase naming the variant(s) the state dict has the shape of."""
        raise NotImplementedError

    def variant_prefix(self, form):
        raise NotImplementedError

    def detect_form(self, state, source="state dict"):
        """The `Form` of a state dict, from its module names (the first
        form, in `forms` order, whose marker module is present)."""
        modules = {part for key in state for part in key.split(".")}
        for form in self.forms:
            if form.marker in modules:
                return form
        raise ValueError(
            f"{source} is in no known {type(self).__name__} form; its first "
            f"keys: {', '.join(list(state)[:5])}."
        )

    def expected_keys(self, model, form, include_head=True):
        """`{torch key: (keras variable, converter)}` for `model` in `form`."""
        keys = {}
        for layer in model.layers:
            if not layer.weights:
                continue
            if layer.name == "classifier":
                if not include_head:
                    continue
                module = self.head
            else:
                module = self.module(layer.name, form, model)
            if module is None:
                raise ValueError(
                    f"Layer {layer.name} of {model.name} has no place in the "
                    f"{form.description} layout."
                )
            for key, variable, convert in variable_keys(layer, module):
                keys[key] = (variable, convert)
        return keys


def variable_keys(layer, module):
    """`[(torch key, keras variable, torch->keras converter)]` of one layer."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return [
            (f"{module}.weight", layer.gamma, _same),
            (f"{module}.bias", layer.beta, _same),
            (f"{module}.running_mean", layer.moving_mean, _same),
            (f"{module}.running_var", layer.moving_variance, _same),
        ]
    if isinstance(layer, ChannelScale):
        return [(f"{module}.weight", layer.scale, _reshape_like(layer.scale))]
    if isinstance(layer, keras.layers.Dense):
        pairs = [(f"{module}.weight", layer.kernel, np.transpose)]
    elif isinstance(layer, keras.layers.DepthwiseConv2D):
        pairs = [(f"{module}.weight", layer.kernel, _depthwise_kernel)]
    elif isinstance(layer, keras.layers.Conv2D):
        pairs = [(f"{module}.weight", layer.kernel, _conv_kernel)]
    else:
        raise ValueError(
            f"Layer {layer.name} ({type(layer).__name__}) has no PyTorch "
            "counterpart in the reference layouts (RPG models cannot load "
            ".pth weights)."
        )
    if layer.use_bias:
        pairs.append((f"{module}.bias", layer.bias, _same))
    return pairs


def _same(value):
    return value


def _conv_kernel(value):
    return np.transpose(value, (2, 3, 1, 0))


def _depthwise_kernel(value):
    return np.transpose(value, (2, 3, 0, 1))


def _reshape_like(variable):
    return lambda value: np.reshape(value, variable.shape)
