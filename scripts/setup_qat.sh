#!/usr/bin/env bash
# Optional QAT extra: tf_keras and tensorflow-model-optimization on top of
# tensorflow-cpu. --no-deps because tf-keras declares the full `tensorflow`
# package (a second TF beside tensorflow-cpu) and TFMOT an old absl-py pin;
# everything else they need is installed here or by scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
  tf-keras==2.21.0 tensorflow-model-optimization==0.8.1 \
  dm-tree==0.1.10 mock==5.2.0 scipy==1.17.1
