"""Export to full-integer int8 TFLite: `python export_tflite.py --help`, or
the console script `repopt-export`. Usage and flags: repopt_tf/cli/export.py
and the README."""

from repopt_tf.cli.export import run

if __name__ == "__main__":
    run()
