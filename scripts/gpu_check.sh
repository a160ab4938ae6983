#!/usr/bin/env bash
# The GPU check: builds sft against the machine's own PyTorch (its LibTorch, with CUDA) and checks
# the paths CI can only compile. It gates: every check below asserts, the run goes on after a miss,
# prints one table at the end, writes it to OUT/summary.json, and exits 1 if any check missed.
#   steps        bf16 on the GPU against fp32 on the CPU: loss at steps 1 and 2 (the second after the
#                fused AdamW update) and the gradient norm, the same tiny run and seed
#   hf_bf16      a bf16 sharded checkpoint saved by transformers, loaded onto the GPU in bf16 and scored:
#                per-token log-probs within bf16's tolerance of fp32 on the CPU
#   tiny_dmt     the tiny DMT run end to end over a one-rank NCCL group, then its scores (sft eval)
#   kv_cache     KV-cached generation with bf16 weights (the evaluator's path) equal to uncached
#   memory_*     every phase the trainer measured (CUDA caching allocator) within 15 % of its plan:
#                a dense 1B run and a one-rank ZeRO-3 0.8B run
#   mfu          sft bench --preset 1b --dtype bf16: model FLOPs utilisation above a floor (default 25 %;
#                35 % is the level to aim for on H100/H200)
#   zero3_trace  a one-rank ZeRO-3 bench's trace: a gather (NCCL kernel, on sft's communication stream)
#                running while a GEMM runs; the bench's MFU with and without prefetch
#   multi_gpu    with two or more GPUs: DDP and ZeRO-1/2/3 over NCCL equal one process (fp32, 20 steps)
# Three settings, one script:
#   - a lab's GPU box after scripts/setup.sh: the venv's python (SFT_VENV, or setup.sh's default), the
#     system's packages;
#   - a bare GPU machine without a package registry: its own python3's torch; the Debian packages sft
#     builds with come from .debs/ (scripts/gpu_check.sh --fetch-debs on a machine with apt) only when
#     the system lacks them;
#   - --cpu: the same steps on the CPU (Gloo instead of NCCL, smaller shapes, two Gloo ranks for the
#     multi-rank check, bf16 autocast on the CPU), run by ctest in CI from a clean environment; it builds
#     into --build-dir (default build-gpu; CI passes its own build, so the build step is incremental).
# Usage: scripts/gpu_check.sh [--cpu] [--out DIR] [--build-dir DIR] [--peak-tflops N] [--mfu-floor F]
#                             [--dry-run] [--fetch-debs]
set -euo pipefail
cd "$(dirname "$0")/.."

CPU=0 DRY=0 FETCH=0 PEAK_TFLOPS=989 MFU_FLOOR=0.25 MFU_AIM=0.35 OUT=${OUT:-gpu_out} BUILD=build-gpu DEBS=.debs
while [ $# -gt 0 ]; do
  case $1 in
    --cpu) CPU=1; shift ;;
    --dry-run) DRY=1; shift ;;
    --fetch-debs) FETCH=1; shift ;;
    --peak-tflops) PEAK_TFLOPS=$2; shift 2 ;;
    --mfu-floor) MFU_FLOOR=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --build-dir) BUILD=$2; shift 2 ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
# Build-time Debian packages (headers, CMake/pkg-config files) and the shared libraries they name.
DEB_PACKAGES=(libsentencepiece-dev libsentencepiece0 libprotobuf-lite32 nlohmann-json3-dev libcli11-dev
              libyaml-cpp-dev libyaml-cpp0.7 libgloo-dev libpcre2-dev libpcre2-8-0 libutf8proc-dev libutf8proc2 zlib1g-dev
              pkgconf pkgconf-bin libpkgconf3 pkg-config)
if [ "$FETCH" = 1 ]; then
  mkdir -p "$DEBS" && (cd "$DEBS" && apt-get download "${DEB_PACKAGES[@]}")
  du -sh "$DEBS"
  exit 0
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RECORD=$OUT/checks.jsonl
rm -f "$RECORD"
# The run folders are this script's own, replaced on every run (sft's --overwrite refuses a folder
# that an sft before its outputs record wrote, and a stale one must not pass for this run's).
for d in steps_fp32 steps_bf16 tiny_dmt memory_dense memory_zero3 eq_single eq_ddp eq_zero1 eq_zero2 eq_zero3; do
  rm -rf "${OUT:?}/$d"
done
start=$(date +%s)

