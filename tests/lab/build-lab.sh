#!/usr/bin/env bash
# build-lab.sh OUTDIR -- build the lab guest: kernel + initramfs + host channel client.
#
# Produces:
#   OUTDIR/vmlinuz             Debian kernel (bzImage) from the linux-image-* package
#   OUTDIR/kernel.version      the package name it came from (e.g. linux-image-6.1.0-56-amd64)
#   OUTDIR/initramfs.cpio.gz   /init = labguest (static), plus busybox for debugging
#   OUTDIR/labctl              host-side client for the channel socket and QMP socket
#   OUTDIR/imee_rk.ko          the lab rootkit (rootkit/), built against this kernel's Debian
#                              linux-headers-<release> (installed with apt-get if missing);
#                              in the initramfs as /lib/modules/imee_rk.ko
#
# Environment:
#   LAB_KERNEL_PKG   kernel package to use (default: what linux-image-amd64 depends on)
#   LAB_CACHE_DIR    where downloaded/extracted kernels are cached (default: OUTDIR/cache)
#   CC               C compiler (default: gcc)
#
# Idempotent: does nothing when everything is up to date.
set -euo pipefail

die() { echo "build-lab.sh: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: build-lab.sh OUTDIR"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
CACHE=${LAB_CACHE_DIR:-$OUT/cache}
mkdir -p "$CACHE"
CC=${CC:-gcc}
CFLAGS=(-O2 -Wall -Wextra -std=gnu11)

# Serialize concurrent builds into the same OUTDIR.
exec 9>"$OUT/.build.lock"
flock 9

# ---------------------------------------------------------------- kernel
resolve_kernel_pkg() {
    if [ -n "${LAB_KERNEL_PKG:-}" ]; then
        echo "$LAB_KERNEL_PKG"
        return
    fi
    local pkg
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
          awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }') || true
    if [ -z "$pkg" ]; then
        # Offline / no apt metadata: fall back to the newest kernel already cached.
        pkg=$(for d in "$CACHE"/linux-image-[0-9]*; do [ -d "$d" ] && basename "$d"; done | sort -V | tail -n1) || true
    fi
    [ -n "$pkg" ] || die "cannot resolve kernel package (apt-cache depends linux-image-amd64 gave nothing); set LAB_KERNEL_PKG"
    echo "$pkg"
}

