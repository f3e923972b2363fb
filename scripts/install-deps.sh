#!/usr/bin/env bash
# Installs every Debian package the build, the lab guest and the tests need (Debian 12, as root).
set -euo pipefail

packages=(
  # build
  cmake g++ make pkg-config clang-format python3
  libgtest-dev libbpf-dev liblzma-dev zlib1g-dev libzstd-dev nlohmann-json3-dev
  # lab guest: Debian's kernel is fetched with apt-get download; QEMU boots it under TCG
  qemu-system-x86 busybox-static cpio gzip libc6-dev
  # test oracles for BTF offsets (pahole) and kernel payloads (xz, zstd); libFuzzer
  dwarves xz-utils zstd clang libclang-rt-14-dev
  # the Python module and its tests; the tools' man pages; the Debian packages (dpkg-shlibdeps)
  python3-dev python3-pybind11 python3-pytest help2man dpkg-dev
  # libimee's API reference
  doxygen
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=900 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq "${missing[@]}" >/dev/null
fi
