#!/usr/bin/env bash
# The Debian packages, end to end (as root, on a fresh Debian 12; CI runs it): builds them with
# CPack (BUILD_DIR/packages/*.deb), installs them with apt-get, builds tests/consumer against /usr
# with find_package and with pkg-config and runs both, and examples/guest_ps.py on the installed
# Python module, on a lab guest booted for it, with the installed pslist as the reference; then
# removes the packages and checks that every file they installed is gone. Last line:
#   package-check.sh: PASS|FAIL ...
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$repo/build}
work=$build/package-check
packages=(libimee0 libimee-dev imee-tools python3-imee)
status=0
note() { echo "package-check.sh: $*"; }
fail() { note "FAIL: $*" >&2; status=1; }
finish() {
  if ((status == 0)); then echo "package-check.sh: PASS ($*)"; else echo "package-check.sh: FAIL ($*)"; fi
  exit $status
}

[[ $(id -u) == 0 ]] || { echo "package-check.sh: FAIL (needs root: apt-get install)"; exit 1; }
for p in "${packages[@]}"; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    echo "package-check.sh: FAIL ($p is already installed: remove it first)"
    exit 1
  fi
done
"$repo/scripts/install-deps.sh" || { echo "package-check.sh: FAIL (install-deps)"; exit 1; }

note "build and package ($build)"
rm -rf "$build/packages" "$work"
mkdir -p "$work"
BUILD_DIR=$build "$repo/scripts/build.sh" >"$work/build.log" 2>&1 ||
  { tail -n 30 "$work/build.log"; echo "package-check.sh: FAIL (build)"; exit 1; }
(cd "$build" && cpack -G DEB -B "$build/packages" >"$work/cpack.log" 2>&1) ||
  { tail -n 30 "$work/cpack.log"; echo "package-check.sh: FAIL (cpack)"; exit 1; }
