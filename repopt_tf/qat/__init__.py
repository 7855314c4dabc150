"""Optional QAT through tensorflow-model-optimization (legacy tf_keras).

Not imported by `repopt_tf`: importing TFMOT sets TF_USE_LEGACY_KERAS=1 for
the whole process. Install the extra with `bash scripts/setup_qat.sh` and run
`python -m repopt_tf.qat --workdir=...` (its own process). Importing this
package needs nothing extra; its names load tf_keras on first use.
"""

__all__ = ["tf_keras_twin", "weights_equal"]


def __getattr__(name):
    if name in __all__:
        from repopt_tf.qat import twin

        return getattr(twin, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
