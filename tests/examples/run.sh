#!/usr/bin/env bash
# The examples on both lab guests (4-level by RAM file, 5-level by QEMU pid): with the guest
# paused, examples/guest_ps (C++) and examples/guest_ps.py (Python, when built) must print the
# guest's banner and exactly pslist's task list.
#   run.sh SOURCE_DIR BUILD_DIR LAB_ROOT LAB_KERNEL PYTHON(ON|OFF)     (env PYTHON: the interpreter)
set -euo pipefail
src=${1:?SOURCE_DIR}
build=${2:?BUILD_DIR}
lab_root=${3:?LAB_ROOT}
kernel=${4:?LAB_KERNEL}
python=${5:-OFF}
lab=$src/tests/lab/lab.sh
work=$build/examples-test
mkdir -p "$work"

status=0
for levels in 4 5; do
  dir=$lab_root/l$levels
  if ((levels == 5)); then target=(--pid "$(cat "$dir/qemu.pid")"); else target=(--ram "$dir/ram.img"); fi
  "$build/tools/pslist" "${target[@]}" --profile "$dir/profile.json" --kernel "$kernel" \
    --symbols "$dir/kallsyms" --backend soft >/dev/null
  outputs=("$work/cpp-l$levels.txt")
  "$lab" pause "$dir" >/dev/null
  trap '"$lab" resume "$dir" >/dev/null' EXIT
  "$build/examples/guest_ps" "${target[@]}" "$dir/profile.json" > "$work/cpp-l$levels.txt"
  if [[ $python == ON ]]; then
    "${PYTHON:-python3}" "$src/examples/guest_ps.py" "${target[@]}" "$dir/profile.json" > "$work/py-l$levels.txt"
    outputs+=("$work/py-l$levels.txt")
  fi
  "$build/tools/pslist" "${target[@]}" --profile "$dir/profile.json" --backend soft --json \
    > "$work/pslist-l$levels.json"
  "$lab" resume "$dir" >/dev/null
  trap - EXIT
  for out in "${outputs[@]}"; do
    python3 "$src/tests/consumer/compare.py" "$out" "$work/pslist-l$levels.json" \
      "$dir/profile.json" || status=1
  done
done
exit $status
