"""Optional QAT through tensorflow-model-optimization (legacy tf_keras).

Not imported by `repopt_tf`: importing TFMOT sets TF_USE_LEGACY_KERAS=1 for
the whole process. Install the extra with `bash scripts/setup_qat.sh` and run
`python -m repopt_tf.qat --workdir=...` (its own process).
"""

from repopt_tf.qat.twin import tf_keras_twin
from repopt_tf.qat.twin import weights_equal

__all__ = ["tf_keras_twin", "weights_equal"]
