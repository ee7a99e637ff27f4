#!/usr/bin/env bash
# Creates .venv (if missing) and installs siamkit with its dev extras into it. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  # The pinned pair installs from this workplace's local wheel store; elsewhere fall back to ranges.
  .venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1 \
    || .venv/bin/pip install -q "torch>=2.4" "torchvision>=0.19"
fi
.venv/bin/pip install -q -e ".[dev]"
