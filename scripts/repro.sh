#!/bin/bash
# The paper's study in miniature (Dong et al. 2024): RQ1 (each ability vs its data amount),
# RQ2 (the same fractions mixed), RQ4 (the four strategies, and DMT's replay fraction k),
# 3 seeds each, on the tiny LLaMA and the shipped synthetic skills. First the tiny base is
# pretrained on data/tiny/pretrain.txt (once: configs/repro/pretrain.yaml), and every run
# fine-tunes it. Runs are shared between sweeps (identical configurations train once),
# finished runs are skipped and interrupted ones resume, so running this again only does
# what is missing. Then `sft sweep report` over all six sweeps decides the paper's claims.
#
#   scripts/repro.sh                 # everything, 47 minutes on 2 cores (2026-12-06, fp32, no AMX)
#   scripts/repro.sh rq4_strategies  # some sweeps only
#   scripts/repro.sh --seeds 6,7,8   # the whole study again on other seeds, into runs/repro_seeds_6-7-8
#   JOBS=1 scripts/repro.sh          # runs one at a time (default: 2 at once, 1 thread each)
#
# The analysis plan (configs/repro/analysis_plan.yaml) is copied into the study folder and its
# SHA-256 recorded there (analysis_plan.record.json) before anything trains; the verdicts are
# decided by that recorded copy only. If the plan file changes later, the report shows the new
# rules as exploratory rows beside the recorded ones. A study folder whose runs finished before
# its plan was recorded gets exploratory verdicts only: start from an empty folder.
#
# Results: runs/repro/<sweep>/report.{md,csv,json} and <sweep>.png, runs/repro/findings.{md,json}
# (each claim's effect with its 95% interval and verdict), and runs/repro/summary.md with
# every table and the wall time of each step. With --seeds, the same under runs/repro_seeds_<list>,
# whose findings.md puts the study's own verdicts (runs/repro/findings.json) beside the new ones.
set -euo pipefail
cd "$(dirname "$0")/.."

SFT=${SFT:-build/sft}
JOBS=${JOBS:-2}
PY=$(scripts/sft_python)  # the venv Python (matplotlib) that setup.sh configured
OUT=runs/repro
PLAN=configs/repro/analysis_plan.yaml
ALL=(rq4_strategies rq4_dmt_k rq1_math rq1_code rq1_general rq2_mixed)
SEEDS=""
SWEEPS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) SEEDS=${2:-}; shift 2 || { echo "repro.sh: --seeds needs a list, e.g. --seeds 6,7,8" >&2; exit 2; } ;;
    --seeds=*) SEEDS=${1#--seeds=}; shift ;;
    *) SWEEPS+=("$1"); shift ;;
  esac
done
[ ${#SWEEPS[@]} -gt 0 ] || SWEEPS=("${ALL[@]}")
SETS=()  # applied to every sweep file: the seed axis and the folders of a replication
if [ -n "$SEEDS" ]; then
  [[ "$SEEDS" =~ ^[0-9]+(,[0-9]+)+$ ]] ||
    { echo "repro.sh: --seeds: expected at least two seeds separated by commas (6,7,8), got '$SEEDS'" >&2; exit 2; }
  OUT=runs/repro_seeds_${SEEDS//,/-}
  SETS=(--set "axes.seed=[$SEEDS]" --set "runs_dir=$OUT/_runs")
fi
BASE=runs/repro_pretrain  # configs/repro/base.yaml's model.path is its final/

if [ ! -x "$SFT" ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j2
fi
mkdir -p "$OUT"
# The analysis plan, recorded before the first run trains (see above).
record="$OUT/analysis_plan.record.json"
plan_sha=$(sha256sum "$PLAN" | cut -d' ' -f1)
if [ ! -f "$record" ]; then
  finished=$(find "$OUT" -path '*/eval/summary.json' 2>/dev/null | wc -l)
  cp "$PLAN" "$OUT/analysis_plan.yaml"
  printf '{"plan_file": "analysis_plan.yaml", "source": "%s", "sha256": "%s", "recorded_utc": "%s", "finished_runs_before": %d}\n' \
    "$PLAN" "$plan_sha" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$finished" >"$record"
  [ "$finished" -eq 0 ] ||
    echo "repro.sh: $finished runs had finished in $OUT before the plan was recorded: every verdict will be exploratory" >&2
elif ! grep -q "\"sha256\": \"$plan_sha\"" "$record"; then
  echo "repro.sh: $PLAN differs from the plan recorded in $record; verdicts stay the recorded plan's, the new rules are reported as exploratory" >&2
fi
summary="$OUT/summary.md"
{
  echo "# The miniature reproduction"
  echo
  echo "\`scripts/repro.sh ${SEEDS:+--seeds $SEEDS }${SWEEPS[*]}\` on $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), $($SFT version 2>/dev/null | head -n1)"
  echo
  echo "Analysis plan: \`$record\`: $(cat "$record")"
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
  sets=("${SETS[@]}")
  [ -z "$SEEDS" ] || sets+=(--set "output_dir=$OUT/$name")
  "$SFT" sweep --config "$file" "${sets[@]}" --jobs "$JOBS" || echo "repro.sh: some runs of $name failed; see their train.log" >&2
  "$SFT" sweep report --config "$file" "${sets[@]}" >/dev/null
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
    echo "\`$SFT sweep --config $file ${sets[*]} --jobs $JOBS\` then \`$SFT sweep report --config $file ${sets[*]}\`; ${secs} s (runs already finished are not retrained)."
    echo
    cat "$OUT/$name/report.md"
    [ -n "$plot" ] && echo && echo "Figure: \`$plot\`"
  } >>"$summary"
  echo "== $name done in ${secs} s"
done
# The paper's claims, decided over every sweep's finished runs.
configs=()
for name in "${ALL[@]}"; do configs+=(--config "configs/repro/$name.sweep.yaml"); done
# A replication pools its sweeps' reports in one folder (one --set applies to every file).
report_sets=("${SETS[@]}")
compare=()
if [ -n "$SEEDS" ]; then
  report_sets+=(--set "output_dir=$OUT/_pooled")
  [ -f runs/repro/findings.json ] && compare=(--compare runs/repro)
fi
"$SFT" sweep report "${configs[@]}" "${report_sets[@]}" --findings-dir "$OUT" --plan "$PLAN" "${compare[@]}" >/dev/null
fplot=""
if "$PY" -c "import matplotlib" 2>/dev/null && "$PY" scripts/plot_findings.py "$OUT/findings.json" >/dev/null; then
  fplot="$OUT/findings.png"
fi
{
  echo
  echo "## findings"
  echo
  echo "\`$SFT sweep report ${configs[*]} ${report_sets[*]} --findings-dir $OUT --plan $PLAN ${compare[*]}\`"
  echo
  cat "$OUT/findings.md"
  [ -n "$fplot" ] && echo && echo "Figure: \`$fplot\`"
} >>"$summary"
echo >>"$summary"
echo "Total wall time: $(($(date +%s) - total_start)) s." >>"$summary"
echo "wrote $summary"
