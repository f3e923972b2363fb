#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, ASan+UBSan) and runs each for FUZZ_RUNS executions
# (default 1,000,000; CI runs a short pass). Corpora live in BUILD_DIR/corpus and are seeded from
# the lab guest's files when they exist. Fails on any crash, leak or sanitizer finding.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$repo/build-fuzz}
runs=${FUZZ_RUNS:-1000000}
"$repo/scripts/install-deps.sh"
CC=clang CXX=clang++ cmake -S "$repo" -B "$build" -DIMEE_FUZZ=ON -DBUILD_TESTING=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target fuzz_symbols fuzz_kernel_types fuzz_profile fuzz_guest_ram fuzz_kallsyms

seed() {  # seed NAME FILE [BYTES]: a prefix of FILE as a starting input
  mkdir -p "$build/corpus/$1"
  [[ -f $2 ]] && head -c "${3:-16384}" "$2" > "$build/corpus/$1/seed-$(basename "$2")" || true
}
seed symbols "$repo/build/lab-run/l4/kallsyms"
seed profile "$repo/build/lab-run/l4/profile.json" 65536
seed guest_ram /dev/null
seed kernel_types /dev/null
seed kallsyms /dev/null

status=0
for target in symbols profile guest_ram kernel_types kallsyms; do
  log=$build/fuzz_$target.log
  if "$build/tests/fuzz/fuzz_$target" -runs="$runs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$build/$target-" \
      "$build/corpus/$target" >"$log" 2>&1; then
    echo "fuzz_$target: $(grep -E '^Done' "$log")"
  else
    echo "fuzz_$target: FAILED, see $log"
    grep -E 'ERROR|SUMMARY|runtime error' "$log" | head -5
    status=1
  fi
done
exit $status
