#!/usr/bin/env bash
# Installs sft's Debian packages (skipping those present), then configures and builds sft.
# Idempotent: a second run installs nothing and only rebuilds what changed.
# Usage: scripts/setup.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  cmake g++ make pkg-config
  libtorch-dev libgloo-dev libopenblas0-openmp python3-torch
  libsentencepiece-dev sentencepiece
  nlohmann-json3-dev libcli11-dev libspdlog-dev libyaml-cpp-dev libgtest-dev
  python3 python3-matplotlib python3-numpy
  clang libclang-rt-14-dev   # libFuzzer for the safetensors parser's fuzz test
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#packages[@]} packages present"
fi

if [ "${1:-}" != "--no-build" ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
  cmake --build build -j2
fi
