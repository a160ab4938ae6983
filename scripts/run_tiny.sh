#!/usr/bin/env bash
# The main job: a tiny DMT training on the shipped data (README command 1 runs this after setup).
# Usage: scripts/run_tiny.sh [extra sft train flags, e.g. --output-dir runs/x]
set -euo pipefail
cd "$(dirname "$0")/.."
exec build/sft train --config configs/tiny/dmt.yaml "$@"
