#!/bin/sh
# Default test run of the VT-x lab, in L1 once the L2 guests (the lab guest) are ready.
# Environment from /init:
#   L2_DIR QEMU_PID L2_RAM L2_CHAN (ttyS1 of L2) L2_QMP         the first guest (/run/l2)
#   L2B_DIR QEMU_PID_B L2B_RAM L2B_CHAN L2B_QMP L2B_MODE          the second one (/run/l2b), if
#                                                                L2_COUNT=2
#   L2_KERNEL=/l2/vmlinux L2_KALLSYMS=/l2/kallsyms IMEE_BIN=/opt/imee/bin
# Exit 0 = pass. Output lines start with "VTX-TEST" (run-vtx-lab.sh echoes them).
set -u
err=0
check() { if eval "$2"; then echo "VTX-TEST ok   $1"; else echo "VTX-TEST FAIL $1"; err=1; fi; }
mkdir -p /run/imee
IMEE_BIN=${IMEE_BIN:-/opt/imee/bin}

# guest_checks NAME DIR QEMU_PID RAM CHAN QMP: the guest answers on its channel and runs the lab
# workload, QEMU uses KVM, and its RAM is a shared file mapping that tools in L1 can map.
# Leaves the guest's task list in DIR/tasks.txt.
guest_checks() {
    name=$1 dir=$2 pid=$3 ram=$4 chan=$5 qmp=$6
    ping=$(labctl chan "$chan" "ping vtx" 60 2>&1)
    check "$name channel ping ($ping)" '[ "$ping" = "pong vtx" ]'
    labctl chan "$chan" tasks 60 > "$dir/tasks.txt" 2>"$dir/tasks.err"
    n=$(wc -l < "$dir/tasks.txt")
    check "$name task list has $n tasks" '[ "$n" -ge 40 ]'
    check "$name workload task tree-deep2 present" 'grep -q " tree-deep2$" "$dir/tasks.txt"'
    sed -n '1p;/ tree-deep2$/p;/ extra-[0-9]*$/p' "$dir/tasks.txt" | sed "s/^/VTX-TEST $name task: /"
    kvm=$(labctl qmp "$qmp" query-kvm 2>&1)
    check "$name QEMU uses KVM ($kvm)" 'echo "$kvm" | grep -q "\"enabled\": *true"'
    maps=$(grep " $ram\$" "/proc/$pid/maps")
    echo "$maps" | sed "s/^/VTX-TEST $name maps: /"
    check "$name QEMU maps $ram shared (rw-s)" 'echo "$maps" | grep -q "rw-s"'
    sz=$(stat -c %s "$ram")
    check "$name ram.img is $sz bytes" '[ "$sz" -gt 0 ]'
}

guest_checks L2 "$L2_DIR" "$QEMU_PID" "$L2_RAM" "$L2_CHAN" "$L2_QMP"
# The guest's layout as its kernel reports it: a PVH boot randomizes neither (tests/vtx-lab/README.md)
sed -n 's/^\(_text\|page_offset_base\) /&/p' "$L2_DIR/info.txt" | sed 's/^/VTX-TEST L2 layout: /'

if [ "${L2_COUNT:-1}" = 2 ]; then
    guest_checks L2B "$L2B_DIR" "$QEMU_PID_B" "$L2B_RAM" "$L2B_CHAN" "$L2B_QMP"
    check "L2 and L2B are two QEMUs ($QEMU_PID, $QEMU_PID_B)" '[ "$QEMU_PID" != "$QEMU_PID_B" ]'
    if [ "${L2B_MODE:-}" = clone ]; then
        # /init spawned 3 tasks in the clone: they tell the guests apart
        check "L2B (clone) has tasks L2 has not" '! cmp -s "$L2_DIR/tasks.txt" "$L2B_DIR/tasks.txt" && [ "$(grep -c " extra-[0-9]*$" "$L2B_DIR/tasks.txt")" -eq 3 ]'
    fi
fi

