#!/usr/bin/env bash
# Optional [micro] extra: TFLite Micro's Python interpreter (a real TFLM
# build for this host), used by export_tflite.py's deploy check. Its needs
# (flatbuffers, numpy, pyyaml) come with scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
  tflite-micro==0.dev20261023182759
