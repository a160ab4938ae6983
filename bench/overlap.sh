#!/usr/bin/env bash
# Communication overlap on 2 Gloo ranks over loopback (issue 30's setting): configs/tiny/multi_task.yaml
# with a 26M-parameter model, bf16 autocast, 2 packed rows of 256 tokens per rank and step, 1 thread
# per rank, 12 steps; ZeRO-3 with prefetch 1, ZeRO-3 with prefetch 0 (each unit gathered when used)
# and DDP, in rotating order, R rounds. Step time: metrics.jsonl's elapsed_s over steps 3..12 (the
# mean of 10 differences); comm_ms / comm_wait_ms: the steps' means over the same steps.
# Usage: bench/overlap.sh [-r ROUNDS] [-o OUT] [-p PRECISION]   (prints a table; raw runs stay under OUT)
# -p fp32 runs the same in fp32 (on a CPU without native bf16 the compute is then faster, so the
# communication weighs more).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3
precision=bf16
out=${OUT:-bench/out/overlap}
while getopts "r:o:p:" opt; do
  case $opt in
    r) rounds=$OPTARG ;;
    o) out=$OPTARG ;;
    p) precision=$OPTARG ;;
    *) exit 2 ;;
  esac
done
sft=build/sft
[ -x "$sft" ] || { echo "overlap.sh: build sft first (scripts/setup.sh)" >&2; exit 2; }
rm -rf "$out"
mkdir -p "$out"
python=${SFT_PYTHON:-python3}

run() {  # run NAME SETTINGS...: two ranks
  local name=$1
  shift
  local port=$((20000 + RANDOM % 20000)) dir="$out/$name"
  local common=(train --config configs/tiny/multi_task.yaml --output-dir "$dir"
    --set model.config.hidden_size=512 --set model.config.intermediate_size=1408
    --set model.config.num_hidden_layers=8 --set model.config.num_attention_heads=8
    --set model.config.num_key_value_heads=8 --set train.precision=$precision --set train.batch_size=2
    --set data.max_seq_len=256 --set train.threads=1 --set train.log_every=1 --set train.max_steps=12
    --set train.export_stage_models=false --set data.cache_dir="$out/cache" --set dist.timeout_s=300)
  local pids=()
  for r in 0 1; do
    RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=$port OMP_NUM_THREADS=1 \
      "$sft" "${common[@]}" "$@" > "$dir.rank$r.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
}

mkdir -p "$out"
for round in $(seq 1 "$rounds"); do
  for variant in zero3_prefetch1 zero3_prefetch0 ddp; do
    case $variant in
      zero3_prefetch1) run "$variant.$round" --set dist.strategy=zero3 --set dist.prefetch=1 ;;
      zero3_prefetch0) run "$variant.$round" --set dist.strategy=zero3 --set dist.prefetch=0 ;;
      ddp) run "$variant.$round" --set dist.strategy=ddp ;;
    esac
  done
done

"$python" - "$out" "$rounds" <<'EOF'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
rows = {}
for variant in ("zero3_prefetch1", "zero3_prefetch0", "ddp"):
    steps, comm, wait = [], [], []
    for r in range(1, rounds + 1):
        recs = [json.loads(l) for l in open(f"{out}/{variant}.{r}/metrics.jsonl")]
        recs = {j["step"]: j for j in recs if j.get("event") == "step"}
        steps.append((recs[12]["elapsed_s"] - recs[2]["elapsed_s"]) / 10)
        comm.append(statistics.mean(recs[s]["comm_ms"] for s in range(3, 13)))
        wait.append(statistics.mean(recs[s]["comm_wait_ms"] for s in range(3, 13)))
    rows[variant] = (statistics.median(steps), statistics.median(comm), statistics.median(wait), steps)
ddp = rows["ddp"][0]
print("| run | s/step (median of %d) | vs DDP | comm_ms | comm_wait_ms | wait / comm | every round's s/step |" % rounds)
print("|---|---|---|---|---|---|---|")
for v, (s, c, w, all_) in rows.items():
    print(f"| {v} | {s:.3f} | {s / ddp:.2f}x | {c:.0f} | {w:.0f} | {100 * w / c:.0f} % | {', '.join(f'{x:.3f}' for x in all_)} |")
EOF
