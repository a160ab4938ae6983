#!/usr/bin/env bash
# -DSFT_GLOO=OFF builds without Gloo's headers: configures with Gloo compiled out and a
# poisoned gloo/ folder first on the include path (any Gloo header included stops the
# compile), compiles the one unit Gloo touches (src/dist/context.cpp) and the backend check,
# and checks that the object references no ProcessGroupGloo symbol. No link, no other unit.
# Usage: tests/build/gloo_off_build.sh SOURCE_DIR TORCH_PREFIX WORK_DIR
set -euo pipefail
src=$1 torch_prefix=$2 work=$3
rm -rf "$work" && mkdir -p "$work/poison/gloo/rendezvous" "$work/poison/gloo/transport"
for h in gloo/rendezvous/store.h gloo/rendezvous/prefix_store.h gloo/algorithm.h gloo/common/error.h gloo/context.h \
         gloo/transport/device.h gloo/config.h gloo/allreduce.h gloo/allgather.h gloo/math.h; do
  mkdir -p "$work/poison/$(dirname "$h")"
  echo "#error \"$h included although sft is configured with SFT_GLOO=OFF\"" > "$work/poison/$h"
done
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DSFT_BUILD_TESTS=OFF -DSFT_GLOO=OFF \
  -DCMAKE_CXX_FLAGS="-I$work/poison" -DCMAKE_PREFIX_PATH="$torch_prefix" > "$work/configure.log" 2>&1 ||
  { cat "$work/configure.log"; exit 1; }
grep -q "Gloo compiled out" "$work/configure.log" || { echo "FAIL: the configure did not compile Gloo out"; exit 1; }
for obj in src/dist/context.cpp.o src/dist/backend_check.cpp.o; do
  make -C "$work/build" -s "$obj" || { echo "FAIL: $obj does not compile without Gloo"; exit 1; }
done
if nm -C "$work/build/CMakeFiles/sft_core.dir/src/dist/context.cpp.o" | grep -m3 "ProcessGroupGloo"; then
  echo "FAIL: context.cpp.o references ProcessGroupGloo in a build without Gloo"; exit 1
fi
rm -rf "$work"
echo "passed: SFT_GLOO=OFF compiles src/dist/context.cpp without Gloo's headers"
