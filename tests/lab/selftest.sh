#!/usr/bin/env bash
# ok/bad always succeed, so "test && ok || bad" is fine here; cleanup runs from the trap.
# shellcheck disable=SC2015,SC2317
# selftest.sh [WORKDIR] -- end-to-end check of the lab guest: builds it, boots a 4-level and a
# 5-level guest concurrently, checks tasks/syscalls/kallsyms/info, pause/resume, stops both.
# Exit 0 when everything passed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=${1:-$(mktemp -d /tmp/imee-lab-selftest.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
LAB="$HERE/lab.sh"
fail=0
ok()  { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }

cleanup() { "$LAB" stop "$WORK/g4" >/dev/null 2>&1 || true; "$LAB" stop "$WORK/g5" >/dev/null 2>&1 || true; }
trap cleanup EXIT

export LAB_BUILD_DIR=${LAB_BUILD_DIR:-$HERE/../../build/lab}
"$HERE/build-lab.sh" "$LAB_BUILD_DIR"

# boot both at once
"$LAB" start "$WORK/g4" --levels 4 > "$WORK/start4.log" 2>&1 & p4=$!
"$LAB" start "$WORK/g5" --levels 5 > "$WORK/start5.log" 2>&1 & p5=$!
wait "$p4" || { cat "$WORK/start4.log"; bad "start 4-level"; exit 1; }
wait "$p5" || { cat "$WORK/start5.log"; bad "start 5-level"; exit 1; }
cat "$WORK/start4.log" "$WORK/start5.log" | grep -v '^build-lab.sh' || true

check_guest() {
    local r=$1 levels=$2 n
    # --- info
    grep -qx "paging_levels $levels" "$r/info.txt" && ok "$r: paging_levels $levels" || bad "$r: info.txt: $(tr '\n' ' ' < "$r/info.txt")"
    # --- tasks
    n=$(awk 'NF != 16 || $1 !~ /^[0-9]+$/ || $2 !~ /^[0-9]+$/ { bad++ } END { print bad + 0 }' "$r/tasks.txt")
    [ "$n" = 0 ] && ok "$r: all $(wc -l < "$r/tasks.txt") task lines have 16 fields" || bad "$r: $n malformed task lines"
    n=$(awk '{ for (i = 11; i <= 15; i++) if (length($i) != 16 || $i !~ /^[0-9a-f]+$/) bad++ } END { print bad + 0 }' "$r/tasks.txt")
    [ "$n" = 0 ] && ok "$r: cap fields are 16 hex digits" || bad "$r: $n bad cap fields"
    awk '$16 == "late-cred" && $3 == 3000 && $4 == 3000 && $5 == 3000 && $6 == 3000 && $7 == 3000 && $10 == 3000 { f = 1 } END { exit !f }' "$r/tasks.txt" \
        && ok "$r: late-cred has uid/gid 3000" || bad "$r: late-cred not at 3000"
    n=$(grep -o '{ "[^"]*", *-\{0,1\}[0-9]' "$HERE/guest/labguest.c" | sed 's/{ "\([^"]*\)".*/\1/' | sort -u | wc -l)
    local present
    present=$(grep -o '{ "[^"]*", *-\{0,1\}[0-9]' "$HERE/guest/labguest.c" | sed 's/{ "\([^"]*\)".*/\1/' |
              while read -r w; do awk -v w="$w" '$16 == w { print; exit }' "$r/tasks.txt"; done | wc -l)
    [ "$n" = "$present" ] && ok "$r: all $n workers present" || bad "$r: only $present of $n workers present"
    awk '$4 != $6 || $8 != $10 { a = 1 } $3 != $4 { b = 1 } $4 != $5 { c = 1 } $7 != $8 { d = 1 } $8 != $9 { e = 1 } $2 > 2 { f = 1 }
         END { exit !(a && b && c && d && e && f) }' "$r/tasks.txt" && ok "$r: r/e/s/fs ids and ppids vary" || bad "$r: id variety missing"
    # --- syscalls
    local count
    count=$(awk 'NR == 1 && $1 == "count" { print $2 }' "$r/syscalls.txt")
    { [ "$count" = 451 ] || [ "$count" = 452 ]; } && ok "$r: syscall count $count" || bad "$r: syscall count '$count'"
    [ "$(( $(wc -l < "$r/syscalls.txt") - 1 ))" = "$count" ] && ok "$r: $count syscall lines" || bad "$r: syscall line count"
    n=$(awk 'NR == FNR { a[$1] = $2 " " $3; next }
             FNR > 1 { x = substr($2, 3); if (x == "0000000000000000") { if ($1 < 451) bad++; next }
                       if (!(x in a) || a[x] !~ /^[TtWw] /) bad++ }
             END { print bad + 0 }' "$r/kallsyms" "$r/syscalls.txt")
    [ "$n" = 0 ] && ok "$r: every syscall entry is a text symbol in kallsyms" || bad "$r: $n syscall entries not text symbols"
    awk 'NR == FNR { a[$1] = a[$1] " " $3; next } { exit !(a[substr($2, 3)] ~ / __x64_sys_read( |$)/) }' \
        "$r/kallsyms" <(tail -n +2 "$r/syscalls.txt") && ok "$r: entry 0 is sys_read" || bad "$r: entry 0 is not *sys_read"
    # --- live query matches the file fetched at start
    # (kernel threads come and go, and a kworker's Name carries its current workqueue: compare user tasks)
    "$LAB" query "$r" tasks > "$r/tasks.again"
    cmp -s <(awk '$1 != 2 && $2 != 2' "$r/tasks.txt") <(awk '$1 != 2 && $2 != 2' "$r/tasks.again") \
        && ok "$r: user tasks stable across queries" || bad "$r: user tasks changed between queries"
    [ "$("$LAB" query "$r" ping)" = pong ] && ok "$r: ping" || bad "$r: ping"
    if "$LAB" query "$r" bogus >/dev/null 2>&1; then bad "$r: unknown command accepted"; else ok "$r: unknown command -> ERR"; fi
}
check_guest "$WORK/g4" 4
check_guest "$WORK/g5" 5

a4=$(awk '$3 == "sys_call_table" { print $1 }' "$WORK/g4/kallsyms")
a5=$(awk '$3 == "sys_call_table" { print $1 }' "$WORK/g5/kallsyms")
echo "     sys_call_table: 4-level $a4, 5-level $a5 (KASLR: expected to differ)"

# --- pause/resume: RAM must be stable while paused
"$LAB" pause "$WORK/g5"
"$LAB" status "$WORK/g5" | grep -q '"status": *"paused"' && ok "paused" || bad "status after pause"
h1=$(sha256sum < "$WORK/g5/ram.img"); sleep 1; h2=$(sha256sum < "$WORK/g5/ram.img")
[ "$h1" = "$h2" ] && ok "RAM unchanged while paused" || bad "RAM changed while paused"
"$LAB" resume "$WORK/g5"
"$LAB" status "$WORK/g5" | grep -q '"status": *"running"' && ok "running after resume" || bad "status after resume"
[ "$("$LAB" query "$WORK/g5" ping)" = pong ] && ok "ping after resume" || bad "ping after resume"

"$LAB" stop "$WORK/g4"; "$LAB" stop "$WORK/g5"
[ ! -e "$WORK/g4/qemu.pid" ] && [ ! -e "$WORK/g5/ram.img" ] && ok "stopped and cleaned" || bad "stop left files"
trap - EXIT
[ "$fail" = 0 ] && echo "selftest: PASS ($WORK)" || echo "selftest: FAIL ($WORK)"
exit "$fail"
