"""The default quick start (lives in `repopt_tf/configs/quickstart.py`)."""

from repopt_tf.configs.quickstart import get_config  # noqa: F401
