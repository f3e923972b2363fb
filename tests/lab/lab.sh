#!/usr/bin/env bash
# lab.sh -- run the ImEE lab guest (Debian kernel + labguest initramfs) under QEMU/TCG.
#
#   lab.sh start  RUNDIR [--levels 4|5] [--mem 512M]
#   lab.sh query  RUNDIR CMD            (ping | tasks | kallsyms | kallsyms.gz | syscalls | info | help)
#   lab.sh pause  RUNDIR                (QMP stop)
#   lab.sh resume RUNDIR                (QMP cont)
#   lab.sh status RUNDIR                (QMP query-status)
#   lab.sh stop   RUNDIR
#
# Environment:
#   LAB_BUILD_DIR      where build-lab.sh puts its output (default: <repo>/build/lab)
#   LAB_READY_TIMEOUT  seconds to wait for "LAB READY" (default 180)
#   LAB_QUERY_TIMEOUT  longest silence on the channel, seconds (default 60)
#   LAB_QEMU           QEMU binary (default qemu-system-x86_64)
#   LAB_KERNEL_PKG, LAB_CACHE_DIR   see build-lab.sh
#
# See README.md in this directory for the RUNDIR layout and the channel protocol.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BUILD=${LAB_BUILD_DIR:-$REPO/build/lab}
[ -d "$BUILD" ] && BUILD=$(cd "$BUILD" && pwd)  # QEMU runs from the run directory
QEMU=${LAB_QEMU:-qemu-system-x86_64}

