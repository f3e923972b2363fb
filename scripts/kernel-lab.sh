#!/usr/bin/env bash
# kernel-lab.sh [BUILD_DIR] -- the kernel-path tests. The host has no VT-x, so our kvm-intel only
# runs in the VT-x lab (tests/vtx-lab: Bochs emulates VT-x + EPT; LAB_VENDOR=amd: its AMD-V + NPT
# twin, with kvm-amd): this builds our kvm.ko + kvm-intel.ko (kvm-amd.ko), builds the lab with
# them, the tools and the test binaries (imee_kernel_tests,
# imee_kvm_tests, imee_live_tests) copied into L1, boots it and runs tests/vtx-lab/l1/tests/run.sh in L1 against
# two L2 guests.
# Prints one summary line; exit 0 only on "VTX-LAB RESULT: PASS" (FAIL, timeout: 1).
#
#   BUILD_DIR            CMake build directory with the tools (argument, or IMEE_BUILD_DIR,
#                        default build/); built here first (nothing to do when it is up to date)
#   KERNEL_LAB_DIR       the lab's output directory (default build/vtx-lab)
#   LAB_VENDOR           intel (default) or amd: which ImEE, on which emulated CPU
#   LAB_KERNEL_PKG       Debian kernel package of L1 (and of the L2 guests), e.g.
#                        linux-image-6.12.117+deb12-amd64; our modules are built for it
#                        (default: what linux-image-amd64 depends on)
#   VTX_TIMEOUT          wall seconds for the Bochs run (default 3600)
#   VTX_*                other knobs of tests/vtx-lab/build-vtx-lab.sh and run-vtx-lab.sh
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(realpath -m "${1:-${IMEE_BUILD_DIR:-$repo/build}}")  # absolute: the lab build needs it
lab=${KERNEL_LAB_DIR:-$repo/build/vtx-lab}
export VTX_TIMEOUT=${VTX_TIMEOUT:-3600}
vendor=${LAB_VENDOR:-intel}
case $vendor in
intel) vendor_label="" amd_build=n ;;
amd) vendor_label="AMD " amd_build=y ;;
*) echo "kernel-lab.sh: LAB_VENDOR must be intel or amd" >&2; exit 2 ;;
esac
export VTX_VENDOR=$vendor

start=$(date +%s)
phase_start=$start
times=()
phase_done() {  # phase_done NAME: record the wall time since the previous phase
  local now
  now=$(date +%s)
  times+=("$1 $((now - phase_start))s")
  phase_start=$now
}
finish() {  # finish PASS|FAIL [WHY]: the summary line, and the exit status
  local phases
  phases=$(printf '%s, ' "${times[@]}")
  echo "kernel-lab.sh: $1 on ${vendor_label}L1 ${l1_pkg#linux-image-}${2:+ ($2)}; ${phases}total $(($(date +%s) - start))s wall"
  [[ $1 == PASS ]]
  exit $?
}
# L1's kernel, also L2's: LAB_KERNEL_PKG, else what linux-image-amd64 depends on (as
# tests/lab/build-lab.sh picks it), whatever kernel this host runs
l1_pkg=${LAB_KERNEL_PKG:-$(apt-cache depends linux-image-amd64 2>/dev/null |
  awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')}
[[ -n $l1_pkg ]] || { l1_pkg=unknown; finish FAIL "cannot resolve L1's kernel package (set LAB_KERNEL_PKG)"; }
export LAB_KERNEL_PKG=$l1_pkg

echo "kernel-lab.sh: build tools ($build)"
# one build at a time in BUILD_DIR: scripts/test.sh runs a lab per kernel series side by side
{ "$repo/scripts/install-deps.sh" && mkdir -p "$build" &&
  flock "$build/.kernel-lab-build.lock" env BUILD_DIR="$build" "$repo/scripts/build.sh"; } ||
  finish FAIL "tools build failed"
bins=()
for b in tools/pidlist tools/pslist tools/credlist tools/syscalldmp tests/imee_kernel_tests tests/imee_kvm_tests \
  tests/imee_live_tests examples/imee_ioctl; do
  [[ -x $build/$b ]] || finish FAIL "no $build/$b"
  bins+=("$build/$b")
done
phase_done tools

echo "kernel-lab.sh: build kvm modules"
# output: build/kvm-modules/<kernel release> (the default), <release>-amd with kvm-amd.ko (an
# Intel lab may build the other at the same time); the last lines name the modules
kver=${l1_pkg#linux-image-}
moddir=$repo/build/kvm-modules/$kver
[[ $vendor == amd ]] && moddir+=-amd
modout=$(IMEE_KVER=$kver IMEE_KVM_AMD=$amd_build "$repo/scripts/build-kvm-modules.sh" "$moddir") ||
  finish FAIL "kvm module build failed"
echo "$modout"
vendor_ko=kvm-$vendor.ko
[[ -s $moddir/$vendor_ko ]] || finish FAIL "kvm module build made no $vendor_ko"
phase_done modules

echo "kernel-lab.sh: build the VT-x lab ($lab)"
KVM_MODULES_DIR=$moddir VTX_TESTS_DIR=$repo/tests/vtx-lab/l1/tests VTX_BINARIES="${bins[*]}" \
  "$repo/tests/vtx-lab/build-vtx-lab.sh" "$lab" || finish FAIL "lab build failed"
phase_done lab-build

echo "kernel-lab.sh: run it (Bochs, timeout ${VTX_TIMEOUT}s)"
"$repo/tests/vtx-lab/run-vtx-lab.sh" "$lab" 2>&1 | tee "$lab/run.log"
rc=${PIPESTATUS[0]}
phase_done run
[[ $rc -eq 0 ]] && finish PASS
# run-vtx-lab.sh's last word: "VTX-LAB RESULT: FAIL <why>", "timeout after Ns", "kernel panic in L1"...
why=$(sed -n 's/^run-vtx-lab\.sh: [0-9]*s wall: //p' "$lab/run.log" | tail -n1)
finish FAIL "${why:-run-vtx-lab.sh exit $rc}; see $lab/com1.log"
