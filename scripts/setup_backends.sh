#!/usr/bin/env bash
# Keras's other backends for the tests and benchmarks: JAX (CPU) and
# PyTorch (CPU build) in .venv beside TensorFlow. The library's core runs on
# either without TensorFlow (tests/test_backend_matrix.py); on a GPU install
# jax[cuda13] or a CUDA torch instead.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
.venv/bin/python -m pip install -q --disable-pip-version-check \
  "jax[cpu]==0.10.2" torch==2.13.0
