#!/usr/bin/env bash
# Non-pad tokens per second on the real SFT length distribution (bench/real_data.yaml: GSM8K +
# Code Alpaca + ShareGPT, vicuna_v1.1, Llama-2 tokenizer, max_seq_len 2048, the small preset's
# model, bf16) for three batchings of the same model and step:
#   pack     best-fit-decreasing rows of 2048 tokens, 2 rows per micro-batch (per-sample attention)
#   pad      pad to the longest of 8 samples
#   pad_max  pad to max_seq_len, 2 samples (what FastChat, the paper's trainer, does)
# plus each one's padding efficiency. Usage: bench/packing.sh [STEPS]   (needs ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-8}
SFT=${SFT:-build/sft}
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
for mode in pack pad pad_max; do
  bs=2
  [ "$mode" = pad ] && bs=8
  rm -rf "$OUT/packing-$mode"
  # A failed run stops the benchmark with the end of its log, rather than a missing number.
  if ! "$SFT" train --config bench/real_data.yaml --output-dir "$OUT/packing-$mode" --set data.batching=$mode \
    --set train.batch_size=$bs --set train.max_steps="$STEPS" --set data.cache_dir="$OUT/cache" >"$OUT/packing-$mode.log" 2>&1; then
    echo "packing.sh: the $mode run failed:" >&2
    tail -5 "$OUT/packing-$mode.log" >&2
    exit 1
  fi
  eff=$("$SFT" data stats --config bench/real_data.yaml --set data.batching=$mode --set train.batch_size=$bs \
    --set data.cache_dir="$OUT/cache" --json 2>"$OUT/packing-stats.err" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["stages"][0]["packing_efficiency"])') ||
    { echo "packing.sh: data stats failed:" >&2; tail -5 "$OUT/packing-stats.err" >&2; exit 1; }
  python3 - "$OUT/packing-$mode/metrics.jsonl" "$mode" "$bs" "$eff" <<'PY'
import json, statistics, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"event":"step"' in l]
tps = [s["tokens_per_s"] for s in steps[2:]] or [s["tokens_per_s"] for s in steps]  # skip warm-up steps
print(f"{sys.argv[2]:8s} batch {sys.argv[3]}: {statistics.median(tps):8.0f} non-pad tokens/s "
      f"(median of {len(tps)} steps), padding efficiency {float(sys.argv[4]):.1%}")
PY
done | tee "$OUT/packing.txt"
