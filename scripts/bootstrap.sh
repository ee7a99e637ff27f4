#!/usr/bin/env bash
# Creates .venv (if missing) and installs siamkit with its dev extras into it. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  # PyTorch's CUDA build takes about 6 GB in .venv: say so up front rather than let pip fail half-way.
  free_kb=$(df -Pk . | awk 'NR == 2 {print $4}')
  if [ "${free_kb:-0}" -lt 7000000 ]; then
    echo "warning: $((free_kb / 1048576)) GB free on the disk of $PWD; installing PyTorch into .venv needs about" \
      "7 GB: free some space (old clones, /tmp) if pip stops with 'No space left on device'" >&2
  fi
  # The pinned pair installs from this workplace's local wheel store; elsewhere fall back to ranges.
  .venv/bin/pip install -q --no-cache-dir torch==2.14.1 torchvision==0.29.1 \
    || .venv/bin/pip install -q --no-cache-dir "torch>=2.4" "torchvision>=0.19"
fi
.venv/bin/pip install -q -e ".[dev]"
