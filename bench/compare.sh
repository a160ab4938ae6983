#!/usr/bin/env bash
# Runs `sft bench` and ../shared/bench/reference_train.py back to back, alternating, several
# repetitions, and prints the median step time of each and the speed ratio sft/reference
# per preset and dtype; also the bf16/fp32 matmul peak of matmul_peak.py, measured in the
# same run, and each implementation's achieved share of it.
#
# Usage: bench/compare.sh [-r REPS] [-s STEPS] [-w WARMUP] [CASE ...]
#   CASE is preset:dtype (default: tiny:fp32 tiny:bf16 small:fp32 small:bf16 gqa:bf16)
#   Environment: SFT=build/sft, REF_DIR=../shared/bench, PYTHON=$(scripts/sft_python) (the venv torch sft links against), OUT=bench/out
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=3 STEPS=6 WARMUP=2
while getopts "r:s:w:" opt; do
  case $opt in r) REPS=$OPTARG ;; s) STEPS=$OPTARG ;; w) WARMUP=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(tiny:fp32 tiny:bf16 small:fp32 small:bf16 gqa:bf16)
SFT=${SFT:-build/sft}
REF_DIR=${REF_DIR:-../shared/bench}
PYTHON=${PYTHON:-$(scripts/sft_python)}
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
[ -x "$SFT" ] || { echo "compare.sh: $SFT not built (scripts/setup.sh)" >&2; exit 1; }
[ -f "$REF_DIR/reference_train.py" ] || { echo "compare.sh: $REF_DIR/reference_train.py not found" >&2; exit 1; }

echo "# $(date -u +%FT%TZ) $(uname -n) $(nproc) cpus; reps=$REPS steps=$STEPS warmup=$WARMUP" | tee "$OUT/summary.txt"
"$PYTHON" "$REF_DIR/matmul_peak.py" 2>/dev/null | tail -1 > "$OUT/peak.json"
echo "matmul peak: $(cat "$OUT/peak.json")" | tee -a "$OUT/summary.txt"

for c in "${CASES[@]}"; do
  preset=${c%%:*}
  dtype=${c##*:}
  : > "$OUT/$preset-$dtype.sft.jsonl"
  : > "$OUT/$preset-$dtype.ref.jsonl"
  for ((i = 0; i < REPS; i++)); do
    # Alternate which one goes first, so drifts in machine speed hit both alike.
    if ((i % 2 == 0)); then order="sft ref"; else order="ref sft"; fi
    for who in $order; do
      if [ "$who" = sft ]; then
        "$SFT" bench --preset "$preset" --dtype "$dtype" --steps "$STEPS" --warmup "$WARMUP" --json 2>/dev/null |
          tail -1 >> "$OUT/$preset-$dtype.sft.jsonl"
      else
        "$PYTHON" "$REF_DIR/reference_train.py" --preset "$preset" --dtype "$dtype" --steps "$STEPS" --warmup "$WARMUP" \
          2>/dev/null | tail -1 >> "$OUT/$preset-$dtype.ref.jsonl"
      fi
    done
  done
  "$PYTHON" - "$OUT/$preset-$dtype.sft.jsonl" "$OUT/$preset-$dtype.ref.jsonl" "$OUT/peak.json" "$preset" "$dtype" <<'PY' | tee -a "$OUT/summary.txt"
import json, statistics, sys
sft = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ref = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
peak = json.load(open(sys.argv[3]))
preset, dtype = sys.argv[4], sys.argv[5]
s = statistics.median(r["step_s_median"] for r in sft)
r = statistics.median(r["step_s_median"] for r in ref)
p = peak.get(f"{dtype}_peak_gflops", 0)
gs = statistics.median(x["achieved_gflops"] for x in sft)
gr = statistics.median(x["achieved_gflops"] for x in ref)
print(f"{preset:5s} {dtype}: sft {s:.4f} s/step ({gs:.1f} GFLOP/s, {gs / p:.0%} of peak {p:.0f})  "
      f"reference {r:.4f} s/step ({gr:.1f} GFLOP/s, {gr / p:.0%})  speed ratio sft/reference {r / s:.2f}x")
PY
done
