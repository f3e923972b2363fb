#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: the suite as built for users (lab guests
# booted under QEMU), the kernel path in the VT-x lab (scripts/kernel-lab.sh), the suite again
# under AddressSanitizer and UBSan, and a short pass of the parser fuzzers (IMEE_SANITIZE=0 skips
# those two), then the Debian packages (scripts/package-check.sh) and the DKMS build for both
# kernel series (scripts/dkms-check.sh). The kernel labs run in the background beside the rest,
# each one Bochs on one core for ~50 minutes; their logs go to BUILD_DIR/kernel-lab-<name>.log and
# are shown at the end. IMEE_LABS lists them as VENDOR:SERIES words, e.g. "intel:6.1 intel:6.12
# amd:6.1" (L1 = Debian's 6.1 or 6.12, scripts/debian-kernels.sh). The default is two labs, one
# per kernel series and one per vendor, swapped with the parity of the commit count: even, the
# VT-x lab on 6.1 and the AMD-V lab (kvm-amd) on 6.12; odd, the other way round. So every run
# covers both series and both vendors, and every pair of them comes round every other commit:
# three Bochs do not fit CI's two cores in 75 minutes (tests/vtx-lab/README.md, "The AMD lab").
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$repo/build}
"$repo/scripts/install-deps.sh" || exit 1

ctest_in() { (cd "$1" && shift && ctest --output-on-failure -j2 --timeout 900 "$@"); }

echo "== libimee's layers (no include cycle, no upward include)"
python3 "$repo/scripts/check-layers.py" || exit 1

echo "== build"
BUILD_DIR=$build "$repo/scripts/build.sh" || exit 1
mapfile -t releases < <("$repo/scripts/debian-kernels.sh")
[[ ${#releases[@]} -eq 2 ]] || { echo "== no kernel releases for the VT-x labs"; exit 1; }
declare -A release=([6.1]=${releases[0]} [6.12]=${releases[1]})
labs=()  # names: the release (Intel, as before) or amd-<release>
declare -A lab_pid
commits=$(git -C "$repo" rev-list --count HEAD 2>/dev/null || echo 0)
if ((commits % 2)); then default_labs="intel:6.12 amd:6.1"; else default_labs="intel:6.1 amd:6.12"; fi
echo "== kernel labs: ${IMEE_LABS:=$default_labs} (commit count $commits)"
for word in $IMEE_LABS; do
  vendor=${word%%:*} k=${release[${word#*:}]:-}
  case $vendor in
  intel) name=$k what="emulated VT-x" ;;
  amd) name=amd-$k what="emulated AMD-V" ;;
  *) name= ;;
  esac
  [[ -n $k && -n $name ]] || { echo "== IMEE_LABS: '$word' is not intel|amd:6.1|6.12"; exit 2; }
  echo "== kernel lab $name started in the background (our kvm modules under $what; log $build/kernel-lab-$name.log)"
  LAB_VENDOR=$vendor LAB_KERNEL_PKG=linux-image-$k KERNEL_LAB_DIR=$build/vtx-lab-$name \
    "$repo/scripts/kernel-lab.sh" "$build" > "$build/kernel-lab-$name.log" 2>&1 &
  lab_pid[$name]=$!
  labs+=("$name")
done
trap 'kill "${lab_pid[@]}" 2>/dev/null' EXIT

status=0
echo "== test suite"
ctest_in "$build" || status=1
if [[ ${IMEE_SANITIZE:-1} != 0 ]]; then
  echo "== test suite under ASan+UBSan"
  # The ISF export/import tests run under the sanitizers on one guest only (4level): the other
  # two guests add ~3 minutes of CI and no code path (the ISF reader and writer are fuzzed under
  # ASan besides, fuzz_isf and fuzz_btf_memory)
  { BUILD_DIR=$build-sanitize "$repo/scripts/build.sh" -DIMEE_SANITIZE=ON &&
    ctest_in "$build-sanitize" -E 'LiveIsf\..*/(5level|4level_k612)'; } ||
    status=1
  echo "== fuzzers, short run: 20,000 executions or 15 s each (scripts/fuzz.sh runs 10^6 each)"
  BUILD_DIR=$build-fuzz FUZZ_RUNS=${FUZZ_RUNS:-20000} FUZZ_SECONDS=${FUZZ_SECONDS:-15} \
    "$repo/scripts/fuzz.sh" || status=1
fi

echo "== Debian packages: built, installed, an outside program built against /usr, removed (scripts/package-check.sh)"
BUILD_DIR=$build "$repo/scripts/package-check.sh" >"$build/package-check.log" 2>&1 || { status=1; tail -n 30 "$build/package-check.log"; }
tail -n 1 "$build/package-check.log"

echo "== DKMS: the patched modules built by dkms for Debian 12's 6.1 and 6.12 kernels"
"$repo/scripts/dkms-check.sh" 2>"$build/dkms-check.log" || { status=1; tail -n 30 "$build/dkms-check.log"; }

echo "== waiting for the kernel labs"
for k in "${labs[@]}"; do
  result=PASS
  wait "${lab_pid[$k]}" || result=FAIL
  # its test lines and the summary (the whole log is in $build/kernel-lab-$k.log)
  grep -E 'VTX-TEST (ok|FAIL)|VTX-TEST kernel-[a-z-]+\| \[ *(OK|FAILED|SKIPPED|PASSED) *\]|VTX-LAB (RESULT|dmesg)|^kernel-lab\.sh: (PASS|FAIL)' \
    "$build/kernel-lab-$k.log" | tail -n 200 | sed "s/^/[$k] /"
  echo "== kernel lab $k: $result"
  [[ $result == PASS ]] || status=1
done
trap - EXIT
exit $status
