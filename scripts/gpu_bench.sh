#!/usr/bin/env bash
# The GPU path: builds sft against the machine's pip PyTorch (its LibTorch, with CUDA) and
# runs the tiny DMT config and `sft bench` in bf16 on CUDA, printing tokens/s and MFU.
# The other C++ libraries come from Debian packages extracted into a prefix, since no
# package registry is reachable there; fetch them beforehand on a Debian 12 machine:
#   mkdir -p .debs && (cd .debs && apt-get download libyaml-cpp-dev libyaml-cpp0.7 libspdlog-dev \
#     libspdlog1.10 libfmt-dev libfmt9 nlohmann-json3-dev libcli11-dev libsentencepiece-dev \
#     libsentencepiece0 libprotobuf-lite32 libgloo-dev)
# Usage: scripts/gpu_bench.sh [--debs DIR] [--peak-tflops N] [--out DIR]
#   --peak-tflops: the GPU's dense bf16 peak (default 989, H100/H200 SXM) for MFU.
set -euo pipefail
cd "$(dirname "$0")/.."
DEBS=.debs PEAK_TFLOPS=989 OUT=${OUT:-gpu_out}
while [ $# -gt 0 ]; do
  case $1 in
    --debs) DEBS=$2; shift 2 ;;
    --peak-tflops) PEAK_TFLOPS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "gpu_bench.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
mkdir -p "$OUT"
TORCH_PREFIX=$($PY -c 'import torch; print(torch.utils.cmake_prefix_path)')
ABI=$($PY -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
$PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))' | tee "$OUT/env.txt"
if [ "$ABI" != 1 ]; then
  echo "gpu_bench.sh: this torch uses the pre-C++11 std::string ABI; Debian's C++ libraries need the C++11 ABI" \
       "(pip wheels >= 2.7 on manylinux_2_28 have it)" >&2
  exit 1
fi
PREFIX=$PWD/.debs-root
if [ -d "$DEBS" ]; then
  mkdir -p "$PREFIX"
  for f in "$DEBS"/*.deb; do dpkg -x "$f" "$PREFIX"; done
fi
export LD_LIBRARY_PATH="$PREFIX/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
export PKG_CONFIG_PATH="$PREFIX/usr/lib/x86_64-linux-gnu/pkgconfig:$PREFIX/usr/share/pkgconfig:${PKG_CONFIG_PATH:-}"
sed -i "s|^prefix=/usr|prefix=$PREFIX/usr|" "$PREFIX"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc 2>/dev/null || true
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DSFT_BUILD_TESTS=OFF \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$PREFIX/usr" -DGLOO_ROOT="$PREFIX/usr/include" 2>&1 | tail -3
cmake --build build-gpu -j"$(nproc)" 2>&1 | tail -3
build-gpu/sft version | tee -a "$OUT/env.txt"

for preset in small 1b; do
  build-gpu/sft bench --preset "$preset" --dtype bf16 --device cuda --steps 10 --warmup 3 --json 2>"$OUT/bench-$preset.log" |
    tail -1 | tee "$OUT/bench-$preset.json"
  $PY - "$OUT/bench-$preset.json" "$PEAK_TFLOPS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); peak = float(sys.argv[2]) * 1e3
print(f"{r['preset']}: {r['tokens_per_s']:.0f} tokens/s, {r['achieved_gflops'] / 1e3:.1f} TFLOP/s, MFU {r['achieved_gflops'] / peak:.1%}")
PY
done
build-gpu/sft train --config configs/tiny/dmt.yaml --output-dir "$OUT/tiny_dmt" --set train.device=cuda \
  --set data.cache_dir="$OUT/cache" 2>&1 | tail -4 | tee "$OUT/tiny.txt"
