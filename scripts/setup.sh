#!/usr/bin/env bash
# Sets up a fresh machine: the embedded data set (Debian package) and a
# virtual environment in .venv with the pinned requirements and repopt_tf.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    apt-get install -y -qq dataset-fashion-mnist
  else
    echo "setup: Fashion-MNIST missing; run 'sudo apt-get install dataset-fashion-mnist'" >&2
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
