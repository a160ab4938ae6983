#!/usr/bin/env bash
# A CPU-only build compiles: configures sft with CUDA off (SFT_CUDA=OFF) against the same
# LibTorch, compiles the only two translation units whose code depends on it
# (src/util/cuda.cpp, src/dist/context.cpp; CMakeLists.txt), and checks that their objects
# reference no CUDA or NCCL symbol. Every other unit is the same in both builds.
# Usage: tests/build/cpu_only_build.sh SOURCE_DIR TORCH_PREFIX WORK_DIR
set -euo pipefail
src=$1 torch_prefix=$2 work=$3
rm -rf "$work"
cmake -S "$src" -B "$work" -DCMAKE_BUILD_TYPE=Release -DSFT_BUILD_TESTS=OFF -DSFT_CUDA=OFF \
  -DCMAKE_PREFIX_PATH="$torch_prefix" > "$work.configure.log" 2>&1 || { cat "$work.configure.log"; exit 1; }
grep -q "CUDA compiled in: OFF" "$work.configure.log" || { echo "configure did not switch CUDA off"; exit 1; }
for obj in src/util/cuda.cpp.o src/dist/context.cpp.o; do
  cmake --build "$work" --target "$obj" -- -s
  o="$work/CMakeFiles/sft_core.dir/$obj"
  [ -s "$o" ] || { echo "missing $o"; exit 1; }
  if nm -C "$o" | grep -E "c10::cuda::|ProcessGroupNCCL|cudaEvent" ; then
    echo "$obj references CUDA symbols in a CPU-only build"; exit 1
  fi
  echo "$obj: compiled with SFT_CUDA=OFF, no CUDA symbols"
done
rm -rf "$work" "$work.configure.log"
