#!/usr/bin/env bash
# dkms-install.sh [-k KVER]... -- install ImEE's kvm.ko + kvm-intel.ko + kvm-amd.ko with
# DKMS for the running kernel (or each -k release), rebuilt by DKMS on every
# kernel upgrade (AUTOINSTALL).  Debian 12, as root.
# dkms-install.sh --remove -- take them out again (all kernels).
#
# What it does (kernel/README.md, "DKMS"):
#  1. apt-get install dkms, and for each kernel what build-kvm-modules.sh
#     needs (build-kvm-modules.sh --deps: linux-headers-<release>,
#     linux-source-<x.y> at the headers' version, gcc, make, patch, ...);
#  2. copies dkms.conf, Kbuild, kernel/ and scripts/build-kvm-modules.sh to
#     /usr/src/imee-kvm-<version>/ (an older copy of the same version is
#     removed from DKMS first);
#  3. dkms add, dkms install -k <release>: the modules land in
#     /lib/modules/<release>/updates/dkms/, which modprobe prefers over the
#     stock ones.  Nothing is loaded or unloaded: that stops every VM.
#
# Environment: IMEE_DKMS_VERSION (default: PACKAGE_VERSION in dkms.conf).
set -euo pipefail

die() { echo "dkms-install.sh: $*" >&2; exit 1; }
log() { echo "dkms-install.sh: $*" >&2; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
NAME=imee-kvm
# the vendor module this host loads (AMD CPUs: kvm_amd)
vmod=kvm_intel; grep -qw svm /proc/cpuinfo 2>/dev/null && vmod=kvm_amd
VERSION=${IMEE_DKMS_VERSION:-$(sed -n 's/^PACKAGE_VERSION="\(.*\)"$/\1/p' "$REPO/dkms.conf")}
[ -n "$VERSION" ] || die "no PACKAGE_VERSION in $REPO/dkms.conf"
SRC=/usr/src/$NAME-$VERSION

remove=0
kvers=()
while [ $# -gt 0 ]; do
    case "$1" in
    -k) [ $# -ge 2 ] || die "usage: dkms-install.sh [-k KVER]... | --remove"; kvers+=("$2"); shift 2 ;;
    --remove) remove=1; shift ;;
    *) die "usage: dkms-install.sh [-k KVER]... | --remove" ;;
    esac
done
[ "$(id -u)" = 0 ] || die "run as root"

# Every version of ours DKMS knows (dkms status: "imee-kvm/1.0, 6.1.0-56-amd64, x86_64: installed").
known_versions() {
    command -v dkms >/dev/null || return 0
    dkms status "$NAME" 2>/dev/null | sed -n "s|^$NAME/\([^,:]*\)[,:].*|\1|p" | sort -u
}

if [ "$remove" = 1 ]; then
    for v in $(known_versions); do
        log "dkms remove $NAME/$v --all"
        dkms remove "$NAME/$v" --all
        rm -rf "/usr/src/$NAME-$v"
    done
    log "removed; the stock modules are back for the next load:"
    log "  modprobe -r $vmod kvm && modprobe $vmod   (stops every VM first)"
    exit 0
fi

[ ${#kvers[@]} -gt 0 ] || kvers=("$(uname -r)")

if ! command -v dkms >/dev/null; then
    log "apt-get install dkms"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 \
        install -y --no-install-recommends dkms >&2 || die "apt-get install dkms failed"
fi
for k in "${kvers[@]}"; do
    "$REPO/scripts/build-kvm-modules.sh" --deps -k "$k" ||
        die "kernel $k: headers, source or compiler missing (see above)"
done

# A fresh copy of the sources under /usr/src (same version: replace it).
if known_versions | grep -qx -- "$VERSION"; then
    log "$NAME/$VERSION is already in DKMS: dkms remove $NAME/$VERSION --all, then add this copy"
    dkms remove "$NAME/$VERSION" --all
fi
rm -rf "$SRC"
mkdir -p "$SRC/scripts"
cp "$REPO/dkms.conf" "$REPO/Kbuild" "$SRC/"
cp -r "$REPO/kernel" "$SRC/kernel"
cp "$REPO/scripts/build-kvm-modules.sh" "$SRC/scripts/"
sed -i "s/^PACKAGE_VERSION=.*/PACKAGE_VERSION=\"$VERSION\"/" "$SRC/dkms.conf"
{
    echo "from=$REPO"
    git -C "$REPO" describe --always --dirty 2>/dev/null | sed 's/^/commit=/' || true
    date -u +installed=%FT%TZ
} > "$SRC/SOURCE"
log "sources in $SRC"

dkms add "$NAME/$VERSION"
for k in "${kvers[@]}"; do
    log "dkms install $NAME/$VERSION -k $k (a few minutes)"
    dkms install "$NAME/$VERSION" -k "$k" ||
        die "dkms install failed for $k; log: /var/lib/dkms/$NAME/$VERSION/build/make.log"
done

cat >&2 <<EOF
dkms-install.sh: installed ImEE's kvm.ko, kvm-intel.ko and kvm-amd.ko for ${kvers[*]} in
  /lib/modules/<release>/updates/dkms/ -- they REPLACE the stock KVM modules
  at the next load (modprobe prefers updates/), and DKMS rebuilds them for
  every new kernel of a supported series (6.1, 6.12).
Load them now (stops every running VM):
  modprobe -r $vmod kvm && modprobe $vmod
  modinfo -F version $vmod     # "imee-1" is ours; the stock module has none
Go back to the stock modules:
  scripts/dkms-install.sh --remove   (= dkms remove $NAME/$VERSION --all)
  modprobe -r $vmod kvm && modprobe $vmod
Secure Boot: DKMS signed the modules with /var/lib/dkms/mok.key; enroll
  its certificate once (mokutil --import /var/lib/dkms/mok.pub, reboot,
  confirm in MokManager), or the kernel refuses to load them.
EOF
