#!/usr/bin/env bash
# Installs what is missing, builds, boots the bundled lab guest (Debian's kernel under QEMU TCG,
# KASLR on, 5-level paging) and runs the four tools against it from the host.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$repo/build}
run=$build/demo-guest
"$repo/scripts/install-deps.sh"
BUILD_DIR=$build "$repo/scripts/build.sh"

echo "== building and booting the lab guest (takes ~30 s under TCG)"
"$repo/tests/lab/build-lab.sh" "$build/lab"
LAB_BUILD_DIR=$build/lab "$repo/tests/lab/lab.sh" start "$run" --levels 5
trap '"$repo/tests/lab/lab.sh" stop "$run" >/dev/null 2>&1 || true' EXIT

pid=$(cat "$run/qemu.pid")
# Nothing but the target: the kernel's BTF and kallsyms are read from guest memory (the profile is
# cached per kernel build under ~/.cache/imee).
target=(--pid "$pid")
for tool in pidlist pslist credlist syscalldmp; do
  echo
  echo "== $tool ${target[*]}"
  "$build/tools/$tool" "${target[@]}"
done
echo
echo "== the guest's own view, for comparison (pid ppid ruid euid suid fsuid rgid ... name)"
"$repo/tests/lab/lab.sh" query "$run" tasks | tail -n 15
