#!/usr/bin/env bash
# Configure-time checks, one case per ctest entry (configure only, no build; ~10 s each):
#   no-nvcc         a CUDA LibTorch with no nvcc to be found: the configure warns, names nvcc
#                   and says the build is CPU-only (SFT_CUDA=AUTO), and goes on CPU-only.
#   no-nvcc-cuda-on the same with -DSFT_CUDA=ON: the configure stops, naming nvcc.
#   old-nvcc        an nvcc of CUDA 12.4 first on PATH (a fake one): the warning names it and 12.6.
#   other-major-nvcc  an nvcc >= 12.6 of another CUDA major than LibTorch's (a fake one): the
#                   warning names both (sft would link a second CUDA runtime).
#   nccl-mismatch   -DSFT_NCCL_INCLUDE_DIR with a nccl.h of another NCCL release (a fake one):
#                   the configure stops naming both versions; a fake header of LibTorch's own
#                   major.minor is accepted.
#   gloo-off        -DSFT_GLOO=OFF: Gloo's headers are not looked for and Gloo is compiled out.
# nvcc is hidden by taking every folder that holds one off PATH and out of CMake's search
# (CMAKE_IGNORE_PATH), with the CUDA_* variables that point at a toolkit unset.
# Usage: tests/build/configure_checks.sh CASE SOURCE_DIR TORCH_PREFIX WORK_DIR CMAKE
# Exit: 0 passed, 1 failed, 77 skipped (the case does not apply to this LibTorch or machine).
set -uo pipefail
case=$1 src=$2 torch_prefix=$3 work=$4 cmake=$5
rm -rf "$work" && mkdir -p "$work"
log="$work/configure.log"

configure() {  # configure [cmake args...]; stdout+stderr to $log; returns cmake's status
  "$cmake" -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DSFT_BUILD_TESTS=OFF \
    -DCMAKE_PREFIX_PATH="$torch_prefix" "$@" > "$log" 2>&1
}
expect() {  # expect TEXT: the configure log holds TEXT (CMake wraps long messages: compare unwrapped)
  if ! tr -s ' \n' ' ' < "$log" | grep -qF -- "$1"; then
    echo "FAIL ($case): the configure log lacks: $1"; echo "---- $log"; cat "$log"; exit 1
  fi
}
torch_has_cuda() {  # a pip torch's prefix is torch/share/cmake, a libtorch zip's its root
  [ -e "$torch_prefix/../../lib/libtorch_cuda.so" ] || [ -e "$torch_prefix/lib/libtorch_cuda.so" ] ||
    { echo "SKIP: the LibTorch at $torch_prefix has no CUDA"; exit 77; }
}

hide_nvcc() {  # sets $ignore (for CMAKE_IGNORE_PATH) and a PATH without nvcc
  local dirs=() d
  IFS=: read -ra dirs <<< "$PATH"
  dirs+=(/usr/local/bin /usr/local/sbin /usr/bin /usr/sbin /bin /sbin /usr/local/cuda/bin /usr/cuda/bin /opt/cuda/bin)
  for d in /usr/local/cuda*/bin /opt/cuda*/bin; do dirs+=("$d"); done
  ignore="" newpath=""
  for d in "${dirs[@]}"; do
    [ -n "$d" ] || continue
    if [ -x "$d/nvcc" ]; then
      case "$d" in /usr/bin|/bin) echo "SKIP: nvcc is in $d, which cannot be hidden from CMake"; exit 77;; esac
      ignore="$ignore;$d;$(readlink -f "$d")"
    fi
  done
  IFS=: read -ra dirs <<< "$PATH"
  for d in "${dirs[@]}"; do [ -x "$d/nvcc" ] || newpath="$newpath:$d"; done
  export PATH="${newpath#:}"
  unset CUDA_HOME CUDA_PATH CUDA_BIN_PATH CUDA_TOOLKIT_ROOT CUDA_NVCC_EXECUTABLE CUDACXX
  ignore="${ignore#;}"
}

