#!/usr/bin/env bash
# Installs what is missing, builds, boots the lab guests and runs the whole test suite.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$repo/build}
"$repo/scripts/install-deps.sh"
BUILD_DIR=$build "$repo/scripts/build.sh"
cd "$build"
ctest --output-on-failure -j2 --timeout 900 "$@"