# The kernel backend's tests: the same test binaries as on the host, here with the patched
# kvm-intel: the kernel ImEE's own tests on synthetic targets (imee_kernel_tests), the ImEE
# backends' suite through the kernel backend (imee_kvm_tests) and the live tests against the
# guests with IMEE_TOOL_BACKEND=kernel (imee_live_tests). IMEE_REQUIRE_KERNEL=1: a missing kernel
# backend fails them instead of skipping them.
HAND_BUILT='KernelImee.HostileAgent*:KernelImee.HostRemaps*:KernelImee.VmmExit*:KernelImee.InvalidationsRacing*:KernelImee.ActivationDoesNotDisturb*:KernelImee.PinnedPages*:KernelImee.StatsCount*'
KERNEL_IOCTL_TESTS="KernelImee.*-$HAND_BUILT"
KERNEL_SUITE_TESTS='Levels/AgentBackendTest.*4level_kernel'
# The tests with a hand-built vCPU (FlatAgent) run last: a problem of the emulated CPU with such
# a vCPU (their first version, without CPUID, stopped L1) must not hide the other results.
KERNEL_HAND_BUILT_TESTS="$HAND_BUILT"
# Tools through the kernel backend vs the guest's own view, 10,000 random reads vs the software
# walk, blind spot, retarget, consistency. (Text output and tools-vs-soft run on the host only:
# they do not depend on the backend beyond what these check, and L1's time is scarce.)
# The lab rootkit (tests/lab/rootkit) loaded into L2, each attack found by the four tools through
# the kernel backend, none before it nor after its unload.
KERNEL_LIVE_TESTS='LiveKernel.*:Guests/LiveTools.*Matches*/4level:Guests/LiveKvm.Random*/4level:Guests/LiveKvm.ReadingTheAgentsOwnHome*/4level:Guests/LiveConsistency.*/4level:Guests/LiveRootkit.*/4level_kernel'
run_gtest() {  # run_gtest NAME BINARY FILTER: streams its output (a hang shows how far it got)
    name=$1 bin=$2 filter=$3
    echo "VTX-TEST $name: start"
    { $bin --gtest_color=no --gtest_filter="$filter" 2>&1; echo $? > /run/imee/$name.rc; } |
        tee /run/imee/$name.log | sed "s/^/VTX-TEST $name| /"
    rc=$(cat /run/imee/$name.rc)
    summary=$(grep -E '^\[  (PASSED|FAILED)  \]|^\[  SKIPPED \]' /run/imee/$name.log | tr '\n' ' ')
    check "$name (exit $rc: $summary)" '[ "$rc" = 0 ]'
}
if [ -x $IMEE_BIN/imee_kernel_tests ] && [ -x $IMEE_BIN/imee_kvm_tests ] && [ -x $IMEE_BIN/imee_live_tests ]; then
    # tests/lab's run-directory layout for the tests' LabGuest: RUNDIR/{qemu.pid,ram.img,kallsyms}
    # and lab.sh query/pause/resume (lab-shim.sh). Each guest's kallsyms carries its own slide.
    mkdir -p /run/lab
    for dir in "$L2_DIR" ${L2B_DIR:-}; do
        text=$(sed -n 's/^_text \(0x[0-9a-f]*\).*/\1/p' "$dir/info.txt" | head -n 1)
        rm -f "$dir/kallsyms"
        labctl kallsyms-rebase "$L2_KALLSYMS" "$text" > "$dir/kallsyms"
        check "$(basename $dir) kallsyms rebased to _text $text" 'grep -q "^${text#0x} T _text$" "$dir/kallsyms"'
    done
    ln -sfn "$L2_DIR" /run/lab/l4
    # Bochs sets guest A/D bits through read-only EPT entries (tests/support/ram_diff.hpp): the
    # RAM checks allow exactly that change here and report how often it happened.
    export IMEE_CPU_WRITES_AD_THROUGH_READONLY_EPT=1
    export IMEE_TOOL_BACKEND=kernel IMEE_REQUIRE_KERNEL=1 IMEE_LAB_LEVELS=4 IMEE_LAB_ROOT=/run/lab \
        IMEE_LAB_KERNEL="$L2_KERNEL" IMEE_LAB_SCRIPT=/tests/lab-shim.sh IMEE_TOOLS_DIR=$IMEE_BIN \
        IMEE_LAB_SECOND=${L2B_DIR:-} IMEE_CONSISTENCY_SECONDS=${IMEE_CONSISTENCY_SECONDS:-0.3}
    # The unit tests use targets of their own, not the guests: paused, idle guests cost L1 no
    # time (running, one idle guest made the unit tests 10-25% slower in wall time)
    guests() { for q in "$L2_QMP" ${L2B_QMP:-}; do labctl qmp "$q" "$1" > /dev/null || return 1; done; }
    check "guests paused for the unit tests" 'guests stop'
    run_gtest kernel-ioctl $IMEE_BIN/imee_kernel_tests "$KERNEL_IOCTL_TESTS"
    run_gtest kernel-suite $IMEE_BIN/imee_kvm_tests "$KERNEL_SUITE_TESTS"
    # examples/imee_ioctl.c: the ioctls from a plain C program, on a VM of its own (a known
    # pattern) and on L2 (paused: its RAM file holds what the ImEE must read)
    check "imee_ioctl example on its own VM" \
        'IMEE_REQUIRE_KERNEL=1 $IMEE_BIN/imee_ioctl > /run/imee/ioctl.log 2>&1; rc=$?; sed "s/^/VTX-TEST imee_ioctl| /" /run/imee/ioctl.log; [ $rc = 0 ]'
    # GPA 16 MiB: the first bytes of L2's kernel text (PVH loads it there), never 0
    want=$(od -A n -t x8 -j $((0x1000000)) -N 8 "$L2_RAM" | tr -d ' ')
    check "imee_ioctl example reads L2's GPA 0x1000000 as its RAM file holds it (0x$want)" \
        '[ "$want" != 0000000000000000 ] && IMEE_REQUIRE_KERNEL=1 $IMEE_BIN/imee_ioctl --pid $QEMU_PID --gpa 0x1000000 > /run/imee/ioctl-l2.log 2>&1; rc=$?; sed "s/^/VTX-TEST imee_ioctl| /" /run/imee/ioctl-l2.log; [ $rc = 0 ] && grep -q "0x$want" /run/imee/ioctl-l2.log'
    check "guests resumed" 'guests cont'
    # swap (zram) for the tests that have the target's pages swapped out; only now: the unit
    # tests before judge memory counters that swap would move
    swap_on() {
        for ko in /lib/modules/swap/*.ko; do insmod "$ko" || return 1; done
        echo 64M > /sys/block/zram0/disksize && mkswap /dev/zram0 > /dev/null && swapon /dev/zram0
    }
    check "swap on zram (64 MiB)" swap_on
    run_gtest kernel-live $IMEE_BIN/imee_live_tests "$KERNEL_LIVE_TESTS"
    check "guests paused for the hand-built-vCPU tests" 'guests stop'
    run_gtest kernel-hand-built $IMEE_BIN/imee_kernel_tests "$KERNEL_HAND_BUILT_TESTS"
else
    check "the test binaries are in L1 ($IMEE_BIN: VTX_BINARIES)" false
fi
exit $err