# ---- the python whose torch sft builds against ---------------------------------------------------
# $PYTHON; else the one a configured build dir names (SFT_PYTHON); else scripts/setup.sh's venv; else
# a python3 on PATH that has torch.
has_torch() { [ -x "$1" ] && "$1" -c 'import torch' > /dev/null 2>&1; }
find_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  local cached pin venv
  cached=$(sed -n 's/^SFT_PYTHON:FILEPATH=//p' "$BUILD/CMakeCache.txt" 2>/dev/null || true)
  if [ -n "$cached" ] && has_torch "$cached"; then echo "$cached"; return; fi
  pin=$(sed -n 's/^torch==//p' scripts/requirements.txt)
  venv=${SFT_VENV:-${XDG_DATA_HOME:-${HOME:-/root}/.local/share}/sft/venv-torch$pin}
  if has_torch "$venv/bin/python"; then echo "$venv/bin/python"; return; fi
  local p
  for p in python3 python; do
    if command -v "$p" > /dev/null && has_torch "$(command -v "$p")"; then command -v "$p"; return; fi
  done
  return 1
}
if [ "$DRY" = 1 ]; then
  PY=${PYTHON:-python3}
else
  PY=$(find_python) || { echo "gpu_check.sh: no python with torch: set PYTHON, run scripts/setup.sh, or install torch" >&2; exit 2; }
fi

if [ "$CPU" = 1 ]; then
  DEV=cpu BACKEND=gloo CUDA_FLAG=""
else
  DEV=cuda BACKEND=nccl CUDA_FLAG="-DSFT_CUDA=ON"
fi
if [ "$DRY" = 0 ]; then
  "$PY" - "$OUT/env.json" "$CPU" <<'PY'
import json, subprocess, sys, torch
cpu = sys.argv[2] == "1"
env = {"mode": "cpu" if cpu else "gpu", "python": sys.executable, "torch": torch.__version__,
       "torch_cuda": torch.version.cuda, "gpus": 0 if cpu else torch.cuda.device_count(),
       "device": "cpu" if cpu else torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none visible",
       "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()}
json.dump(env, open(sys.argv[1], "w"), indent=1)
print(json.dumps(env))
if not cpu and not torch.cuda.is_available():
    sys.exit("gpu_check.sh: this python's torch sees no GPU (torch.cuda.is_available() is False); --cpu runs the CPU check")
PY
  GPUS=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["gpus"])' "$OUT/env.json")
else
  GPUS=1
fi

