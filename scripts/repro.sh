#!/bin/bash
# The paper's study in miniature (Dong et al. 2024): RQ1 (each ability vs its data amount),
# RQ2 (the same fractions mixed), RQ4 (the four strategies, and DMT's replay fraction k),
# 3 seeds each, on the tiny LLaMA and the shipped synthetic skills. First the tiny base is
# pretrained on data/tiny/pretrain.txt (once: configs/repro/pretrain.yaml), and every run
# fine-tunes it. Runs are shared between sweeps (identical configurations train once),
# finished runs are skipped and interrupted ones resume, so running this again only does
# what is missing. Then `sft sweep report` over all six sweeps decides the paper's claims.
#
#   scripts/repro.sh                 # everything, about 40 minutes on 2 cores
#   scripts/repro.sh rq4_strategies  # some sweeps only
#   JOBS=1 scripts/repro.sh          # runs one at a time (default: 2 at once, 1 thread each)
#
# Results: runs/repro/<sweep>/report.{md,csv,json} and <sweep>.png, runs/repro/findings.{md,json}
# (each claim's effect with its 95% interval and verdict), and runs/repro/summary.md with
# every table and the wall time of each step.
set -euo pipefail
cd "$(dirname "$0")/.."

SFT=${SFT:-build/sft}
JOBS=${JOBS:-2}
PY=$(scripts/sft_python)  # the venv Python (matplotlib) that setup.sh configured
OUT=runs/repro
ALL=(rq4_strategies rq4_dmt_k rq1_math rq1_code rq1_general rq2_mixed)
SWEEPS=("$@")
[ ${#SWEEPS[@]} -gt 0 ] || SWEEPS=("${ALL[@]}")
BASE=runs/repro_pretrain  # configs/repro/base.yaml's model.path is its final/

if [ ! -x "$SFT" ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j2
fi
mkdir -p "$OUT"
summary="$OUT/summary.md"
{
  echo "# The miniature reproduction"
  echo
  echo "\`scripts/repro.sh ${*:-}\` on $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), $($SFT version 2>/dev/null | head -n1)"
} >"$summary"

total_start=$(date +%s)
if [ ! -f "$BASE/final/model.safetensors" ]; then
  start=$(date +%s)
  echo "== pretraining the base (configs/repro/pretrain.yaml -> $BASE)"
  # A fixed thread count: the same base, bit for bit, on every machine with as many cores.
  "$SFT" train --config configs/repro/pretrain.yaml --output-dir "$BASE" --resume auto \
    --set train.threads="${PRETRAIN_THREADS:-2}" >"$OUT/pretrain.log" 2>&1 ||
    { tail -n 20 "$OUT/pretrain.log" >&2; echo "repro.sh: pretraining failed; see $OUT/pretrain.log" >&2; exit 1; }
  secs=$(($(date +%s) - start))
  printf '\n## pretraining\n\n`%s train --config configs/repro/pretrain.yaml`: %s s. %s\n' "$SFT" "$secs" \
    "$(grep -o 'stage 1/1 multi_task: .*' "$OUT/pretrain.log" | head -n1)" >>"$summary"
  echo "== pretraining done in ${secs} s"
fi
for name in "${SWEEPS[@]}"; do
  file=configs/repro/$name.sweep.yaml
  [ -f "$file" ] || { echo "repro.sh: no sweep file $file" >&2; exit 2; }
  start=$(date +%s)
  echo "== $name ($file)"
  "$SFT" sweep --config "$file" --jobs "$JOBS" || echo "repro.sh: some runs of $name failed; see their train.log" >&2
  "$SFT" sweep report --config "$file" >/dev/null
  plot=""
  if "$PY" -c "import matplotlib" 2>/dev/null; then
    # A figure that fails to draw is reported, not fatal: the tables are what the study is for.
    if "$PY" scripts/plot_sweep.py "$OUT/$name/report.json" -o "$OUT/$name/$name.png" >/dev/null; then
      plot="$OUT/$name/$name.png"
    else
      echo "repro.sh: plotting $name failed (above); its tables are still written" >&2
    fi
  fi
  secs=$(($(date +%s) - start))
  {
    echo
    echo "## $name"
    echo
    echo "\`$SFT sweep --config $file --jobs $JOBS\` then \`$SFT sweep report --config $file\`; ${secs} s (runs already finished are not retrained)."
    echo
    cat "$OUT/$name/report.md"
    [ -n "$plot" ] && echo && echo "Figure: \`$plot\`"
  } >>"$summary"
  echo "== $name done in ${secs} s"
done
# The paper's claims, decided over every sweep's finished runs.
configs=()
for name in "${ALL[@]}"; do configs+=(--config "configs/repro/$name.sweep.yaml"); done
"$SFT" sweep report "${configs[@]}" --findings-dir "$OUT" >/dev/null
fplot=""
if "$PY" -c "import matplotlib" 2>/dev/null && "$PY" scripts/plot_findings.py "$OUT/findings.json" >/dev/null; then
  fplot="$OUT/findings.png"
fi
{
  echo
  echo "## findings"
  echo
  echo "\`$SFT sweep report ${configs[*]} --findings-dir $OUT\`"
  echo
  cat "$OUT/findings.md"
  [ -n "$fplot" ] && echo && echo "Figure: \`$fplot\`"
} >>"$summary"
echo >>"$summary"
echo "Total wall time: $(($(date +%s) - total_start)) s." >>"$summary"
echo "wrote $summary"
