#!/usr/bin/env bash
# Prepares what benchmarks/gpu_proof.py needs on the GPU machine (Python 3.12
# with JAX and PyTorch, no Keras, no TensorFlow, no network), in two
# git-ignored folders that the device tool carries:
#   .whl/                   keras, namex and optree wheels for cp312
#   .cache/RepOptimizers/   the authors' code (DingXiaoH/RepOptimizers)
# Usage: bash scripts/prepare_gpu_proof.sh REFERENCE
# REFERENCE: a RepOptimizers checkout, or its bare git directory (e.g. the
# one the search tool's fetch brings). Then run, on the device:
#   python3 -m pip install -q --no-index --no-deps --no-compile \
#     --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site:$PWD || exit; KERAS_BACKEND=jax \
#     PYTHONUNBUFFERED=1 python3 -m benchmarks.gpu_proof \
#     --reference=.cache/RepOptimizers --out=$OUT/gpu_proof.json
set -euo pipefail
cd "$(dirname "$0")/.."
reference=${1:?usage: bash scripts/prepare_gpu_proof.sh REFERENCE}
exclude="$(git rev-parse --git-path info/exclude)"
for folder in /.whl/ /.cache/; do
  grep -qx "$folder" "$exclude" 2>/dev/null || echo "$folder" >>"$exclude"
done
rm -rf .whl .cache/RepOptimizers
python3 -m pip download -q --disable-pip-version-check --no-deps \
  --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl keras==3.15.1 namex==0.1.0 optree==0.20.0
mkdir -p .cache/RepOptimizers
# The model code and what it imports from the checkout's root.
parts=(repoptimizer se_block.py scale_layer.py LICENSE)
if [ -d "$reference/repoptimizer" ]; then
  for part in "${parts[@]}"; do cp -r "$reference/$part" .cache/RepOptimizers/; done
else
  git --git-dir="$reference" archive --format=tar HEAD "${parts[@]}" |
    tar -x -C .cache/RepOptimizers
fi
test -f .cache/RepOptimizers/repoptimizer/repoptvgg_model.py
du -sh .whl .cache/RepOptimizers
