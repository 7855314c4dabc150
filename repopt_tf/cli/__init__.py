"""Command-line tools: `repopt-train` (train.py) and `repopt-export`
(export_tflite.py), absl flags over `repopt_tf.training` and `repopt_tf.export`."""
