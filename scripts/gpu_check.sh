#!/usr/bin/env bash
# The GPU check: builds sft against the GPU machine's own PyTorch (its LibTorch, with CUDA)
# and checks the CUDA paths that CI can only compile:
#   1. bf16 autocast forward and backward on CUDA against fp32 on the CPU (first-step loss
#      and gradient norm of the same tiny training step; tolerance below);
#   2. KV-cached greedy generation on CUDA equal to uncached;
#   3. the tiny DMT run end to end on one GPU, with its scores;
#   4. a one-rank NCCL process group (dist.backend=nccl: the trainer's broadcasts, barriers and
#      scalar all-reduces run on it; gradient buckets need two ranks, so two GPUs);
#   5. peak CUDA memory (caching allocator) against the dry-run planner's estimate;
#   6. `sft bench --preset 1b --dtype bf16` tokens/s and MFU;
#   7. a ZeRO-3 run on one GPU (one-rank NCCL group) of a 0.8B model built on the meta device
#      and sharded (units gathered per layer, streamed export): its build and step peaks
#      against the dry-run planner's.
# That machine has no package registry: the Debian -dev packages sft builds with travel in
# .debs/ (fetch them here first with `scripts/gpu_check.sh --fetch-debs`, 1.8 MB) and are
# extracted into a prefix. Figures go to $OUT (default gpu_out/) and to stdout.
#
# Usage: scripts/gpu_check.sh [--dry-run] [--fetch-debs] [--peak-tflops N] [--out DIR]
#   --dry-run      print every step, resolved, and run none (CI runs this)
#   --peak-tflops  the GPU's dense bf16 peak for MFU (default 989: H100/H200 SXM datasheet)
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0 FETCH=0 PEAK_TFLOPS=989 OUT=${OUT:-gpu_out} DEBS=.debs
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY=1; shift ;;
    --fetch-debs) FETCH=1; shift ;;
    --peak-tflops) PEAK_TFLOPS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
# Build-time packages only (headers, CMake/pkg-config files) and the shared libraries they name.
DEB_PACKAGES=(libsentencepiece-dev libsentencepiece0 libprotobuf-lite32 nlohmann-json3-dev libcli11-dev
              libyaml-cpp-dev libyaml-cpp0.7 libgloo-dev pkgconf pkgconf-bin libpkgconf3 pkg-config)

if [ "$FETCH" = 1 ]; then
  mkdir -p "$DEBS" && (cd "$DEBS" && apt-get download "${DEB_PACKAGES[@]}")
  du -sh "$DEBS"
  exit 0
fi

PY=${PYTHON:-python3}
PREFIX=$PWD/.debs-root
BUILD=build-gpu
SFT=$BUILD/sft
TOL_LOSS=0.02  # |loss_bf16 - loss_fp32| / loss_fp32 at step 1: bf16 keeps ~3 significant digits
TOL_GRAD=0.05  # the same for the gradient norm, which sums many bf16 products
TINY=(--config configs/tiny/dmt.yaml --set data.cache_dir="$OUT/cache")
PEAK_GFLOPS=$(awk -v t="$PEAK_TFLOPS" 'BEGIN { printf "%d", t * 1000 }')
FAILED=0  # checks that failed; the script goes on to the next one and exits 1 at the end

step() {  # step "what" command...: prints it resolved; runs it unless --dry-run
  local what=$1; shift
  printf '== %s\n   %s\n' "$what" "$*"
  if [ "$DRY" = 0 ]; then "$@" || { echo "   FAILED: $what"; FAILED=$((FAILED + 1)); }; fi
}
step_to() {  # step_to FILE "what" command...: the same, stdout saved to FILE (and its end shown)
  local file=$1 what=$2; shift 2
  printf '== %s\n   %s > %s\n' "$what" "$*" "$file"
  if [ "$DRY" = 0 ]; then
    "$@" > "$file" || { echo "   FAILED: $what"; FAILED=$((FAILED + 1)); }
    tail -c 600 "$file"
  fi
}

if [ "$DRY" = 1 ]; then
  TORCH_PREFIX='$(python3 -c "import torch.utils; print(torch.utils.cmake_prefix_path)")'