KPKG=$(resolve_kernel_pkg)
KVER=${KPKG#linux-image-}
KDIR=$CACHE/$KPKG
KIMG=$KDIR/boot/vmlinuz-$KVER
if [ ! -s "$KIMG" ]; then
    echo "build-lab.sh: fetching $KPKG" >&2
    tmp=$(mktemp -d "$CACHE/.dl.XXXXXX")
    chmod 755 "$tmp"   # apt's _apt user must be able to write the .deb
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    (cd "$tmp" && apt-get download "$KPKG" >&2) || die "apt-get download $KPKG failed"
    debs=("$tmp"/*.deb)
    deb=${debs[0]}
    [ -f "$deb" ] || die "apt-get download $KPKG produced no .deb"
    mkdir -p "$tmp/x"
    # Only boot/ is needed (the guest loads no modules). It comes first in the package's data:
    # tar stops once it has the kernel and its config (--occurrence), and dpkg-deb then dies of
    # SIGPIPE without unpacking the modules (0.5 s instead of 12-60 s for 6.12's 107 MB). If tar
    # did not get both whole, unpack everything instead.
    tar_status=0
    { dpkg-deb --fsys-tarfile "$deb" 2>/dev/null || true; } |
        tar -x -C "$tmp/x" --occurrence=1 "./boot/vmlinuz-$KVER" "./boot/config-$KVER" 2>/dev/null ||
        tar_status=$?
    if [ "$tar_status" != 0 ]; then
        rm -rf "$tmp/x" && mkdir -p "$tmp/x"
        dpkg-deb -x "$deb" "$tmp/x"
    fi
    [ -s "$tmp/x/boot/vmlinuz-$KVER" ] || die "$deb has no boot/vmlinuz-$KVER"
    rm -rf "$KDIR"
    mkdir -p "$KDIR/boot"
    # Only the kernel image is needed (the only module the guest loads is the lab rootkit, built
    # from linux-headers); keep config for reference.
    cp "$tmp/x/boot/vmlinuz-$KVER" "$KDIR/boot/"
    cp "$tmp/x/boot/config-$KVER" "$KDIR/boot/" 2>/dev/null || true
    rm -rf "$tmp"
    trap - EXIT
fi
if ! cmp -s "$KIMG" "$OUT/vmlinuz"; then
    cp "$KIMG" "$OUT/vmlinuz.tmp" && mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
fi
echo "$KPKG" > "$OUT/kernel.version.tmp"
if cmp -s "$OUT/kernel.version.tmp" "$OUT/kernel.version"; then rm "$OUT/kernel.version.tmp"
else mv "$OUT/kernel.version.tmp" "$OUT/kernel.version"; fi

# ---------------------------------------------------------------- binaries
# rebuild TARGET if it is missing or older than any of the given sources
stale() { local t=$1; shift; [ -e "$t" ] || return 0; local s; for s; do [ "$s" -nt "$t" ] && return 0; done; return 1; }

if stale "$OUT/labguest" "$HERE/guest/labguest.c" "$0"; then
    "$CC" "${CFLAGS[@]}" -static -o "$OUT/labguest.tmp" "$HERE/guest/labguest.c"
    mv "$OUT/labguest.tmp" "$OUT/labguest"
fi
if stale "$OUT/labctl" "$HERE/host/labctl.c" "$0"; then
    "$CC" "${CFLAGS[@]}" -o "$OUT/labctl.tmp" "$HERE/host/labctl.c"
    mv "$OUT/labctl.tmp" "$OUT/labctl"
fi

# ---------------------------------------------------------------- rootkit module
KHDR=/usr/src/linux-headers-$KVER
if [ ! -e "$KHDR/Makefile" ]; then
    echo "build-lab.sh: installing linux-headers-$KVER (to build the lab rootkit)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "linux-headers-$KVER" >&2 ||
        die "apt-get install linux-headers-$KVER failed"
fi
if stale "$OUT/imee_rk.ko" "$HERE/rootkit/imee_rk.c" "$HERE/rootkit/Kbuild" "$0" ||
   [ "$(cat "$OUT/imee_rk.kver" 2>/dev/null)" != "$KVER" ]; then
    rkb=$OUT/rootkit-build
    rm -rf "$rkb" && mkdir -p "$rkb"
    cp "$HERE/rootkit/imee_rk.c" "$HERE/rootkit/Kbuild" "$rkb/"
    make -s -C "$KHDR" M="$rkb" modules >"$rkb/make.log" 2>&1 ||
        { cat "$rkb/make.log" >&2; die "building the lab rootkit against $KHDR failed"; }
    cp "$rkb/imee_rk.ko" "$OUT/imee_rk.ko.tmp" && mv "$OUT/imee_rk.ko.tmp" "$OUT/imee_rk.ko"
    echo "$KVER" > "$OUT/imee_rk.kver"
fi

# ---------------------------------------------------------------- initramfs
BUSYBOX=${LAB_BUSYBOX:-/bin/busybox}
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing (apt-get install busybox-static)"
if command -v file >/dev/null 2>&1 && file -L "$BUSYBOX" | grep -q 'dynamically linked'; then
    die "$BUSYBOX is dynamically linked; need busybox-static"
fi

if stale "$OUT/initramfs.cpio.gz" "$OUT/labguest" "$OUT/imee_rk.ko" "$BUSYBOX" "$0"; then
    stage=$(mktemp -d "$OUT/.stage.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$stage'" EXIT
    mkdir -p "$stage"/{bin,sbin,dev,proc,sys,tmp,root,etc,lib/modules}
    cp "$OUT/labguest" "$stage/init"
    cp "$OUT/imee_rk.ko" "$stage/lib/modules/imee_rk.ko"
    cp "$BUSYBOX" "$stage/bin/busybox"
    for a in $("$BUSYBOX" --list); do
        [ "$a" = busybox ] || ln -sf busybox "$stage/bin/$a"
    done
    mknod -m 600 "$stage/dev/console" c 5 1 2>/dev/null || true
    mknod -m 666 "$stage/dev/null" c 1 3 2>/dev/null || true
    chmod 1777 "$stage/tmp"
    (cd "$stage" && find . -print0 | LC_ALL=C sort -z |
        cpio --null -o -H newc --quiet --reproducible) | gzip -9n > "$OUT/initramfs.cpio.gz.tmp"
    mv "$OUT/initramfs.cpio.gz.tmp" "$OUT/initramfs.cpio.gz"
    rm -rf "$stage"
    trap - EXIT
fi

echo "build-lab.sh: $OUT ready ($KPKG)" >&2
