#!/usr/bin/env bash
# The main job, offline: set up (if needed), then `josh-hf demo`: build ToolWOZ from MultiWOZ,
# train a small agent from scratch, evaluate it, run one JOSH round, evaluate again, and print
# the before/after table. MultiWOZ is read from $JOSH_HF_MULTIWOZ, else ../shared/data/multiwoz.
# Extra arguments go to `josh-hf demo` (e.g. --output DIR, --eval_tasks 450).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
josh-hf demo --output outputs/demo "$@"