else
  mkdir -p "$OUT"
  TORCH_PREFIX=$($PY -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
  $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))' |
    tee "$OUT/env.txt"
  [ -d "$DEBS" ] || { echo "gpu_check.sh: $DEBS/ missing: run scripts/gpu_check.sh --fetch-debs first and carry it" >&2; exit 1; }
  mkdir -p "$PREFIX"
  for f in "$DEBS"/*.deb; do dpkg -x "$f" "$PREFIX"; done
  sed -i "s|^prefix=/usr|prefix=$PREFIX/usr|" "$PREFIX"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc "$PREFIX"/usr/share/pkgconfig/*.pc 2>/dev/null || true
  export PATH="$PREFIX/usr/bin:$PATH"  # pkg-config, for CMake's FindPkgConfig
  export LD_LIBRARY_PATH="$PREFIX/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  export PKG_CONFIG_PATH="$PREFIX/usr/lib/x86_64-linux-gnu/pkgconfig:$PREFIX/usr/share/pkgconfig:${PKG_CONFIG_PATH:-}"
fi

start=$(date +%s)
step "configure against the machine's torch (CUDA compiled in)" \
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSFT_BUILD_TESTS=OFF -DSFT_CUDA=ON \
  "-DCMAKE_PREFIX_PATH=$TORCH_PREFIX;$PREFIX/usr" "-DGLOO_ROOT=$PREFIX/usr/include"
step "build (goal: under 4 minutes)" cmake --build "$BUILD" -j"$(nproc)"
[ "$DRY" = 1 ] || [ -x "$SFT" ] || { echo "gpu_check.sh: the build failed; nothing else can run" >&2; exit 1; }
step "version: LibTorch, its CUDA, device" "$SFT" version
[ "$DRY" = 1 ] || echo "build: $(( $(date +%s) - start )) s" | tee -a "$OUT/env.txt"

# 1. bf16 autocast on CUDA against fp32 on the CPU: one step of the same tiny run, same seed.
one_step=(train "${TINY[@]}" --set train.max_steps=2 --set train.log_every=1 --set eval.at_end=false
          --set eval.at_stage_end=false --set train.export_stage_models=false)
step "fp32 on the CPU, 2 steps" "$SFT" "${one_step[@]}" --output-dir "$OUT/step_cpu" --set train.device=cpu \
  --set train.precision=fp32
step "bf16 autocast on CUDA, 2 steps" "$SFT" "${one_step[@]}" --output-dir "$OUT/step_cuda" --set train.device=cuda \
  --set train.precision=bf16
step "compare loss and gradient norm (tolerances $TOL_LOSS, $TOL_GRAD)" \
  "$PY" - "$OUT/step_cpu/metrics.jsonl" "$OUT/step_cuda/metrics.jsonl" "$TOL_LOSS" "$TOL_GRAD" <<'PY'
import json, sys
def first(p):
    return next(r for r in map(json.loads, open(p)) if r.get("event") == "step")
a, b = first(sys.argv[1]), first(sys.argv[2])
ok = True
for key, tol in (("loss", float(sys.argv[3])), ("grad_norm", float(sys.argv[4]))):
    rel = abs(a[key] - b[key]) / abs(a[key])
    ok &= rel <= tol
    print(f"{key}: cpu fp32 {a[key]:.6f}  cuda bf16 {b[key]:.6f}  rel diff {rel:.4f} (tol {tol}) {'OK' if rel <= tol else 'FAIL'}")
sys.exit(0 if ok else 1)
PY

# 3 and 4 and 5: the tiny DMT run on one GPU over a one-rank NCCL group, then its scores.
step "tiny DMT on one GPU, one-rank NCCL group, bf16 (log: $OUT/tiny_dmt.log)" \
  bash -c "set -o pipefail; $SFT train ${TINY[*]} --output-dir $OUT/tiny_dmt --set train.device=cuda \
           --set dist.backend=nccl 2>&1 | tee $OUT/tiny_dmt.log | grep -E 'nccl backend|done:'"
step "its scores" "$SFT" eval --model "$OUT/tiny_dmt/final" --benchmark math,code,general --device cuda \
  --out "$OUT/tiny_eval.json"
step_to "$OUT/plan.json" "dry-run planner for the same run" "$SFT" train --dry-run --json "${TINY[@]}" \
  --set train.device=cuda --set dist.backend=nccl
if [ "$DRY" = 0 ]; then
  "$PY" - "$OUT/tiny_dmt/metrics.jsonl" "$OUT/plan.json" <<'PY' | tee "$OUT/memory.txt"
import json, sys
end = [r for r in map(json.loads, open(sys.argv[1])) if r.get("event") == "end"][-1]
plan = json.load(open(sys.argv[2]))["memory_per_rank"]
measured, estimate = end["peak_memory_mb"], plan["total_gib"] * 1024
print(f"peak CUDA memory (allocated): measured {measured:.1f} MiB, planner {estimate:.1f} MiB, "
      f"planner/measured {estimate / measured:.3f}")
print("planner breakdown:", json.dumps(plan)[:1200])
PY
fi

# 2. KV-cached greedy generation equals uncached, on CUDA.
gen=(generate --model "$OUT/tiny_dmt/final" --template vicuna_v1.1 --max-new-tokens 48 --device cuda
     --prompt "What is 12 plus 30?" --prompt "Write a function that returns the square of x.")
step_to "$OUT/gen_cached.txt" "greedy generation with the KV cache" "$SFT" "${gen[@]}"
step_to "$OUT/gen_uncached.txt" "greedy generation without it" "$SFT" "${gen[@]}" --no-cache
if [ "$DRY" = 0 ]; then
  if cmp -s "$OUT/gen_cached.txt" "$OUT/gen_uncached.txt"; then echo "kv cache: cached == uncached OK"
  else echo "kv cache: cached != uncached FAIL"; FAILED=$((FAILED + 1)); diff "$OUT/gen_cached.txt" "$OUT/gen_uncached.txt" || true; fi
fi

# 7. ZeRO-3 on one GPU: the sharded build (meta device, shards filled from the seeded init),
# per-unit gathers in forward and backward, fused AdamW, and the streamed export.
Z3=(train "${TINY[@]}" --set train.device=cuda --set dist.backend=nccl --set dist.strategy=zero3
    --set train.max_steps=3 --set train.log_every=1 --set eval.at_end=false --set train.activation_checkpointing=true
    --set model.config.hidden_size=2048 --set model.config.intermediate_size=5504
    --set model.config.num_hidden_layers=16 --set model.config.num_attention_heads=16
    --set model.config.num_key_value_heads=16 --set train.export_stage_models=false)
step "ZeRO-3 of a 0.8B model on one GPU, 3 steps (log: $OUT/zero3.log)" \
  bash -c "set -o pipefail; $SFT ${Z3[*]} --output-dir $OUT/zero3 2>&1 | tee $OUT/zero3.log | grep -E 'model state|done:'"
step_to "$OUT/zero3_plan.json" "dry-run planner for it" "$SFT" "${Z3[@]}" --dry-run --json
if [ "$DRY" = 0 ]; then
  "$PY" - "$OUT/zero3/metrics.jsonl" "$OUT/zero3_plan.json" <<'PY' | tee "$OUT/zero3_memory.txt"
import json, sys
recs = list(map(json.loads, open(sys.argv[1])))
build = [r for r in recs if r.get("event") == "build"][-1]
end = [r for r in recs if r.get("event") == "end"][-1]
plan = json.load(open(sys.argv[2]))["memory_per_rank"]
mib = 1024 * 1024
print(f"zero3 build: state {build['state_bytes'] / mib:.1f} MiB, peak while building {build['build_peak_bytes'] / mib:.1f} MiB "
      f"({build['parameters']} parameters)")
print(f"zero3 training peak (allocated): measured {end['peak_memory_mb']:.1f} MiB, planner {plan['total_gib'] * 1024:.1f} MiB")
memory = [r for r in recs if r.get("event") == "memory"][-1]
for phase, planned in memory["planned"].items():
    measured = memory["measured"][0].get(phase)
    ratio = f"measured/planned {measured / planned:.3f}" if measured else "not measured"
    print(f"zero3 {phase}: planned {planned / mib:.1f} MiB, measured {(measured or 0) / mib:.1f} MiB, {ratio}")
PY
fi

# 6. Throughput and MFU.
step_to "$OUT/bench-1b.json" "sft bench 1b bf16 on CUDA (tokens/s, mfu)" "$SFT" bench --preset 1b --dtype bf16 \
  --device cuda --steps 10 --warmup 3 --json --peak-gflops "$PEAK_GFLOPS"
if [ "$DRY" = 0 ]; then
  echo "gpu_check.sh: done in $(( $(date +%s) - start )) s, $FAILED check(s) failed"
  [ "$FAILED" = 0 ]
fi
