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

echo
echo "== the lab rootkit (tests/lab/rootkit/imee_rk.c): hide a process, hook system calls, steal"
echo "   and write credentials; the guest's module reports what it did"
lab() { LAB_BUILD_DIR=$build/lab "$repo/tests/lab/lab.sh" query "$run" "$1"; }
lab "rk load hide sct ftrace kprobe steal write"
# findings exit with status 3: show them, do not stop the demo
catch() { "$build/tools/$1" "${target[@]}" "${@:2}" || [ $? -eq 3 ]; }
echo
echo "== pidlist: the pid namespace's IDR sees the task the task list no longer holds"
catch pidlist | grep -E 'HIDDEN|^cross-view'
echo
echo "== pslist: the task list, cross-checked with the IDR by default"
catch pslist | grep -E 'HIDDEN|^cross-view'
echo
echo "== syscalldmp: table entries and handler entries that are not the kernel image's"
catch syscalldmp | grep -E ' (HOOKED|TAMPERED|TRACED|REDIRECTED|BREAKPOINT)|^[0-9]+ entries'
echo
echo "== credlist --watch 15: the stolen cred now; the written ids while it watches"
catch credlist --watch 15 --interval 200 > "$run/credlist-watch.txt" &
watch=$!
sleep 1
lab "rk write" | grep cred_write
wait $watch || true
sed -n '/findings/,$p' "$run/credlist-watch.txt"
echo
echo "== rk unload: the module restores everything; the tools find nothing again"
lab "rk unload"
for tool in pidlist pslist syscalldmp credlist; do
  "$build/tools/$tool" "${target[@]}" > /dev/null && echo "$tool: no findings (exit 0)" ||
    echo "$tool: exit $?"
done
