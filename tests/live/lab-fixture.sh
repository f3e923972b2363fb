#!/usr/bin/env bash
# CTest fixture: boots the lab guests the live tests compare against (KASLR on) side by side, or
# stops them:
#   ROOT/l4    Debian 12's default kernel (6.1), 4-level paging   lab build BUILD
#   ROOT/l5    the same kernel, 5-level paging                    lab build BUILD
#   ROOT/k612  Debian 12's 6.12 kernel (package PKG612), 4-level  lab build BUILD612
# (tests/live/lab_guest.hpp: IMEE_LAB_GUESTS names them for the tests.)
#   lab-fixture.sh start ROOT BUILD BUILD612 PKG612
#   lab-fixture.sh stop ROOT
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
lab=$here/../lab
cmd=${1:?usage: lab-fixture.sh start ROOT BUILD BUILD612 PKG612 | stop ROOT}
root=${2:?ROOT missing}
guests=(l4 l5 k612)

case $cmd in
start)
  build=${3:?BUILD missing}
  build612=${4:?BUILD612 missing}
  pkg612=${5:?PKG612 missing}
  # Both builds first (one at a time: they share LAB_CACHE_DIR when it is set), then all boots.
  # Each boot's own build-lab.sh is then a no-op, told the package (no apt-cache: slow on a busy
  # machine, and the two 6.1 boots would wait for each other's on BUILD's lock).
  "$lab/build-lab.sh" "$build"
  pkg=$(cat "$build/kernel.version")
  LAB_KERNEL_PKG=$pkg612 "$lab/build-lab.sh" "$build612"
  for g in "${guests[@]}"; do "$lab/lab.sh" stop "$root/$g" >/dev/null 2>&1 || true; done
  pids=()
  LAB_BUILD_DIR=$build LAB_KERNEL_PKG=$pkg "$lab/lab.sh" start "$root/l4" --levels 4 & pids+=($!)
  LAB_BUILD_DIR=$build LAB_KERNEL_PKG=$pkg "$lab/lab.sh" start "$root/l5" --levels 5 & pids+=($!)
  LAB_BUILD_DIR=$build612 LAB_KERNEL_PKG=$pkg612 "$lab/lab.sh" start "$root/k612" --levels 4 & pids+=($!)
  status=0
  for p in "${pids[@]}"; do wait "$p" || status=1; done
  for g in "${guests[@]}"; do rm -f "$root/$g/profile.json"; done  # built afresh each run, then cached
  exit $status
  ;;
stop)
  for g in "${guests[@]}"; do "$lab/lab.sh" stop "$root/$g" || true; done
  ;;
*)
  echo "lab-fixture.sh: unknown command $cmd" >&2
  exit 2
  ;;
esac
