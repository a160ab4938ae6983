#!/usr/bin/env bash
# The main job: a tiny DMT training on the shipped data, then its three synthetic-skill
# scores (math: GSM8K-style accuracy, code: HumanEval-style pass@1, general: exact chat
# answers). README command 1 runs this after setup.
# Usage: scripts/run_tiny.sh [OUTPUT_DIR]   (default runs/tiny_dmt)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/tiny_dmt}
# --overwrite: running the main job again replaces its previous run in the same folder.
build/sft train --config configs/tiny/dmt.yaml --output-dir "$out" --overwrite
build/sft eval --model "$out/final" --benchmark math,code,general --out "$out/eval.json"
