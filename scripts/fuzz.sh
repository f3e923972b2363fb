#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, ASan+UBSan) and runs each for FUZZ_RUNS executions
# (default 1,000,000; CI runs a short pass). Corpora live in BUILD_DIR/corpus and are seeded from
# tests/fuzz/seeds/ and from the lab guest's files when they exist. Fails on any crash, leak or
# sanitizer finding. FUZZ_TARGETS picks some of them (default: all). FUZZ_SECONDS caps each
# harness's run in wall seconds too (CI's short pass: the ISF and BTF harnesses run ~150-300
# inputs a second under the sanitizers). FUZZ_SANITIZERS picks the sanitizers (default
# address,undefined; BUILD_DIR should differ per choice).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$repo/build-fuzz}
runs=${FUZZ_RUNS:-1000000}
seconds=${FUZZ_SECONDS:-0}  # 0: no cap
"$repo/scripts/install-deps.sh"
sanitizers=${FUZZ_SANITIZERS:-address,undefined}
CC=clang CXX=clang++ cmake -S "$repo" -B "$build" -DIMEE_FUZZ=ON -DBUILD_TESTING=OFF \
  -DIMEE_FUZZ_SANITIZERS="$sanitizers" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
targets=${FUZZ_TARGETS:-symbols profile guest_ram kernel_types kallsyms btf_memory isf profile_cache}
cmake --build "$build" -j"$(nproc)" --target $(printf 'fuzz_%s ' $targets)

seed() {  # seed NAME FILE [BYTES]: a prefix of FILE as a starting input
  mkdir -p "$build/corpus/$1"
  [[ -f $2 ]] && head -c "${3:-16384}" "$2" > "$build/corpus/$1/seed-$(basename "$2")" || true
}
seed symbols "$repo/build/lab-run/l4/kallsyms"
seed profile "$repo/build/lab-run/l4/profile.json" 65536
seed guest_ram /dev/null
seed kernel_types /dev/null
seed kallsyms /dev/null
seed btf_memory /sys/kernel/btf/vmlinux 65536  # a real BTF's start (its header, its first types)
seed btf_memory "$repo/build/lab/vmlinuz" 65536
for dir in "$repo"/tests/fuzz/seeds/*/; do  # small whole inputs: a BTF, an ISF, cache files
  for f in "$dir"*; do [[ $f == *.c ]] || seed "$(basename "$dir")" "$f" 65536; done
done

status=0
for target in $targets; do
  log=$build/fuzz_$target.log
  if "$build/tests/fuzz/fuzz_$target" -runs="$runs" -max_total_time="$seconds" -max_len=65536 \
      -timeout=10 -rss_limit_mb=2048 \
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
