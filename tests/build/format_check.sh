#!/usr/bin/env bash
# The C++ sources follow .clang-format: `clang-format --dry-run --Werror` over src/, include/, tests/
# and bench/ (third_party/ is not ours). Pinned to Debian 12's clang-format 14 (scripts/setup.sh
# installs it): another major version formats some constructs differently, so it skips (77).
set -euo pipefail
src=${1:?source dir}
cf=$(command -v clang-format-14 || command -v clang-format || true)
if [ -z "$cf" ]; then
  echo "format check: no clang-format on PATH (scripts/setup.sh installs Debian's)"; exit 77
fi
major=$("$cf" --version | sed -n 's/.*version \([0-9]*\).*/\1/p')
if [ "$major" != 14 ]; then
  echo "format check: $cf is version $major; the style is pinned to clang-format 14"; exit 77
fi
cd "$src"
mapfile -t files < <(find src include tests bench -name '*.cpp' -o -name '*.h' | sort)
"$cf" --style=file --dry-run --Werror "${files[@]}"
echo "format check: ${#files[@]} files follow .clang-format ($cf, version $major)"
