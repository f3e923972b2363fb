#!/usr/bin/env bash
# CTest fixture and test: `cmake --install BUILD --prefix PREFIX`, then checks the installed tree:
# both libraries (SONAME, version), exactly the public headers (nothing of libimee/src), each
# header compiling on its own against the installed tree alone, the CMake package, the pkg-config
# files, the tools, man pages and the Python module.
#   check-install.sh SOURCE_DIR BUILD_DIR PREFIX
set -uo pipefail
src=${1:?SOURCE_DIR}
build=${2:?BUILD_DIR}
prefix=${3:?PREFIX}
fail=0
bad() { echo "check-install: FAIL: $*" >&2; fail=1; }

rm -rf "$prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null || { echo "check-install: cmake --install failed" >&2; exit 1; }
echo "== installed tree ($prefix)"
(cd "$prefix" && find . -type f -o -type l | sort)

libdir=$(sed -n 's/^CMAKE_INSTALL_LIBDIR:PATH=//p' "$build/CMakeCache.txt")
version=$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$build/CMakeCache.txt")
major=${version%%.*}
lib=$prefix/$libdir

# Libraries: libimee.so -> libimee.so.MAJOR -> libimee.so.VERSION, SONAME libimee.so.MAJOR.
[[ -f $lib/libimee.so.$version && ! -L $lib/libimee.so.$version ]] || bad "no libimee.so.$version"
[[ $(readlink "$lib/libimee.so.$major") == "libimee.so.$version" ]] || bad "libimee.so.$major"
[[ $(readlink "$lib/libimee.so") == "libimee.so.$major" ]] || bad "libimee.so link"
soname=$(readelf -d "$lib/libimee.so.$version" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[[ $soname == "libimee.so.$major" ]] || bad "SONAME is '$soname', expected libimee.so.$major"
[[ -f $lib/libimee.a ]] || bad "no libimee.a"
nm -D --defined-only "$lib/libimee.so.$version" | grep -c 'LinuxSession4open' >/dev/null ||
  bad "libimee.so does not export LinuxSession::open"

# Headers: exactly libimee/include/imee/*.hpp, plus the uapi header; nothing else.
expected=$( (cd "$src/libimee/include" && ls imee/*.hpp; echo imee/uapi/linux/imee.h) | sort)
actual=$(cd "$prefix/include" && find . -type f | sed 's|^\./||' | sort)
[[ $expected == "$actual" ]] || bad "installed headers differ from the public ones:
$(diff <(echo "$expected") <(echo "$actual"))"
# Each public header on its own, against the installed tree only (a private include fails here).
for h in $(cd "$prefix/include" && ls imee/*.hpp); do
  echo "#include <$h>" | g++ -std=c++20 -fsyntax-only -Wall -Wextra -Werror -I"$prefix/include" \
    -x c++ - 2>&1 | sed "s|^|$h: |" >&2
  [[ ${PIPESTATUS[1]} == 0 ]] || bad "$h does not compile on its own"
done
echo '#include <linux/imee.h>
int main(void) { struct imee_query q = {0}; return (int)sizeof q; }' |
  gcc -std=c11 -fsyntax-only -Wall -Werror -I"$prefix/include/imee/uapi" -x c - ||
  bad "imee/uapi/linux/imee.h does not compile as C"

# CMake package and pkg-config.
for f in imeeConfig.cmake imeeConfigVersion.cmake imeeTargets.cmake; do
  [[ -f $lib/cmake/imee/$f ]] || bad "no $lib/cmake/imee/$f"
done
pcv=$(PKG_CONFIG_PATH=$lib/pkgconfig pkg-config --modversion imee) || bad "pkg-config imee"
[[ ${pcv:-} == "$version" ]] || bad "imee.pc version '${pcv:-}' != $version"
pcl=$(PKG_CONFIG_PATH=$lib/pkgconfig pkg-config --libs imee | xargs)
[[ $pcl == "-L$lib -limee" ]] || bad "pkg-config --libs imee: '$pcl'"
pcu=$(PKG_CONFIG_PATH=$lib/pkgconfig pkg-config --cflags imee-uapi | xargs)
[[ $pcu == "-I$prefix/include/imee/uapi" ]] || bad "pkg-config --cflags imee-uapi: '$pcu'"

# Tools and their man pages.
for t in pidlist pslist credlist syscalldmp imee-bench; do
  "$prefix/bin/$t" --help >/dev/null || bad "$t --help"
  if command -v help2man >/dev/null; then
    zcat "$prefix/share/man/man1/$t.1.gz" 2>/dev/null | grep -c '^\.SH DESCRIPTION' >/dev/null ||
      bad "no man page $t.1"
  fi
done

# The Python module, if built.
if grep -q '^IMEE_BUILD_PYTHON:BOOL=ON' "$build/CMakeCache.txt"; then
  PYTHONPATH=$prefix/lib/python3/dist-packages python3 -c '
import imee, sys
assert imee.__file__.startswith(sys.argv[1]), imee.__file__
assert issubclass(imee.ReadError, imee.Error)' "$prefix" || bad "the installed Python module"
fi

if ((fail)); then echo "check-install: FAIL"; exit 1; fi
echo "check-install: PASS ($(cd "$prefix" && find . -type f | wc -l) files)"