die() { echo "lab.sh: $*" >&2; exit 1; }
log() { echo "lab.sh: $*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

usage() {
    sed -n '2,/^# See README/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 1
}

# absolute path of RUNDIR (created if asked)
rundir() {
    local d=$1 create=${2:-}
    if [ -n "$create" ]; then mkdir -p "$d"; fi
    [ -d "$d" ] || die "no such run directory: $d"
    (cd "$d" && pwd)
}

# pid of the QEMU of RUNDIR if it is running, else nothing
qemu_pid() {
    local r=$1 pid
    [ -s "$r/qemu.pid" ] || return 0
    pid=$(tr -dc 0-9 < "$r/qemu.pid")
    [ -n "$pid" ] || return 0
    # guard against a recycled pid: it must be a QEMU whose RAM file is this RUNDIR's ram.img
    if [ -r "/proc/$pid/cmdline" ] &&
       tr '\0' '\n' < "/proc/$pid/cmdline" | grep -qF "mem-path=$r/ram.img,"; then
        echo "$pid"
    fi
}

labctl() {
    local r=$1; shift
    [ -x "$r/labctl" ] || die "$r/labctl missing (was the guest started with lab.sh start?)"
    "$r/labctl" "$@"
}

# query RUNDIR CMD -> stdout; serialized per RUNDIR
chan_query() {
    local r=$1 cmd=$2
    [ -S "$r/chan.sock" ] || die "$r/chan.sock missing (guest not running?)"
    [ -n "$(qemu_pid "$r")" ] || die "QEMU of $r is not running"
    flock "$r/.chan.lock" "$r/labctl" chan "$r/chan.sock" "$cmd" "${LAB_QUERY_TIMEOUT:-60}"
}

qmp() {
    local r=$1; shift
    [ -S "$r/qmp.sock" ] || die "$r/qmp.sock missing (guest not running?)"
    flock "$r/.qmp.lock" "$r/labctl" qmp "$r/qmp.sock" "$@"
}

cmd_stop() {
    local r pid i
    r=$(rundir "$1")
    pid=$(qemu_pid "$r")
    if [ -n "$pid" ]; then
        if [ -S "$r/qmp.sock" ]; then
            timeout 10 "$r/labctl" qmp "$r/qmp.sock" quit >/dev/null 2>&1 || true
        fi
        for i in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            if [ "$i" = 20 ]; then kill -TERM "$pid" 2>/dev/null || true; fi
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
        log "stopped QEMU $pid ($r)"
    fi
    rm -f "$r/chan.sock" "$r/qmp.sock" "$r/qemu.pid" "$r/ram.img" "$r/.chan.lock" "$r/.qmp.lock"
}

cmd_start() {
    [ $# -ge 1 ] || usage
    local r levels=5 mem=512M
    r=$(rundir "$1" create); shift
    while [ $# -gt 0 ]; do
        case $1 in
            --levels) [ $# -ge 2 ] || usage; levels=$2; shift 2 ;;
            --levels=*) levels=${1#*=}; shift ;;
            --mem) [ $# -ge 2 ] || usage; mem=$2; shift 2 ;;
            --mem=*) mem=${1#*=}; shift ;;
            *) die "start: unknown option $1" ;;
        esac
    done
    local cpu
    case $levels in
        5) cpu=max ;;
        4) cpu=max,la57=off ;;
        *) die "--levels must be 4 or 5" ;;
    esac
    [[ $mem =~ ^[0-9]+[MG]$ ]] || die "--mem must look like 512M or 1G"
    command -v "$QEMU" >/dev/null || die "$QEMU not found (apt-get install qemu-system-x86)"
    [ -z "$(qemu_pid "$r")" ] || die "a guest is already running in $r (lab.sh stop $r)"

    "$HERE/build-lab.sh" "$BUILD"
    cp "$BUILD/labctl" "$r/labctl.tmp" && mv "$r/labctl.tmp" "$r/labctl"
    rm -f "$r/chan.sock" "$r/qmp.sock" "$r/qemu.pid" "$r/console.log" "$r/ram.img" \
          "$r/kallsyms" "$r/syscalls.txt" "$r/tasks.txt" "$r/info.txt"
    printf 'levels=%s\nmem=%s\nkernel=%s\n' "$levels" "$mem" "$(cat "$BUILD/kernel.version")" > "$r/lab.conf"

    local t0
    t0=$(now)
    # Relative socket paths (QEMU runs in RUNDIR) keep long RUNDIRs under the sun_path limit.
    (cd "$r" && "$QEMU" \
        -accel tcg -cpu "$cpu" -smp 1 -m "$mem" \
        -object "memory-backend-file,id=ram,size=$mem,mem-path=$r/ram.img,share=on" \
        -machine pc,memory-backend=ram \
        -kernel "$BUILD/vmlinuz" -initrd "$BUILD/initramfs.cpio.gz" \
        -append "console=ttyS0 quiet panic=-1" \
        -nodefaults -display none -monitor none -no-reboot \
        -chardev "file,id=con,path=$r/console.log" -serial chardev:con \
        -chardev "socket,id=chan,path=chan.sock,server=on,wait=off" -serial chardev:chan \
        -qmp "unix:qmp.sock,server=on,wait=off" \
        -pidfile "$r/qemu.pid" -daemonize) || die "QEMU failed to start"

    local deadline=$(( $(date +%s) + ${LAB_READY_TIMEOUT:-180} ))
    while :; do
        if grep -q '^LAB READY' "$r/console.log" 2>/dev/null; then break; fi
        local why=""
        if grep -q '^LAB FAILED' "$r/console.log" 2>/dev/null; then why="guest reported LAB FAILED"
        elif [ -z "$(qemu_pid "$r")" ]; then why="QEMU exited"
        elif [ "$(date +%s)" -ge "$deadline" ]; then why="timeout after ${LAB_READY_TIMEOUT:-180}s"
        fi
        if [ -n "$why" ]; then
            {
                echo "lab.sh: guest in $r did not become ready: $why"
                echo "---- last lines of $r/console.log ----"
                tail -n 30 "$r/console.log" 2>/dev/null || true
                echo "----"
            } >&2
            cmd_stop "$r" >/dev/null 2>&1 || true
            exit 1
        fi
        sleep 0.2
    done
    local t_ready
    t_ready=$(elapsed "$t0")
    log "$r: LAB READY after ${t_ready}s ($levels-level paging, $mem, pid $(cat "$r/qemu.pid"))"

    local t1
    t1=$(now)
    if command -v base64 >/dev/null && command -v gzip >/dev/null; then
        chan_query "$r" kallsyms.gz | base64 -d | gzip -dc > "$r/kallsyms.tmp"
    else
        chan_query "$r" kallsyms > "$r/kallsyms.tmp"
    fi
    mv "$r/kallsyms.tmp" "$r/kallsyms"
    local t_ks
    t_ks=$(elapsed "$t1")
    local nks
    nks=$(wc -l < "$r/kallsyms")
    [ "$nks" -gt 10000 ] || die "kallsyms looks truncated ($nks lines)"
    grep -q ' sys_call_table$' "$r/kallsyms" || die "kallsyms has no sys_call_table"

    chan_query "$r" syscalls > "$r/syscalls.txt.tmp" && mv "$r/syscalls.txt.tmp" "$r/syscalls.txt"
    chan_query "$r" tasks > "$r/tasks.txt.tmp" && mv "$r/tasks.txt.tmp" "$r/tasks.txt"
    chan_query "$r" info > "$r/info.txt.tmp" && mv "$r/info.txt.tmp" "$r/info.txt"
    log "$r: kallsyms ($nks lines) in ${t_ks}s; $(head -n1 "$r/syscalls.txt"); $(wc -l < "$r/tasks.txt") tasks; total $(elapsed "$t0")s"
}

[ $# -ge 2 ] || usage
sub=$1; shift
case $sub in
    start) cmd_start "$@" ;;
    query)
        [ $# -eq 2 ] || usage
        r=$(rundir "$1")
        chan_query "$r" "$2"
        ;;
    pause)  r=$(rundir "$1"); qmp "$r" stop >/dev/null ;;
    resume) r=$(rundir "$1"); qmp "$r" cont >/dev/null ;;
    status) r=$(rundir "$1"); qmp "$r" query-status ;;
    stop)   [ $# -eq 1 ] || usage; cmd_stop "$1" ;;
    *) usage ;;
esac