debs=("$build"/packages/*.deb)
for d in "${debs[@]}"; do
  note "$(dpkg-deb -f "$d" Package Version Depends | tr '\n' ' ')"
done
((${#debs[@]} == ${#packages[@]})) || fail "expected ${#packages[@]} packages, got ${#debs[@]}"

note "apt-get install ${debs[*]}"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${debs[@]}" >"$work/apt-install.log" 2>&1 ||
  { tail -n 20 "$work/apt-install.log"; fail "apt-get install"; }
installed=$work/installed-files.txt
for p in "${packages[@]}"; do dpkg -L "$p"; done | sort -u > "$installed"
while read -r f; do [[ -d $f ]] || echo "$f"; done < "$installed" > "$work/installed-nondirs.txt"
note "$(wc -l < "$work/installed-nondirs.txt") files installed"

for f in /usr/lib/x86_64-linux-gnu/libimee.so.0 /usr/lib/x86_64-linux-gnu/libimee.so \
         /usr/lib/x86_64-linux-gnu/libimee.a /usr/include/imee/linux_session.hpp \
         /usr/include/imee/uapi/linux/imee.h /usr/lib/x86_64-linux-gnu/cmake/imee/imeeConfig.cmake \
         /usr/lib/x86_64-linux-gnu/pkgconfig/imee.pc /usr/bin/pslist /usr/bin/imee-bench \
         /usr/share/man/man1/pslist.1.gz; do
  [[ -e $f ]] || fail "$f not installed"
done
[[ $(pkg-config --variable=prefix imee) == /usr ]] || fail "imee.pc's prefix is not /usr"
(cd / && env -u PYTHONPATH /usr/bin/python3 -c 'import imee; assert imee.__file__.startswith("/usr/lib/python3/dist-packages/"), imee.__file__') ||
  fail "the installed Python module does not import"

# The consumer against /usr, both ways, on a lab guest.
note "boot a lab guest"
"$repo/tests/lab/build-lab.sh" "$build/lab" >"$work/lab-build.log" 2>&1 || fail "build-lab.sh"
guest=$work/guest
LAB_BUILD_DIR=$build/lab "$repo/tests/lab/lab.sh" start "$guest" --levels 4 >"$work/lab.log" 2>&1 ||
  fail "lab guest did not start (log: $work/lab.log)"
trap '"$repo/tests/lab/lab.sh" stop "$guest" >/dev/null 2>&1' EXIT
pslist --ram "$guest/ram.img" --profile "$guest/profile.json" --kernel "$build/lab/vmlinuz" \
  --symbols "$guest/kallsyms" --backend soft >/dev/null || fail "the installed pslist"
for with in find_package pkg-config; do
  cbuild=$work/consumer-$with
  if ! { cmake -S "$repo/tests/consumer" -B "$cbuild" -DIMEE_CONSUMER_WITH=$with >/dev/null &&
         cmake --build "$cbuild" >/dev/null; }; then
    fail "consumer ($with) does not build against /usr"
    continue
  fi
  lib=$(ldd "$cbuild/consumer" | awk '/libimee\.so/ { print $3 }')
  [[ $(readlink -f "$lib") == $(readlink -f /usr/lib/x86_64-linux-gnu/libimee.so.0) ]] ||
    fail "consumer ($with) uses '$lib'"
  "$repo/tests/lab/lab.sh" pause "$guest" >/dev/null
  "$cbuild/consumer" --ram "$guest/ram.img" "$guest/profile.json" > "$work/out-$with.txt" ||
    fail "consumer ($with) failed"
  pslist --ram "$guest/ram.img" --profile "$guest/profile.json" --backend soft --json \
    > "$work/pslist-$with.json" || fail "pslist --json"
  "$repo/tests/lab/lab.sh" resume "$guest" >/dev/null
  python3 "$repo/tests/consumer/compare.py" "$work/out-$with.txt" "$work/pslist-$with.json" \
    "$guest/profile.json" || fail "consumer ($with) differs from pslist"
done
# The installed Python module, through examples/guest_ps.py.
"$repo/tests/lab/lab.sh" pause "$guest" >/dev/null
(cd / && env -u PYTHONPATH /usr/bin/python3 "$repo/examples/guest_ps.py" --ram "$guest/ram.img" \
  "$guest/profile.json" > "$work/out-python.txt") || fail "examples/guest_ps.py on the installed module"
pslist --ram "$guest/ram.img" --profile "$guest/profile.json" --backend soft --json \
  > "$work/pslist-python.json" || fail "pslist --json"
"$repo/tests/lab/lab.sh" resume "$guest" >/dev/null
python3 "$repo/tests/consumer/compare.py" "$work/out-python.txt" "$work/pslist-python.json" \
  "$guest/profile.json" || fail "the installed Python module differs from pslist"
"$repo/tests/lab/lab.sh" stop "$guest" >/dev/null 2>&1
trap - EXIT

note "apt-get remove ${packages[*]}"
DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq "${packages[@]}" >"$work/apt-remove.log" 2>&1 ||
  { tail -n 20 "$work/apt-remove.log"; fail "apt-get remove"; }
left=0
while read -r f; do
  if [[ -e $f || -L $f ]]; then echo "left behind: $f" >&2; left=$((left + 1)); fi
done < "$work/installed-nondirs.txt"
((left == 0)) || fail "$left files left after apt-get remove"
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" && fail "$p still installed"
done
# libimee0's ldconfig postrm keeps dpkg's record of it (state "rc") until purged: leave the
# machine as it was.
dpkg --purge "${packages[@]}" >/dev/null 2>&1
[[ -z $(dpkg-query -W "${packages[@]}" 2>/dev/null) ]] || fail "dpkg still knows $(dpkg-query -W "${packages[@]}" 2>/dev/null | xargs)"
finish "${#debs[@]} packages, $(wc -l < "$work/installed-nondirs.txt") files installed and removed"
