#!/usr/bin/env bash
# Benchmarks: boots the lab guests (4- and 5-level paging) and runs imee-bench on each, then grows
# the 5-level guest's task list past 1,000 tasks and runs it again, then the consistency
# experiment. Prints tables; JSON goes to BENCH_OUT (default build/bench/). Numbers are this
# machine's only: compare ratios within a run.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$repo/build}
out=${BENCH_OUT:-$build/bench}
runs=${BENCH_RUNS:-5}
"$repo/scripts/install-deps.sh"
BUILD_DIR=$build "$repo/scripts/build.sh"
"$repo/tests/lab/build-lab.sh" "$build/lab"
mkdir -p "$out"
export LAB_BUILD_DIR=$build/lab
lab=$repo/tests/lab/lab.sh
trap '"$lab" stop "$out/l4" >/dev/null 2>&1 || true; "$lab" stop "$out/l5" >/dev/null 2>&1 || true' EXIT
"$lab" start "$out/l4" --levels 4 & "$lab" start "$out/l5" --levels 5 & wait

bench() {  # bench GUEST LABEL
  local g=$out/$1 label=$2
  local args=(--pid "$(cat "$g/qemu.pid")" --profile "$g/profile.json" --kernel "$build/lab/vmlinuz"
              --symbols "$g/kallsyms" --runs "$runs")
  rm -f "$g/profile.json"
  "$build/tools/pidlist" "${args[@]:0:8}" >/dev/null  # builds the profile: tools then run cached
  echo "== $label"
  "$build/tools/imee-bench" "${args[@]}" --json-file "$out/$label.json"
}
bench l4 4-level
bench l5 5-level
"$lab" query "$out/l5" "spawn 1000"
bench l5 5-level-1000-tasks

# The consistency experiment, longer than in the test suite: a guest process remaps one page to a
# fresh one as fast as it can; each backend samples it; stale values and transitions seen per second.
echo "== consistency (${CONSISTENCY_SECONDS:-10} s per backend and guest)"
for levels in 4 5; do
  IMEE_LAB_ROOT=$out IMEE_CONSISTENCY_SECONDS=${CONSISTENCY_SECONDS:-10} \
    "$build/tests/imee_live_tests" --gtest_filter="Guests/LiveConsistency.*/${levels}level" |
    grep -E "samples in|OK|FAILED" | sed "s/^/${levels}-level: /"
done
