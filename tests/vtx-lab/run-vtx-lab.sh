#!/usr/bin/env bash
# run-vtx-lab.sh OUTDIR -- boot the VT-x lab built by build-vtx-lab.sh OUTDIR under Bochs, headless.
#
# COM1 (L1 console, including what L1 prints about L2) goes to OUTDIR/com1.log, Bochs' own log to
# OUTDIR/bochs.log, its terminal output to OUTDIR/bochs.out. Prints the tail of com1.log with
# the elapsed time every VTX_PROGRESS seconds (default 30).
# Exit 0 only if L1 printed "VTX-LAB RESULT: PASS". Exit 1 on FAIL, a kernel panic, Bochs dying,
# or the timeout VTX_TIMEOUT (default 900 s); then the last lines of com1.log are printed.
set -euo pipefail

die() { echo "run-vtx-lab.sh: $*" >&2; exit 1; }
[ $# -eq 1 ] || die "usage: run-vtx-lab.sh OUTDIR"
OUT=$(cd "$1" && pwd) || die "no such OUTDIR $1"
TIMEOUT=${VTX_TIMEOUT:-900}
PROGRESS=${VTX_PROGRESS:-30}
[ -f "$OUT/bochsrc" ] && [ -f "$OUT/vtx-lab.iso" ] || die "$OUT is not built (run build-vtx-lab.sh $OUT)"

exec 8>"$OUT/.run.lock"
flock -n 8 || die "another run uses $OUT"

LOG=$OUT/com1.log
rm -f "$LOG" "$OUT/bochs.log" "$OUT/bochs.out"
: > "$LOG"
: > "$OUT/bochs.out"   # exists before Bochs starts: the pty search below reads it at once

start=$(date +%s)
# term GUI needs a terminal type; its screen output is not needed (the console is COM1)
( cd "$OUT" && TERM=xterm exec setsid bochs-bin -q -f "$OUT/bochsrc" -rc "$OUT/bochs-debugger.rc" \
      </dev/null >"$OUT/bochs.out" 2>&1 ) &
BPID=$!
echo "$BPID" > "$OUT/bochs.pid"
echo "run-vtx-lab.sh: Bochs pid $BPID, console $LOG, timeout ${TIMEOUT}s"

# With stdin not a tty, the term GUI opens a pty and prints "Bochs connected to screen /dev/pts/N".
# Nobody reads it, so after a few minutes of cursor updates the pty buffer is full and Bochs blocks
# in write(): keep it drained.
DRAIN_PID=
for _ in $(seq 1 50); do
    pts=$(sed -n "s/.*connected to screen \"\(\/dev\/pts\/[0-9]*\)\".*/\1/p" "$OUT/bochs.out" | head -n1)
    if [ -n "$pts" ]; then cat "$pts" > "$OUT/bochs.screen" 2>/dev/null & DRAIN_PID=$!; break; fi
    sleep 0.2
done
[ -n "$DRAIN_PID" ] || echo "run-vtx-lab.sh: warning: no Bochs screen pty seen; Bochs may block on it"

stop_bochs() {
    if [ -n "${DRAIN_PID:-}" ]; then kill "$DRAIN_PID" 2>/dev/null || true; fi
    kill -0 "$BPID" 2>/dev/null || return 0
    kill -TERM "$BPID" 2>/dev/null || true
    for _ in 1 2 3 4 5; do kill -0 "$BPID" 2>/dev/null || break; sleep 1; done
    kill -KILL "$BPID" 2>/dev/null || true
    wait "$BPID" 2>/dev/null || true
}
trap stop_bochs EXIT

status=""
seen=0
: > "$OUT/com1.timed.log"
next=$PROGRESS
while :; do
    el=$(( $(date +%s) - start ))
    # wall-clock stamps (seconds since start) for new console lines
    n=$(wc -l < "$LOG")   # complete lines only
    if [ "$n" -gt "$seen" ]; then
        tr -d "\r" < "$LOG" | sed -n "$((seen + 1)),${n}p" | sed "s/^/$(printf "%4d" "$el") /" >> "$OUT/com1.timed.log"
        seen=$n
    fi
    # strip CRs: the kernel writes \r\n on the serial console
    if grep -q '^VTX-LAB RESULT: ' <(tr -d '\r' < "$LOG"); then
        status=$(tr -d '\r' < "$LOG" | grep -m1 '^VTX-LAB RESULT: ')
        break
    fi
    if grep -q 'Kernel panic - not syncing' "$LOG"; then status="kernel panic in L1"; break; fi
    if ! kill -0 "$BPID" 2>/dev/null; then status="Bochs exited before a result"; break; fi
    if [ "$el" -ge "$TIMEOUT" ]; then status="timeout after ${el}s"; break; fi
    if [ "$el" -ge "$next" ]; then
        next=$((next + PROGRESS))
        echo "---- [${el}s] com1.log: $(tr -d '\r' < "$LOG" | grep -c '') lines, last:"
        tr -d '\r' < "$LOG" | grep -v '^$' | tail -n 3 | cut -c1-160 | sed 's/^/    /'
    fi
    sleep 1
done
el=$(( $(date +%s) - start ))

# give L1 a moment to power off so Bochs ends by itself, then make sure it is gone
for _ in $(seq 1 15); do kill -0 "$BPID" 2>/dev/null || break; sleep 1; done
stop_bochs
trap - EXIT

tr -d '\r' < "$LOG" | grep -E '^VTX-LAB (vmx flags|svm flags|kvm_(intel|amd)\.|\[)|^VTX-TEST' | sed 's/^/  /' || true
echo "run-vtx-lab.sh: ${el}s wall: $status"
case $status in
    "VTX-LAB RESULT: PASS"*) exit 0 ;;
esac
echo "---- last 40 lines of $LOG:"
tr -d '\r' < "$LOG" | tail -n 40
if [ -s "$OUT/bochs.log" ]; then
    echo "---- last 10 lines of $OUT/bochs.log:"
    tail -n 10 "$OUT/bochs.log"
fi
exit 1
