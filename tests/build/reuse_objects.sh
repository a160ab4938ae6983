#!/usr/bin/env bash
# Copies into a second build of sft the objects of the main build that the second build would
# compile to the same thing, so that a build test compiles only what its configuration changes.
# An object is reused only when all of these hold:
#   - its target's flags (flags.make) are the same in both builds once the differences the
#     caller names (sed expressions) are taken out;
#   - its dependency file (.o.d, the headers the compiler read) names no file matching the
#     caller's regular expression (the folders the configurations differ in);
#   - neither the unit nor any sft header it read mentions a macro the caller names (MACROS_RE;
#     empty: none).
# Usage: tests/build/reuse_objects.sh SOURCE_DIR MAIN_BUILD WORK_BUILD FOLDERS_RE MACROS_RE SED_EXPR...
# Prints how many objects were reused and compiled; reuses nothing when MAIN_BUILD has no objects.
set -euo pipefail
src=$1 main=$2 work=$3 folders=$4 macros=$5
shift 5
sed_args=()
for e in "$@"; do sed_args+=(-e "$e"); done
norm() { sed -E "${sed_args[@]}" -e '/^# Custom options/d' "$1"; }
reused=0 compiled=0
for dir in "$work"/CMakeFiles/*.dir; do
  t=$(basename "$dir")
  [ -f "$main/CMakeFiles/$t/flags.make" ] && [ -f "$dir/flags.make" ] || continue
  if ! cmp -s <(norm "$main/CMakeFiles/$t/flags.make") <(norm "$dir/flags.make"); then
    echo "reuse: ${t%.dir}'s flags differ beyond the expected; none of its objects is reused:"
    diff <(norm "$main/CMakeFiles/$t/flags.make") <(norm "$dir/flags.make") || true
    continue
  fi
  while IFS= read -r dep; do
    obj=${dep%.d}
    rel=${obj#"$main/"}
    [ -f "$obj" ] || continue
    files=$(sed -e 's/\\$//' "$dep" | tr ' ' '\n' | grep -v -e '^$' -e ':$')
    if grep -qE "$folders" <<<"$files" ||
       { [ -n "$macros" ] && grep -E "^($src/include|$src/src)/" <<<"$files" | xargs -r grep -lE "$macros" | grep -q .; }; then
      compiled=$((compiled + 1))
      continue
    fi
    mkdir -p "$(dirname "$work/$rel")"
    cp "$obj" "$work/$rel"   # a new mtime: newer than the second build's flags.make and sources
    cp "$dep" "$work/$rel.d"
    reused=$((reused + 1))
  done < <(find "$main/CMakeFiles/$t" -name '*.o.d' | sort)
done
echo "reuse: $reused objects taken from $main, $compiled left to compile"
