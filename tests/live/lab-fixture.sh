#!/usr/bin/env bash
# CTest fixture: boots the two lab guests the live tests compare against (4- and 5-level paging,
# KASLR on) side by side, or stops them.
#   lab-fixture.sh start ROOT BUILD    ROOT/l4 and ROOT/l5 are the lab.sh run directories
#   lab-fixture.sh stop ROOT
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
lab=$here/../lab
cmd=${1:?usage: lab-fixture.sh start ROOT BUILD | stop ROOT}
root=${2:?ROOT missing}

case $cmd in
start)
  build=${3:?BUILD missing}
  "$lab/build-lab.sh" "$build"
  for levels in 4 5; do "$lab/lab.sh" stop "$root/l$levels" >/dev/null 2>&1 || true; done
  export LAB_BUILD_DIR=$build
  "$lab/lab.sh" start "$root/l4" --levels 4 & four=$!
  "$lab/lab.sh" start "$root/l5" --levels 5 & five=$!
  status=0
  wait $four || status=1
  wait $five || status=1
  rm -f "$root"/l?/profile.json  # every run builds the profile afresh, then uses the cache
  exit $status
  ;;
stop)
  for levels in 4 5; do "$lab/lab.sh" stop "$root/l$levels" || true; done
  ;;
*)
  echo "lab-fixture.sh: unknown command $cmd" >&2
  exit 2
  ;;
esac
