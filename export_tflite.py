"""Export a model to full-integer int8 TFLite and report on it.

    python export_tflite.py --workdir=runs/quickstart        # exports target/model.keras
    python export_tflite.py --model=runs/x/baseline_repvgg/model_fused.keras
    python export_tflite.py --checkpoint=RepOpt-VGG-B1-acc78.62.pth \\
        --data=imagenet2012 --manual_dir=/data/imagenet   # authors' .pth, no torch

Writes model_fp32.tflite, model_int8.tflite, export_report.json,
export_report.md and kernel_histogram.png next to the model (for a
checkpoint: into CHECKPOINT_STEM_tflite/ beside it; or into --output_dir).
For a train.py model the data set is read from the run's config.json when
there is one (else --data). A PyTorch checkpoint (RepOpt-VGG target, RepVGG
train or deploy form) is imported without torch; its variant, classes and
form come from the file, a RepVGG training form is fused first. Converter
messages are hidden unless --verbose.
"""

from repopt_tf.cli.export import run  # the console script `repopt-export`

if __name__ == "__main__":
    run()