case "$case" in
  no-nvcc)
    torch_has_cuda
    hide_nvcc
    configure "-DCMAKE_IGNORE_PATH=$ignore" || { echo "FAIL: the configure stopped"; cat "$log"; exit 1; }
    expect "sft: no nvcc was found"
    expect "CMake Warning"
    expect "is built for CUDA"
    expect "but no nvcc was found (looked on PATH, in CUDA_TOOLKIT_ROOT_DIR, \$CUDA_PATH, /usr/local/cuda/bin and /opt/cuda/bin). This build is CPU-ONLY (SFT_CUDA=OFF): sft will not use a GPU."
    expect "To build for GPUs, put the bin folder of a CUDA toolkit >= 12.6"
    expect "sft: LibTorch"
    expect "CUDA compiled in: OFF"
    grep -q "Caffe2 version uses CUDA but I cannot find" "$log" && { echo "FAIL: Torch's own error came first"; exit 1; }
    ;;
  no-nvcc-cuda-on)
    torch_has_cuda
    hide_nvcc
    if configure "-DCMAKE_IGNORE_PATH=$ignore" -DSFT_CUDA=ON; then echo "FAIL: -DSFT_CUDA=ON configured without nvcc"; cat "$log"; exit 1; fi
    expect "CMake Error"
    expect "SFT_CUDA=ON, but no nvcc was found (looked on PATH,"
    expect "compiling sft's CUDA code against LibTorch"
    expect "needs the CUDA toolkit's nvcc."
    expect "For a CPU-only build, configure with -DSFT_CUDA=OFF."
    ;;
  old-nvcc)
    torch_has_cuda
    mkdir -p "$work/fakecuda/bin"
    printf '#!/bin/sh\necho "Cuda compilation tools, release 12.4, V12.4.131"\n' > "$work/fakecuda/bin/nvcc"
    chmod +x "$work/fakecuda/bin/nvcc"
    unset CUDA_PATH CUDA_BIN_PATH CUDA_TOOLKIT_ROOT CUDA_NVCC_EXECUTABLE
    PATH="$work/fakecuda/bin:$PATH" configure || { echo "FAIL: the configure stopped"; cat "$log"; exit 1; }
    expect "nvcc at $work/fakecuda/bin/nvcc is CUDA 12.4, older than the 12.6 that LibTorch's CMake requires. This build is CPU-ONLY (SFT_CUDA=OFF)"
    expect "CUDA compiled in: OFF"
    ;;
  other-major-nvcc)
    torch_has_cuda
    torch_cuda=$(sed -n "s/^cuda[^=]*= *'\([0-9]*\)\..*/\1/p" "$torch_prefix/../../version.py" 2>/dev/null)
    [ -n "$torch_cuda" ] || { echo "SKIP: not a pip torch (no version.py): its CUDA is read after find_package"; exit 77; }
    other=12.8; [ "$torch_cuda" = 12 ] && other=13.0
    mkdir -p "$work/fakecuda/bin"
    printf '#!/bin/sh\necho "Cuda compilation tools, release %s, V%s.1"\n' "$other" "$other" > "$work/fakecuda/bin/nvcc"
    chmod +x "$work/fakecuda/bin/nvcc"
    unset CUDA_PATH CUDA_BIN_PATH CUDA_TOOLKIT_ROOT CUDA_NVCC_EXECUTABLE
    PATH="$work/fakecuda/bin:$PATH" configure || { echo "FAIL: the configure stopped"; cat "$log"; exit 1; }
    expect "nvcc at $work/fakecuda/bin/nvcc is CUDA $other, another major release than the CUDA $torch_cuda."
    expect "this LibTorch is built for. This build is CPU-ONLY (SFT_CUDA=OFF)"
    expect "CUDA compiled in: OFF"
    ;;
  nccl-mismatch)
    torch_has_cuda
    mkdir -p "$work/nccl_other" "$work/nccl_same"
    printf '#define NCCL_MAJOR 2\n#define NCCL_MINOR 3\n#define NCCL_PATCH 7\n#define NCCL_VERSION_CODE 2307\n' > "$work/nccl_other/nccl.h"
    if configure -DSFT_NCCL_INCLUDE_DIR="$work/nccl_other"; then
      grep -q "CUDA compiled in: OFF" "$log" && { echo "SKIP: no usable nvcc here, so no NCCL header is checked"; exit 77; }
      echo "FAIL: a nccl.h of NCCL 2.3.7 was accepted"; cat "$log"; exit 1
    fi
    expect "$work/nccl_other/nccl.h (from SFT_NCCL_INCLUDE_DIR) is NCCL 2.3.7, but LibTorch"
    expect "ProcessGroupNCCL holds NCCL's ncclConfig_t by value"
    expect "Set -DSFT_NCCL_INCLUDE_DIR to the include folder of NCCL"
    torch_nccl=$(tr -s ' \n' ' ' < "$log" | sed -n 's/.*was built with NCCL \([0-9]*\)\.\([0-9]*\)\.\([0-9]*\) (.*/\1 \2 \3/p')
    [ -n "$torch_nccl" ] || { echo "FAIL: the message names no LibTorch NCCL version"; cat "$log"; exit 1; }
    read -r major minor patch <<< "$torch_nccl"
    # The same release, another patch level: accepted.
    printf '#define NCCL_MAJOR %s\n#define NCCL_MINOR %s\n#define NCCL_PATCH %s\n' "$major" "$minor" "$((patch + 1))" > "$work/nccl_same/nccl.h"
    rm -rf "$work/build"
    configure -DSFT_NCCL_INCLUDE_DIR="$work/nccl_same" || { echo "FAIL: NCCL $major.$minor.$((patch + 1)) was refused"; cat "$log"; exit 1; }
    expect "sft: NCCL header $work/nccl_same/nccl.h (NCCL $major.$minor.$((patch + 1)), from SFT_NCCL_INCLUDE_DIR) matches LibTorch's NCCL $major.$minor.$patch"
    ;;
  gloo-off)
    configure -DSFT_GLOO=OFF || { echo "FAIL: the configure stopped"; cat "$log"; exit 1; }
    expect "sft: Gloo compiled out (SFT_GLOO=OFF): NCCL is the only backend"
    grep -q "^GLOO_INCLUDE_DIR" "$work/build/CMakeCache.txt" && { echo "FAIL: Gloo's headers were looked for"; exit 1; }
    grep -B3 '"file": ".*/src/dist/context.cpp"' "$work/build/compile_commands.json" | grep -q -- "-DSFT_WITH_GLOO=0 " ||
      { echo "FAIL: context.cpp is not compiled with SFT_WITH_GLOO=0"; exit 1; }
    ;;
  *) echo "unknown case $case"; exit 1 ;;
esac
rm -rf "$work"
echo "passed: $case"
