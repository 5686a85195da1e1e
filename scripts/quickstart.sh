#!/usr/bin/env bash
# Set up (if needed), build the ToolWOZ dataset from MultiWOZ and print its summary.
# MultiWOZ is read from $JOSH_HF_MULTIWOZ, else ../shared/data/multiwoz.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
. .venv/bin/activate
OUT="${1:-outputs/toolwoz}"
josh-hf build-dataset --output "$OUT"
josh-hf info --source "$OUT"
josh-hf evaluate --model rule-based --user agenda --split test --source "$OUT" --output outputs/eval_rule_based --overwrite
