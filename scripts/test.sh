#!/usr/bin/env bash
# Installs what is missing, builds, boots the lab guests and runs the whole test suite: once as
# built for users, once more under AddressSanitizer and UBSan, then a short pass of the parser
# fuzzers (set IMEE_SANITIZE=0 to skip both).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$repo/build}
"$repo/scripts/install-deps.sh"

suite() {  # suite BUILD_DIR [cmake options...]
  local dir=$1
  shift
  BUILD_DIR=$dir "$repo/scripts/build.sh" "$@"
  (cd "$dir" && ctest --output-on-failure -j2 --timeout 900)
}

echo "== test suite"
suite "$build"
if [[ ${IMEE_SANITIZE:-1} != 0 ]]; then
  echo "== test suite under ASan+UBSan"
  suite "$build-sanitize" -DIMEE_SANITIZE=ON
  echo "== fuzzers, short run (scripts/fuzz.sh runs 10^6 executions each)"
  BUILD_DIR=$build-fuzz FUZZ_RUNS=${FUZZ_RUNS:-20000} "$repo/scripts/fuzz.sh"
fi
