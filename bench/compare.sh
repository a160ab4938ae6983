#!/usr/bin/env bash
# Runs `sft bench` and ../shared/bench/reference_train.py (eager, and with --compile:
# torch.compile's inductor) back to back, rotating the order, several repetitions, and prints
# the median step time of each and the speed ratios sft/eager and sft/compiled per preset and
# dtype; also the bf16/fp32 matmul peak of matmul_peak.py, measured in the same run, and each
# implementation's achieved share of it. COMPILE=0 leaves the compiled anchor out.
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
COMPILE=${COMPILE:-1}
mkdir -p "$OUT"
[ -x "$SFT" ] || { echo "compare.sh: $SFT not built (scripts/setup.sh)" >&2; exit 1; }
[ -f "$REF_DIR/reference_train.py" ] || { echo "compare.sh: $REF_DIR/reference_train.py not found" >&2; exit 1; }

echo "# $(date -u +%FT%TZ) $(uname -n) $(nproc) cpus; reps=$REPS steps=$STEPS warmup=$WARMUP" | tee "$OUT/summary.txt"
"$PYTHON" "$REF_DIR/matmul_peak.py" 2>/dev/null | tail -1 > "$OUT/peak.json"
echo "matmul peak: $(cat "$OUT/peak.json")" | tee -a "$OUT/summary.txt"

for c in "${CASES[@]}"; do
  preset=${c%%:*}
  dtype=${c##*:}
  who_all="sft ref"
  [ "$COMPILE" = 0 ] || who_all="sft ref cmp"
  for who in $who_all; do : > "$OUT/$preset-$dtype.$who.jsonl"; done
  for ((i = 0; i < REPS; i++)); do
    # Rotate which one goes first, so drifts in machine speed hit all alike.
    set -- $who_all
    for ((j = 0; j < i % $#; j++)); do set -- "${@:2}" "$1"; done
    for who in "$@"; do
      # A failed run says why (its stderr's tail) and stops the comparison.
      if [ "$who" = sft ]; then
        cmd=("$SFT" bench --preset "$preset" --dtype "$dtype" --steps "$STEPS" --warmup "$WARMUP" --json)
      else
        cmd=("$PYTHON" "$REF_DIR/reference_train.py" --preset "$preset" --dtype "$dtype" --steps "$STEPS" --warmup "$WARMUP")
        [ "$who" = cmp ] && cmd+=(--compile)
      fi
      if ! "${cmd[@]}" > "$OUT/last.out" 2> "$OUT/last.err"; then
        echo "compare.sh: failed: ${cmd[*]}" >&2
        tail -5 "$OUT/last.err" >&2
        exit 1
      fi
      tail -1 "$OUT/last.out" >> "$OUT/$preset-$dtype.$who.jsonl"
    done
  done
  "$PYTHON" - "$OUT" "$preset" "$dtype" <<'PY' | tee -a "$OUT/summary.txt"
import json, os, statistics, sys
out, preset, dtype = sys.argv[1:4]
def runs(who):
    path = f"{out}/{preset}-{dtype}.{who}.jsonl"
    return [json.loads(l) for l in open(path) if l.strip()] if os.path.exists(path) else []
peak = json.load(open(f"{out}/peak.json")).get(f"{dtype}_peak_gflops", 0)
med = lambda rs, k: statistics.median(r[k] for r in rs)
sft, ref, cmp = runs("sft"), runs("ref"), runs("cmp")
s, r = med(sft, "step_s_median"), med(ref, "step_s_median")
line = (f"{preset:5s} {dtype}: sft {s:.4f} s/step ({med(sft, 'achieved_gflops'):.1f} GFLOP/s, "
        f"{med(sft, 'achieved_gflops') / peak:.0%} of peak {peak:.0f})  eager {r:.4f} s/step "
        f"({med(ref, 'achieved_gflops') / peak:.0%})  sft/eager {r / s:.2f}x")
if cmp:
    c = med(cmp, "step_s_median")
    line += f"  compiled {c:.4f} s/step ({med(cmp, 'achieved_gflops') / peak:.0%})  sft/compiled {c / s:.2f}x"
print(line)
PY
done
