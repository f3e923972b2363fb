#!/bin/sh
# Default test run of the VT-x lab, in L1 once the L2 guests (the lab guest) are ready.
# Environment from /init:
#   L2_DIR QEMU_PID L2_RAM L2_CHAN (ttyS1 of L2) L2_QMP         the first guest (/run/l2)
#   L2B_DIR QEMU_PID_B L2B_RAM L2B_CHAN L2B_QMP L2B_MODE          the second one (/run/l2b), if
#                                                                L2_COUNT=2
#   L2_VMLINUZ=/l2/vmlinuz L2_KALLSYMS=/l2/kallsyms IMEE_BIN=/opt/imee/bin
# Exit 0 = pass. Output lines start with "VTX-TEST" (run-vtx-lab.sh echoes them).
set -u
err=0
check() { if eval "$2"; then echo "VTX-TEST ok   $1"; else echo "VTX-TEST FAIL $1"; err=1; fi; }
mkdir -p /run/imee
# one profile for both guests (same kernel build); imee_kernel_tests may use it too
export L2_PROFILE=/run/imee/profile.json
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

# pid_set TASKS_FILE: the pids of a `tasks` answer, sorted, plus 0 (init_task is on the kernel's
# task list but not in /proc)
pid_set() { { echo 0; cut -d' ' -f1 "$1"; } | sort -n; }

# tool_matches NAME DIR QEMU_PID CHAN [BACKEND]: pidlist (BACKEND, default soft) against the
# running guest gives the guest's own pid set. DIR/tasks.txt is the task list just taken. As tests/live does, the truth is
# taken before and after the tool run, and the run is repeated while the task set moves.
tool_matches() {
    name=$1 dir=$2 pid=$3 chan=$4 backend=${5:-soft}
    pid_set "$dir/tasks.txt" > "$dir/before.pids"
    for attempt in 1 2 3; do
        $IMEE_BIN/pidlist --pid "$pid" --backend "$backend" --kernel "$L2_VMLINUZ" \
            --symbols "$L2_KALLSYMS" --profile "$L2_PROFILE" --stats > "$dir/pidlist.out" 2>"$dir/pidlist.err"
        rc=$?
        sed "s/^/VTX-TEST $name pidlist: /" "$dir/pidlist.err"
        if [ $rc -ne 0 ]; then
            check "$name pidlist --pid $pid exits 0 (exit $rc)" false
            return
        fi
        labctl chan "$chan" tasks 60 > "$dir/tasks.txt" 2>"$dir/tasks.err"
        pid_set "$dir/tasks.txt" > "$dir/after.pids"
        if cmp -s "$dir/before.pids" "$dir/after.pids"; then
            sort -n "$dir/pidlist.out" > "$dir/pidlist.pids"
            d=$(diff "$dir/after.pids" "$dir/pidlist.pids" | grep '^[-+][0-9]' | tr '\n' ' ')
            check "$name pidlist --pid $pid: the guest's $(wc -l < "$dir/after.pids") pids (incl. 0)${d:+, diff (-guest +pidlist): $d}" \
                '[ -z "$d" ] && [ "$(wc -l < "$dir/pidlist.out")" -eq "$(wc -l < "$dir/pidlist.pids")" ]'
            return
        fi
        echo "VTX-TEST $name task set moved during attempt $attempt, again"
        mv "$dir/after.pids" "$dir/before.pids"
    done
    check "$name task set held still for one of 3 pidlist runs" false
}

guest_checks L2 "$L2_DIR" "$QEMU_PID" "$L2_RAM" "$L2_CHAN" "$L2_QMP"

# The tools in L1 (VTX_BINARIES): they start, and read the first guest with the soft backend (the
# first run builds the profile from /l2/vmlinuz + /l2/kallsyms).
if [ -x $IMEE_BIN/pidlist ]; then
    $IMEE_BIN/pidlist --help > /run/imee/help.txt 2>&1
    rc=$?
    check "pidlist --help (exit $rc: $(head -n 1 /run/imee/help.txt))" '[ $rc -eq 0 ] && grep -q "^usage: pidlist" /run/imee/help.txt'
    tool_matches L2 "$L2_DIR" "$QEMU_PID" "$L2_CHAN"
    tool_matches "L2 (kernel backend)" "$L2_DIR" "$QEMU_PID" "$L2_CHAN" kernel
