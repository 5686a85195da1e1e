#!/usr/bin/env bash
# Idempotent setup: a virtual environment in .venv with josh-hf installed (editable, with
# test extras). torch is pinned to 2.13.0 only when no torch is present, because an
# unpinned install pulls several GB of CUDA wheels; pyproject.toml accepts a range.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
if ! python -c "import torch" >/dev/null 2>&1; then
  echo "[bootstrap] installing torch==2.13.0"
  python -m pip install -q "torch==2.13.0"
fi
if ! python -c "import josh_hf, pytest, hypothesis" >/dev/null 2>&1 || [ pyproject.toml -nt .venv/.josh_hf_installed ]; then
  echo "[bootstrap] installing josh-hf[dev]"
  python -m pip install -q -e ".[dev]"
  touch .venv/.josh_hf_installed
fi
