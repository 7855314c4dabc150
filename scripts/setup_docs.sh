#!/usr/bin/env bash
# The documentation tools: mkdocs with mkdocstrings builds docs/ and the API
# reference (docs/api.md) from the docstrings; `mkdocs build --strict` in the
# test command fails on a broken link or reference.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
.venv/bin/python -m pip install -q --disable-pip-version-check \
  "mkdocs==1.6.1" "mkdocstrings==1.0.8" "mkdocstrings-python==2.0.11"
