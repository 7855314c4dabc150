"""Quantization-aware fine-tuning with TFMOT on the tf_keras twin.

`quantize_aware_finetune` annotates every layer except `Rescaling` (TFMOT
has no config for it; the converter calibrates it), applies the default 8-bit
scheme (Conv-BN folding, per-channel weights), sets the activation ranges
from calibration images, fine-tunes with SGD and returns the QAT model;
`convert_qat_int8` turns it into a full-integer `.tflite`.
`float_finetune` runs the same fine-tuning without fake quantization, the
fair fp32 baseline for QAT.
"""

import numpy as np
import tensorflow_model_optimization as tfmot
import tf_keras

from repopt_tf.export.convert import convert_int8


def quantize_aware_model(twin):
    def annotate(layer):
        if isinstance(layer, tf_keras.layers.Rescaling):
            return layer.__class__.from_config(layer.get_config())
        return tfmot.quantization.keras.quantize_annotate_layer(layer)

    annotated = tf_keras.models.clone_model(twin, clone_function=annotate)
    with tfmot.quantization.keras.quantize_scope():
        return tfmot.quantization.keras.quantize_apply(annotated)


def calibrate_ranges(qat_model, twin, images):
    """Sets every fake-quant range from the float twin before fine-tuning.

    TFMOT starts all ranges at [-6, 6]: weight ranges are only refreshed in
    training steps and activation ranges follow an EMA of decay 0.999, so a
    short fine-tune starts (and evaluates) with useless ranges. Weights get
    their symmetric per-channel range, activations the observed [min, max] of
    the twin's layer outputs on `images`.
    """
    activations = {}
    for layer in qat_model.layers:
        found = {v.name.split("/")[-1].split(":")[0]: v for v in layer.weights}
        name = layer.name.removeprefix("quant_")
        if "kernel_min" in found:
            kernel = twin.get_layer(name).kernel.numpy()
            axes = (
                tuple(range(kernel.ndim - 1))
                if len(found["kernel_min"].shape)
                else None
            )
            bound = np.abs(kernel).max(axis=axes)
            found["kernel_min"].assign(-bound)
            found["kernel_max"].assign(bound)
        for prefix in ("output", "post_activation"):
            if f"{prefix}_min" in found:
                activations[name] = (
                    found[f"{prefix}_min"],
                    found[f"{prefix}_max"],
                )
    probe = tf_keras.Model(
        twin.inputs, [twin.get_layer(name).output for name in activations]
    )
    outputs = probe.predict(np.asarray(images, np.float32), verbose=0)
    if len(activations) == 1:
        outputs = [outputs]
    for (low, high), values in zip(activations.values(), outputs):
        low.assign(min(0.0, float(values.min())))
        high.assign(max(0.0, float(values.max())))


def quantize_aware_finetune(
    twin,
    train_data,
    epochs,
    calibration_images,
    learning_rate=1e-3,
    verbose=2,
    steps_per_epoch=None,
):
    model = quantize_aware_model(twin)
    calibrate_ranges(model, twin, calibration_images)
    return float_finetune(
        model, train_data, epochs, learning_rate, verbose, steps_per_epoch
    )


def float_finetune(
    model,
    train_data,
    epochs,
    learning_rate=1e-3,
    verbose=2,
    steps_per_epoch=None,
):
    """Fine-tunes a tf_keras model with the QAT recipe (SGD, Nesterov 0.9);
    `steps_per_epoch` for endless training data (`make_dataset`)."""
    model.compile(
        optimizer=tf_keras.optimizers.SGD(
            learning_rate, momentum=0.9, nesterov=True
        ),
        loss=tf_keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[tf_keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    model.fit(
        train_data,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        verbose=verbose,
    )
    return model


def convert_qat_int8(model, representative_images, verbose=False):
    """Full-integer `.tflite` of a QAT model (same settings as PTQ export)."""
    return convert_int8(model, representative_images, verbose)
