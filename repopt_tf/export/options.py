"""`ExportOptions`: every setting of one export, in one place (the CLI
fills it from its flags; `export_model` takes its fields as keywords)."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """How `repopt_tf.export.export_model` converts and measures a model.

    Attributes:
        representative: training images that calibrate int8.
        latency_runs: timed invokes per latency setting.
        threads: thread counts for latency.
        verbose: show the converter's messages.
        crop_fraction: evaluation centre crop (`make_dataset`; 0.875 for
            ImageNet checkpoints).
        measure_top1: measure top-1 (off when the data is a stand-in).
        batch_size: a fixed input batch (None: dynamic).
        fold_padding, conv_ops: the device form (`device_model`).
        run_micro: run TFLite Micro (None: when installed).
        deploy_images: images for the deploy check (0: all).
    """

    representative: int = 300
    latency_runs: int = 100
    threads: tuple = (1, 2)
    verbose: bool = False
    crop_fraction: float = 1.0
    measure_top1: bool = True
    batch_size: int | None = None
    fold_padding: object = "none"
    conv_ops: bool = True
    run_micro: bool | None = None
    deploy_images: int = 500
