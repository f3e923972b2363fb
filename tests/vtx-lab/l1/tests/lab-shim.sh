#!/bin/sh
# tests/lab/lab.sh's query/pause/resume for the L2 guests in L1 (the tests call it as
# IMEE_LAB_SCRIPT): the same channel and QMP commands, through the static labctl.
cmd=$1 dir=$2
case $cmd in
query)  exec labctl chan "$dir/chan.sock" "$3" "${LAB_QUERY_TIMEOUT:-120}" ;;
pause)  exec labctl qmp "$dir/qmp.sock" stop >/dev/null ;;
resume) exec labctl qmp "$dir/qmp.sock" cont >/dev/null ;;
status) exec labctl qmp "$dir/qmp.sock" query-status ;;
*)      echo "lab-shim.sh: unsupported: $*" >&2; exit 2 ;;
esac
