"""int8 TFLite export, full-integer verification, LiteRT evaluation,
diagnostics, and the deploy check (TFLite Micro, memory bill). Needs
TensorFlow (the converter); a `.keras` model trained on any backend exports."""

from repopt_tf.backend import require_tensorflow

require_tensorflow("repopt_tf.export (the TFLite converter)")

from repopt_tf.export.convert import convert_float32
from repopt_tf.export.convert import convert_int8
from repopt_tf.export.deploy import deploy_check
from repopt_tf.export.device_form import device_model
from repopt_tf.export.diagnostics import kernel_statistics
from repopt_tf.export.diagnostics import layer_quantization_error
from repopt_tf.export.litert_eval import TFLiteModel
from repopt_tf.export.litert_eval import latency
from repopt_tf.export.litert_eval import output_agreement
from repopt_tf.export.litert_eval import tflite_accuracy
from repopt_tf.export.litert_eval import tflite_outputs
from repopt_tf.export.options import ExportOptions
from repopt_tf.export.report import export_model
from repopt_tf.export.verify import NotFullyIntegerError
from repopt_tf.export.verify import check_full_integer

__all__ = [
    "NotFullyIntegerError",
    "TFLiteModel",
    "check_full_integer",
    "convert_float32",
    "convert_int8",
    "deploy_check",
    "device_model",
    "ExportOptions",
    "export_model",
    "kernel_statistics",
    "latency",
    "layer_quantization_error",
    "output_agreement",
    "tflite_accuracy",
    "tflite_outputs",
]