# ---- packages: the system's, else carried .debs --------------------------------------------------
missing_packages() {
  local h
  for h in /usr/include/sentencepiece_processor.h /usr/include/nlohmann/json.hpp /usr/include/CLI/CLI.hpp \
           /usr/include/yaml-cpp/yaml.h /usr/include/gloo/rendezvous/store.h /usr/include/pcre2.h \
           /usr/include/utf8proc.h; do
    [ -e "$h" ] || { echo "$h"; return; }
  done
  command -v pkg-config > /dev/null || echo pkg-config
}
PREFIX_ARGS=()
if [ "$DRY" = 0 ] && [ -n "$(missing_packages)" ]; then
  echo "gpu_check.sh: the system lacks $(missing_packages): using the Debian packages in $DEBS/"
  [ -d "$DEBS" ] || { echo "gpu_check.sh: $DEBS/ missing: apt-get install ${DEB_PACKAGES[*]}, or run scripts/gpu_check.sh --fetch-debs on a machine with apt and carry $DEBS/" >&2; exit 2; }
  PREFIX=$PWD/.debs-root
  mkdir -p "$PREFIX"
  for f in "$DEBS"/*.deb; do dpkg -x "$f" "$PREFIX"; done
  sed -i "s|^prefix=/usr|prefix=$PREFIX/usr|" "$PREFIX"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc "$PREFIX"/usr/share/pkgconfig/*.pc 2>/dev/null || true
  export PATH="$PREFIX/usr/bin:$PATH" LD_LIBRARY_PATH="$PREFIX/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  export PKG_CONFIG_PATH="$PREFIX/usr/lib/x86_64-linux-gnu/pkgconfig:$PREFIX/usr/share/pkgconfig:${PKG_CONFIG_PATH:-}"
  PREFIX_ARGS=("-DGLOO_ROOT=$PREFIX/usr/include")
  TORCH_EXTRA=";$PREFIX/usr"
fi

# ---- steps ---------------------------------------------------------------------------------------
run() {  # run "what" command...: prints it resolved; runs it unless --dry-run; output to OUT/<n>.log
  local what=$1; shift
  printf '== %s\n   %s\n' "$what" "$*"
  [ "$DRY" = 1 ] && return 0
  local t0=$SECONDS
  "$@" >> "$OUT/steps.log" 2>&1 || { echo "   (failed after $((SECONDS - t0)) s: see $OUT/steps.log)"; return 1; }
  echo "   ($((SECONDS - t0)) s)"
}
check() {  # check NAME SUBCOMMAND ARGS...: one of scripts/gpu_check.py's checks
  local name=$1 sub=$2; shift 2
  [ "$DRY" = 1 ] && { printf '== check %s (%s)\n' "$name" "$sub"; return 0; }
  "$PY" scripts/gpu_check.py "$sub" --record "$RECORD" --name "$name" "$@" || true
}
fail() {  # fail NAME WHY: a step that failed before its check could run
  [ "$DRY" = 1 ] && return 0
  "$PY" -c 'import json,sys; open(sys.argv[1],"a").write(json.dumps({"check":sys.argv[2],"ok":False,"value":"step failed","limit":"-","detail":sys.argv[3]})+"\n")' \
    "$RECORD" "$1" "$2"
  echo "FAIL  $1: $2"
}
: > "$OUT/steps.log"

TORCH_PREFIX=$([ "$DRY" = 1 ] && echo '$(python -c "import torch.utils; print(torch.utils.cmake_prefix_path)")' ||
               "$PY" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
run "configure against $PY's torch" cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release $CUDA_FLAG \
  "-DCMAKE_PREFIX_PATH=$TORCH_PREFIX${TORCH_EXTRA:-}" "-DSFT_PYTHON=$PY" "${PREFIX_ARGS[@]}" ||
  { fail build "configure failed"; }
run "build sft" cmake --build "$BUILD" --target sft -j"$(nproc)" || fail build "build failed"
SFT=$BUILD/sft
if [ "$DRY" = 0 ] && ! [ -x "$SFT" ]; then
  "$PY" scripts/gpu_check.py summary --record "$RECORD" --out "$OUT/summary.json" --env "$OUT/env.json" --seconds $(( $(date +%s) - start )) || true
  exit 1
fi
[ "$DRY" = 1 ] || "$SFT" version | tee -a "$OUT/steps.log"

# The tiny runs: the shipped data and tiny model; on the CPU a sixteenth of the data (plumbing, not scores).
TINY=(--config configs/tiny/dmt.yaml --set data.cache_dir="$OUT/cache" --set train.export_stage_models=false)
[ "$CPU" = 1 ] && TINY+=(--set datasets.math.fraction=1/16 --set datasets.code.fraction=1/16 --set datasets.general.fraction=1/16)

# steps: bf16 on the device against fp32 on the CPU, two steps.
two=(train "${TINY[@]}" --set train.max_steps=2 --set train.log_every=1 --set train.threads=2)
run "2 steps fp32 on the CPU" "$SFT" "${two[@]}" --output-dir "$OUT/steps_fp32" --set train.device=cpu \
  --set train.precision=fp32 --overwrite &&
run "2 steps bf16 on $DEV" "$SFT" "${two[@]}" --output-dir "$OUT/steps_bf16" --set train.device=$DEV \
  --set train.precision=bf16 --overwrite &&
check steps steps-match --reference "$OUT/steps_fp32/metrics.jsonl" --device "$OUT/steps_bf16/metrics.jsonl" \
  --tol-loss 0.02 --tol-grad 0.05 || fail steps "a run failed"

# hf_bf16: a transformers-saved bf16 sharded checkpoint scored on the device in bf16 and on the CPU in fp32.
run "a tiny LLaMA saved in bf16 shards (transformers)" "$PY" scripts/gpu_check.py make-hf-model "$OUT/hf_bf16" &&
"$PY" -c 'import random; random.seed(3); [print("{\"ids\": [%s]}" % ",".join(str(random.randrange(3, 1024)) for _ in range(96))) for _ in range(8)]' \
  > "$OUT/ids.jsonl" &&
run "score it in fp32 on the CPU" bash -c "$SFT score --model $OUT/hf_bf16 --tokenizer data/tiny/tokenizer.model \
  --input $OUT/ids.jsonl --dtype fp32 --device cpu > $OUT/score_fp32.jsonl" &&
run "score it in bf16 on $DEV" bash -c "$SFT score --model $OUT/hf_bf16 --tokenizer data/tiny/tokenizer.model \
  --input $OUT/ids.jsonl --dtype bf16 --device $DEV > $OUT/score_bf16.jsonl" &&
check hf_bf16 scores-match --reference "$OUT/score_fp32.jsonl" --device "$OUT/score_bf16.jsonl" \
  --tol-mean 0.05 --tol-max 0.3 || fail hf_bf16 "a step failed"

# tiny_dmt: the tiny DMT run end to end over a one-rank group of the device's backend, then its scores.
EVAL_LIMIT=()
[ "$CPU" = 1 ] && EVAL_LIMIT=(--limit 12)
run "tiny DMT on $DEV over a one-rank $BACKEND group" "$SFT" train "${TINY[@]}" --output-dir "$OUT/tiny_dmt" \
  --set train.device=$DEV --set dist.backend=$BACKEND --overwrite &&
run "its scores" "$SFT" eval --model "$OUT/tiny_dmt/final" --benchmark math,code,general --device $DEV \
  --dtype bf16 "${EVAL_LIMIT[@]}" --out "$OUT/tiny_eval.json" &&
check tiny_dmt tiny-dmt --log "$OUT/steps.log" --scores "$OUT/tiny_eval.json" --backend $BACKEND ||
  fail tiny_dmt "the run or its evaluation failed"

# kv_cache: generation with bf16 weights (as the evaluator loads them on a GPU), cached and uncached.
gen=(generate --model "$OUT/tiny_dmt/final" --template vicuna_v1.1 --max-new-tokens 48 --device $DEV --dtype bf16
     --prompt "What is 12 plus 30?" --prompt "Write a function that returns the square of x.")
run "greedy generation with the KV cache" bash -c "$SFT ${gen[*]@Q} > $OUT/gen_cached.txt" &&
run "the same without it" bash -c "$SFT ${gen[*]@Q} --no-cache > $OUT/gen_uncached.txt" &&
check kv_cache files-equal --reference "$OUT/gen_cached.txt" --device "$OUT/gen_uncached.txt" || fail kv_cache "generation failed"

# memory: the trainer's measured peak per phase against its plan, a dense run and a one-rank ZeRO-3 run.
if [ "$CPU" = 1 ]; then
  DENSE=(--set model.config.hidden_size=512 --set model.config.intermediate_size=1376 --set model.config.num_hidden_layers=8
         --set model.config.num_attention_heads=8 --set model.config.num_key_value_heads=8)
  Z3=("${DENSE[@]}")
else
  DENSE=(--set model.config.hidden_size=2048 --set model.config.intermediate_size=5632 --set model.config.num_hidden_layers=22
         --set model.config.num_attention_heads=32 --set model.config.num_key_value_heads=4)
  Z3=(--set model.config.hidden_size=2048 --set model.config.intermediate_size=5504 --set model.config.num_hidden_layers=16
      --set model.config.num_attention_heads=16 --set model.config.num_key_value_heads=16)
fi
mem=(train "${TINY[@]}" --set train.device=$DEV --set dist.backend=$BACKEND --set train.precision=bf16
     --set train.max_steps=3 --set train.save_every=2 --set train.batch_size=2 --set train.activation_checkpointing=true)
run "a dense run, 3 steps" "$SFT" "${mem[@]}" "${DENSE[@]}" --output-dir "$OUT/memory_dense" --overwrite &&
check memory_dense memory-phases --metrics "$OUT/memory_dense/metrics.jsonl" --tol 0.15 || fail memory_dense "the run failed"
run "a one-rank ZeRO-3 run, 3 steps" "$SFT" "${mem[@]}" "${Z3[@]}" --set dist.strategy=zero3 --output-dir "$OUT/memory_zero3" \
  --overwrite &&
check memory_zero3 memory-phases --metrics "$OUT/memory_zero3/metrics.jsonl" --tol 0.15 || fail memory_zero3 "the run failed"

# mfu: the 1B bench (the tiny preset's throughput on the CPU, which has no stated peak).
PEAK_GFLOPS=$(awk -v t="$PEAK_TFLOPS" 'BEGIN { printf "%d", t * 1000 }')
if [ "$CPU" = 1 ]; then
  BENCH=(bench --preset tiny --dtype bf16 --device cpu --steps 3 --warmup 1 --json)
else
  BENCH=(bench --preset 1b --dtype bf16 --device cuda --steps 10 --warmup 3 --json --peak-gflops "$PEAK_GFLOPS")
fi
run "sft ${BENCH[*]}" bash -c "$SFT ${BENCH[*]} > $OUT/bench.json" &&
check mfu mfu --bench "$OUT/bench.json" --floor "$MFU_FLOOR" --aim "$MFU_AIM" || fail mfu "the bench failed"

# zero3_trace: gathers overlapping compute in a ZeRO-3 bench's trace, and its MFU with and without prefetch.
# One GPU is enough (the one-rank group's gathers are real); on the CPU two Gloo ranks.
if [ "$CPU" = 1 ]; then
  port=$((20000 + RANDOM % 20000))
  z3bench() {  # z3bench PREFETCH OUTFILE [--profile PATH]
    local pf=$1 out=$2; shift 2
    RANK=1 WORLD_SIZE=2 LOCAL_RANK=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port OMP_NUM_THREADS=1 \
      "$SFT" bench --preset tiny --dtype bf16 --threads 1 --steps 2 --warmup 1 --strategy zero3 --prefetch "$pf" --json \
      "$@" > /dev/null 2>&1 &
    RANK=0 WORLD_SIZE=2 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port OMP_NUM_THREADS=1 \
      "$SFT" bench --preset tiny --dtype bf16 --threads 1 --steps 2 --warmup 1 --strategy zero3 --prefetch "$pf" --json \
      "$@" > "$out"
    wait
    port=$((port + 1))
  }
  TRACE=$OUT/zero3_trace.json.rank0
else
  z3bench() {
    local pf=$1 out=$2; shift 2
    "$SFT" bench --preset 1b --dtype bf16 --device cuda --steps 5 --warmup 2 --strategy zero3 --prefetch "$pf" --json \
      --peak-gflops "$PEAK_GFLOPS" "$@" > "$out"
  }
  TRACE=$OUT/zero3_trace.json
fi
run "ZeRO-3 bench, prefetch 1, traced" z3bench 1 "$OUT/bench_zero3.json" --profile "$OUT/zero3_trace.json" &&
run "ZeRO-3 bench, prefetch 0" z3bench 0 "$OUT/bench_zero3_noprefetch.json" &&
check zero3_trace trace-overlap --trace "$TRACE" &&
check zero3_mfu mfu --bench "$OUT/bench_zero3.json" --other "$OUT/bench_zero3_noprefetch.json" --floor 0 --aim "$MFU_AIM" ||
  fail zero3_trace "the ZeRO-3 bench failed"

# multi_gpu: every strategy on two ranks equals one process (fp32, 20 steps); on the CPU two Gloo ranks.
if [ "$CPU" = 1 ] || [ "$GPUS" -ge 2 ]; then
  eq=(train "${TINY[@]}" --set train.precision=fp32 --set train.max_steps=20 --set train.batch_size=2 --set train.threads=1
      --set train.device=$DEV --set dist.timeout_s=300)
  two_ranks() {  # two_ranks OUTDIR SETTINGS...
    local dir=$1 port=$((20000 + RANDOM % 20000)); shift
    RANK=1 WORLD_SIZE=2 LOCAL_RANK=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port OMP_NUM_THREADS=1 \
      "$SFT" "${eq[@]}" --set train.grad_accum=1 --output-dir "$dir" "$@" > "$dir.rank1.log" 2>&1 &
    local other=$!
    RANK=0 WORLD_SIZE=2 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port OMP_NUM_THREADS=1 \
      "$SFT" "${eq[@]}" --set train.grad_accum=1 --output-dir "$dir" "$@" && wait $other
  }
  ok=1
  run "one process, 20 fp32 steps" "$SFT" "${eq[@]}" --set train.grad_accum=2 --output-dir "$OUT/eq_single" --overwrite || ok=0
  runs=()
  for s in ddp zero1 zero2 zero3; do
    rm -rf "$OUT/eq_$s"
    run "two ranks, $s" two_ranks "$OUT/eq_$s" --set dist.strategy=$s || ok=0
    runs+=("$OUT/eq_$s/final")
  done
  if [ "$ok" = 1 ]; then
    check multi_gpu weights-equal --reference "$OUT/eq_single/final" --runs "${runs[@]}" --tol 1e-5
  else
    fail multi_gpu "a run failed"
  fi
else
  echo "== multi_gpu: one GPU here, skipped (needs two)"
fi

[ "$DRY" = 1 ] && exit 0
"$PY" scripts/gpu_check.py summary --record "$RECORD" --out "$OUT/summary.json" --env "$OUT/env.json" \
  --seconds $(( $(date +%s) - start ))
