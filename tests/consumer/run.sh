#!/usr/bin/env bash
# The consumer test: builds tests/consumer against the tree check-install.sh installed (PREFIX),
# with find_package (libimee.so or, find_package-static, libimee.a) or pkg-config, and runs it on both lab guests (the 4-level one by RAM file,
# the 5-level one by QEMU pid). With the guest paused, its output must be the guest's banner
# (as in the kernel image: the profile's banner) and exactly pslist's task list (pid, ppid, comm).
#   run.sh find_package|find_package-static|pkg-config SOURCE_DIR BUILD_DIR PREFIX LAB_ROOT LAB_KERNEL
set -euo pipefail
with=${1:?find_package, find_package-static or pkg-config}
src=${2:?SOURCE_DIR}
build=${3:?BUILD_DIR}
prefix=${4:?PREFIX}
lab_root=${5:?LAB_ROOT}
kernel=${6:?LAB_KERNEL}
lab=$src/tests/lab/lab.sh
libdir=$(sed -n 's/^CMAKE_INSTALL_LIBDIR:PATH=//p' "$build/CMakeCache.txt")
work=$build/consumer-$with
rm -rf "$work"

echo "== configure and build the consumer with $with against $prefix"
PKG_CONFIG_PATH=$prefix/$libdir/pkgconfig cmake -S "$src/tests/consumer" -B "$work" \
  -DIMEE_CONSUMER_WITH="$with" -Dimee_DIR="$prefix/$libdir/cmake/imee" \
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF >/dev/null
cmake --build "$work" >/dev/null
# It must run on the installed shared library, found through its RUNPATH, not a copy elsewhere
# (or, linked statically, on none).
so=$(ldd "$work/consumer" | awk '/libimee\.so/ { print $3 }')
expected=$prefix/$libdir/libimee.so.0
[[ $with == find_package-static ]] && expected=
[[ $so == "$expected" ]] || { echo "consumer uses libimee.so at '$so', not '$expected'" >&2; exit 1; }

status=0
for levels in 4 5; do
  dir=$lab_root/l$levels
  if ((levels == 5)); then target=(--pid "$(cat "$dir/qemu.pid")"); else target=(--ram "$dir/ram.img"); fi
  # The tools' profile cache: built by the installed pslist if missing.
  "$prefix/bin/pslist" "${target[@]}" --profile "$dir/profile.json" --kernel "$kernel" \
    --symbols "$dir/kallsyms" --backend soft >/dev/null
  "$lab" pause "$dir" >/dev/null
  trap '"$lab" resume "$dir" >/dev/null' EXIT
  "$work/consumer" "${target[@]}" "$dir/profile.json" > "$work/out-l$levels.txt"
  "$prefix/bin/pslist" "${target[@]}" --profile "$dir/profile.json" --backend soft --json \
    > "$work/pslist-l$levels.json"
  "$lab" resume "$dir" >/dev/null
  trap - EXIT
  python3 "$src/tests/consumer/compare.py" "$work/out-l$levels.txt" "$work/pslist-l$levels.json" \
    "$dir/profile.json" || status=1
done
exit $status
