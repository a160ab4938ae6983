#!/usr/bin/env bash
# A CPU-only build builds: configures sft with CUDA compiled out (SFT_CUDA=OFF) against the
# same LibTorch, builds the sft binary, checks that the units CUDA changes (src/util/cuda.cpp,
# src/dist/context.cpp, src/dist/backend_check.cpp; CMakeLists.txt) reference no CUDA or NCCL
# symbol, and that the binary says CUDA is not compiled in and refuses a CUDA device. With
# SFT_CUDA=OFF Torch's CMake never looks for the CUDA toolkit (cmake/cuda_toolkit.cmake's stub),
# so this also checks that such a build links and runs.
#
# Every other unit compiles to the same object with CUDA on or off, so it is taken from the
# main build (MAIN_BUILD) instead of being compiled again (18 minutes of CI on 2 cores), where
# tests/build/reuse_objects.sh shows it per unit: the flags differ in nothing but SFT_WITH_CUDA
# and the CUDA include folder, the unit read no header from a CUDA or NCCL folder, and neither it
# nor an sft header it read mentions SFT_WITH_CUDA. Anything else is compiled here.
# Usage: tests/build/cpu_only_build.sh SOURCE_DIR TORCH_PREFIX WORK_DIR [MAIN_BUILD]
set -euo pipefail
src=$1 torch_prefix=$2 work=$3 main=${4:-}
rm -rf "$work"
cmake -S "$src" -B "$work" -DCMAKE_BUILD_TYPE=Release -DSFT_BUILD_TESTS=OFF -DSFT_CUDA=OFF \
  -DCMAKE_PREFIX_PATH="$torch_prefix" > "$work.configure.log" 2>&1 || { cat "$work.configure.log"; exit 1; }
grep -q "CUDA compiled in: OFF" "$work.configure.log" || { echo "configure did not switch CUDA off"; exit 1; }

if [ -n "$main" ]; then
  "$src/tests/build/reuse_objects.sh" "$src" "$main" "$work" '(^|/)(cuda|nvidia|nccl)[^/]*/' 'SFT_WITH_CUDA' \
    's/-DSFT_WITH_CUDA=[01]//' 's# -isystem [^ ]*cuda[^ ]*/include##g'
fi
cmake --build "$work" --target sft -j2 -- -s
for obj in src/util/cuda.cpp.o src/dist/context.cpp.o src/dist/backend_check.cpp.o; do
  o="$work/CMakeFiles/sft_core.dir/$obj"
  if nm -C "$o" | grep -E "c10::cuda::|ProcessGroupNCCL|cudaEvent"; then
    echo "$obj references CUDA symbols in a CPU-only build"; exit 1
  fi
  if [ -n "$main" ] && cmp -s "$o" "$main/CMakeFiles/sft_core.dir/$obj"; then
    echo "$obj is the CUDA build's object: it was not compiled with CUDA off"; exit 1
  fi
done
"$work/sft" version --json | tee "$work.version.json"
grep -q '"cuda_compiled":false' "$work.version.json" || { echo "sft says CUDA is compiled in"; exit 1; }
if "$work/sft" bench --preset tiny --device cuda --steps 1 --warmup 0 > "$work.cuda.log" 2>&1; then
  echo "a CUDA device was accepted by a CPU-only build"; exit 1
fi
grep -i "cuda" "$work.cuda.log" | head -2
rm -rf "$work" "$work".*
echo "CPU-only build: sft built and runs, CUDA compiled out"
