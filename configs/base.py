"""Defaults every config starts from (lives in `repopt_tf/configs/base.py`)."""

from repopt_tf.configs.base import get_config  # noqa: F401