else
    echo "VTX-TEST note: no $IMEE_BIN/pidlist (VTX_BINARIES), tool checks not run"
fi

if [ "${L2_COUNT:-1}" = 2 ]; then
    guest_checks L2B "$L2B_DIR" "$QEMU_PID_B" "$L2B_RAM" "$L2B_CHAN" "$L2B_QMP"
    check "L2 and L2B are two QEMUs ($QEMU_PID, $QEMU_PID_B)" '[ "$QEMU_PID" != "$QEMU_PID_B" ]'
    if [ "${L2B_MODE:-}" = clone ]; then
        # /init spawned 3 tasks in the clone: they tell the guests apart
        check "L2B (clone) has tasks L2 has not" '! cmp -s "$L2_DIR/tasks.txt" "$L2B_DIR/tasks.txt" && [ "$(grep -c " extra-[0-9]*$" "$L2B_DIR/tasks.txt")" -eq 3 ]'
    fi
    [ -x $IMEE_BIN/pidlist ] && tool_matches L2B "$L2B_DIR" "$QEMU_PID_B" "$L2B_CHAN"
fi

# The kernel backend's tests: the same test binaries as on the host, here with the patched
# kvm-intel: the kernel ImEE's own tests on synthetic targets (imee_unit_tests) and the live tests
# against the guests with IMEE_TOOL_BACKEND=kernel (imee_live_tests). IMEE_REQUIRE_KERNEL=1:
# a missing kernel backend fails them instead of skipping them.
KERNEL_UNIT_TESTS='EptLogic.*:KernelImee.*:Levels/KvmBackendTest.FourKilobyte*4level_kernel:Levels/KvmBackendTest.LargePages*4level_kernel:Levels/KvmBackendTest.FaultsMatch*4level_kernel'
KERNEL_LIVE_TESTS='LiveKernel.Activation*'
run_gtest() {  # run_gtest NAME BINARY FILTER: streams its output (a hang shows how far it got)
    name=$1 bin=$2 filter=$3
    echo "VTX-TEST $name: start"
    { $bin --gtest_color=no --gtest_filter="$filter" 2>&1; echo $? > /run/imee/$name.rc; } |
        tee /run/imee/$name.log | sed "s/^/VTX-TEST $name| /"
    rc=$(cat /run/imee/$name.rc)
    summary=$(grep -E '^\[  (PASSED|FAILED)  \]|^\[  SKIPPED \]' /run/imee/$name.log | tr '\n' ' ')
    check "$name (exit $rc: $summary)" '[ "$rc" = 0 ]'
}
if [ -x $IMEE_BIN/imee_unit_tests ] && [ -x $IMEE_BIN/imee_live_tests ]; then
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
    export IMEE_TOOL_BACKEND=kernel IMEE_REQUIRE_KERNEL=1 IMEE_LAB_LEVELS=4 IMEE_LAB_ROOT=/run/lab \
        IMEE_LAB_KERNEL="$L2_VMLINUZ" IMEE_LAB_SCRIPT=/tests/lab-shim.sh IMEE_TOOLS_DIR=$IMEE_BIN \
        IMEE_LAB_SECOND=${L2B_DIR:-} IMEE_CONSISTENCY_SECONDS=${IMEE_CONSISTENCY_SECONDS:-1}
    # The tests seen passing here so far (kernel/README.md, "Open", has what is not yet).
    run_gtest kernel-unit $IMEE_BIN/imee_unit_tests "$KERNEL_UNIT_TESTS"
    run_gtest kernel-live $IMEE_BIN/imee_live_tests "$KERNEL_LIVE_TESTS"
else
    check "the test binaries are in L1 ($IMEE_BIN: VTX_BINARIES)" false
fi
exit $err
