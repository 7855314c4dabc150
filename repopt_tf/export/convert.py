"""Keras model -> TFLite flatbuffers: float32, and full-integer int8 PTQ.

Int8 post-training quantization: `optimizations=[DEFAULT]`, a representative
data set of real training images preprocessed exactly as for evaluation
(raw pixels; normalisation is inside the model),
`supported_ops=[TFLITE_BUILTINS_INT8]` and int8 input and output. BatchNorm is
folded into the convs by the converter; weights are quantized per channel.
"""

import numpy as np
import tensorflow as tf

from repopt_tf.export.device_form import rebuild
from repopt_tf.quiet import quiet


def _converter(model):
    return tf.lite.TFLiteConverter.from_keras_model(model)


def float32_model(model):
    """`model` itself if it computes in float32, else a float32 twin with the
    same weights (a model trained under a mixed-precision policy)."""
    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model

    def to_float32(layer):
        return layer.__class__, {**layer.get_config(), "dtype": "float32"}

    return rebuild(model, to_float32)


def convert_float32(model, verbose=False):
    """Returns the float32 `.tflite` bytes of a Keras model."""
    try:
        with quiet(verbose):
            return _converter(model).convert()
    except Exception as error:  # the converter raises ConverterError & co.
        raise ValueError(
            f"float32 conversion failed: {_first_lines(str(error))}"
        ) from error


def int8_converter(model, representative_images, per_channel=True):
    """A converter configured for full-integer int8 PTQ.

    `per_channel=False` quantizes each conv kernel with one scale (per
    tensor), as older int8 runtimes and the paper's Table 8 setting do.
    """
    images = np.asarray(representative_images, np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(
            "representative_images must be a non-empty (N, H, W, C) array, got "
            f"shape {images.shape}."
        )

    def representative_dataset():
        for image in images:
            yield [image[None]]

    converter = _converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    # TFLiteConverter's only switch for per-tensor weights is this attribute.
    converter._experimental_disable_per_channel = not per_channel
    return converter


def convert_int8(model, representative_images, verbose=False, per_channel=True):
    """Returns full-integer int8 `.tflite` bytes (int8 input and output).

    Raises:
        ValueError: when an op has no int8 kernel (the converter's message
            names it).
    """
    with quiet(verbose):  # Keras prints the SavedModel it exports
        converter = int8_converter(model, representative_images, per_channel)
    try:
        with quiet(verbose):
            return converter.convert()
    except Exception as error:  # the converter raises ConverterError & co.
        raise ValueError(
            "int8 conversion failed; an op likely has no int8 kernel. "
            f"Converter said: {_first_lines(str(error))}"
        ) from error


def _first_lines(text, count=6):
    lines = [line for line in text.splitlines() if line.strip()]
    return " | ".join(lines[:count])
