#!/usr/bin/env bash
# sft compiles, with CUDA, against the oldest LibTorch it claims (README: the GPU machine's
# PyTorch, 2.11): configures against the floor venv's torch (scripts/setup.sh installs it),
# builds the sft binary and runs `sft version`, which must name that LibTorch. A unit that reads
# no LibTorch, CUDA or NCCL header compiles to the same object against either LibTorch, so its
# object is taken from the main build (MAIN_BUILD) where tests/build/reuse_objects.sh shows
# that; every unit that reads LibTorch is compiled here.
# Usage: tests/build/torch_floor_build.sh SOURCE_DIR FLOOR_PYTHON WORK_DIR [MAIN_BUILD]
set -euo pipefail
src=$1 python=$2 work=$3 main=${4:-}
[ -x "$python" ] || { echo "no floor python at $python: run scripts/setup.sh (it installs scripts/requirements-floor.txt)"; exit 1; }
want=$(sed -n 's/^torch==//p' "$src/scripts/requirements-floor.txt")
prefix=$("$python" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
rm -rf "$work"
cmake -S "$src" -B "$work" -DCMAKE_BUILD_TYPE=Release -DSFT_BUILD_TESTS=OFF -DSFT_CUDA=ON \
  -DCMAKE_PREFIX_PATH="$prefix" > "$work.configure.log" 2>&1 || { cat "$work.configure.log"; exit 1; }
grep -q "sft: LibTorch $want, CUDA compiled in: ON" "$work.configure.log" ||
  { grep "sft: LibTorch" "$work.configure.log"; echo "configure did not find LibTorch $want with CUDA"; exit 1; }
if [ -n "$main" ]; then
  "$src/tests/build/reuse_objects.sh" "$src" "$main" "$work" '(/torch/include/|/nvidia/|(^|/)(cuda|nccl)[^/]*/)' '' \
    's# -isystem [^ ]*/torch/include[^ ]*##g' 's# -isystem [^ ]*cuda[^ ]*/include##g'
fi
cmake --build "$work" --target sft -j2 -- -s
"$work/sft" version | tee "$work.version.txt"
grep -q "libtorch $want" "$work.version.txt" || { echo "sft does not run on LibTorch $want"; exit 1; }
rm -rf "$work" "$work".*
echo "sft compiles and links with CUDA against LibTorch $want"
