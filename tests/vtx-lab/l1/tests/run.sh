#!/bin/sh
# Default test of the VT-x lab, run in L1 once L2 (the lab guest) printed LAB READY.
# Environment from /init: L2_DIR, QEMU_PID, L2_RAM, L2_CHAN (ttyS1 of L2), L2_QMP.
# Exit 0 = pass. Replace this directory (VTX_TESTS_DIR) for real tests.
set -u
err=0
check() { if eval "$2"; then echo "VTX-TEST ok   $1"; else echo "VTX-TEST FAIL $1"; err=1; fi; }

# L2 answers on its channel and runs the lab workload
ping=$(labctl chan "$L2_CHAN" "ping vtx" 60 2>&1)
check "L2 channel ping ($ping)" '[ "$ping" = "pong vtx" ]'
labctl chan "$L2_CHAN" tasks 60 > /run/l2/tasks.txt 2>/run/l2/tasks.err
n=$(wc -l < /run/l2/tasks.txt)
check "L2 task list has $n tasks" '[ "$n" -ge 40 ]'
check "L2 workload task tree-deep2 present" 'grep -q " tree-deep2$" /run/l2/tasks.txt'
sed -n '1p;/ tree-/p;/ all-distinct$/p' /run/l2/tasks.txt | sed 's/^/VTX-TEST L2 task: /'

# L2 runs under KVM (QMP query-kvm)
kvm=$(labctl qmp "$L2_QMP" query-kvm 2>&1)
echo "VTX-TEST query-kvm: $kvm"
check "QEMU uses KVM" 'echo "$kvm" | grep -q "\"enabled\": *true"'

# L2 RAM is a shared file mapping of QEMU that L1 tools can map
maps=$(grep " $L2_RAM\$" /proc/$QEMU_PID/maps)
echo "$maps" | sed 's/^/VTX-TEST maps: /'
check "QEMU maps $L2_RAM shared (rw-s)" 'echo "$maps" | grep -q "rw-s"'
sz=$(stat -c %s "$L2_RAM")
check "ram.img is $sz bytes" '[ "$sz" -gt 0 ]'
exit $err
