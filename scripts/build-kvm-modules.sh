#!/usr/bin/env bash
# build-kvm-modules.sh [-k KVER] [--deps] [OUTDIR] -- build kvm.ko + kvm-intel.ko
# (+ kvm-amd.ko) with ImEE, out of tree, from a kernel's own KVM sources plus
# kernel/, against that kernel's headers.  Linux 6.1 and 6.12 (Debian 12).
#
# Produces:
#   OUTDIR/kvm.ko, OUTDIR/kvm-intel.ko (kvm-amd.ko with IMEE_KVM_AMD=y),
#                          debug info stripped as by INSTALL_MOD_STRIP=1;
#                          unstripped: CACHE/tree/arch/x86/kvm/*.ko
#   OUTDIR/BUILDINFO       kernel, source, patches, vermagic
# Default OUTDIR: build/kvm-modules/<kver> in the repository.
#
# Steps: pick the hook patches by the kernel's major.minor
# (kernel/patches/<x.y>/, e.g. 6.1 or 6.12; any other series is an error);
# install what is missing (Debian: linux-headers-<kver>, linux-source-<x.y>
# of the same package version, gcc, make, patch, xz-utils); extract
# arch/x86/kvm, virt/kvm (and checkpatch) from the source tarball once
# (cached); assemble the build tree: upstream files, then the overlay kernel/
# (all but README.md and patches/), then kernel/patches/<x.y>/*.patch
# (patch -p1, no fuzz), then the repository's Kbuild as arch/x86/kvm/Kbuild;
# run make -C <headers> M=<tree>/arch/x86/kvm modules; check vermagic.
# The build tree is reused: unchanged files keep their mtime, so a rebuild
# after an edit of kernel/ recompiles only what changed.
#
# --deps: only install what the build needs (headers, source, compiler,
# tools) and check it, then exit (scripts/dkms-*.sh, before DKMS builds
# with IMEE_NO_APT=1).
#
# Kernel release (first that is set):
#   -k KVER         (DKMS passes ${kernelver} this way)
#   IMEE_KVER       "running" means uname -r
#   default         uname -r if Debian has headers for it (installed, or
#                   linux-headers-<uname -r> known to apt); otherwise what the
#                   meta-package linux-image-amd64 depends on (logged)
# Environment:
#   IMEE_KDIR       kernel build (headers) dir (default /lib/modules/KVER/build)
#   IMEE_KSRC       kernel source: tarball or directory (default: the
#                   linux-source-<x.y> tarball under /usr/src)
#   IMEE_CACHE_DIR  extracted sources + build tree (default OUTDIR/cache)
#   IMEE_NO_APT=1   never call apt-get; fail if something is missing (DKMS)
#   IMEE_KVM_AMD=y  also build kvm-amd.ko
#   IMEE_STRIP=0    keep debug info in OUTDIR/*.ko (kvm.ko: ~19 MB vs ~1.5 MB)
#   JOBS            parallel make jobs (default: nproc)
set -euo pipefail

die() { echo "build-kvm-modules.sh: $*" >&2; exit 1; }
log() { echo "build-kvm-modules.sh: $*" >&2; }

usage() { die "usage: build-kvm-modules.sh [-k KVER] [--deps] [OUTDIR]"; }
ARG_KVER=
DEPS_ONLY=0
while [ $# -gt 0 ]; do
    case "$1" in
    -k) [ $# -ge 2 ] || usage; ARG_KVER=$2; shift 2 ;;
    -k?*) ARG_KVER=${1#-k}; shift ;;
    --deps) DEPS_ONLY=1; shift ;;
    --) shift; break ;;
    -*) usage ;;
    *) break ;;
    esac
done
[ $# -le 1 ] || usage
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
JOBS=${JOBS:-$(nproc)}

apt_install() {
    [ "${IMEE_NO_APT:-0}" = 1 ] && die "missing: $* (IMEE_NO_APT=1)"
    command -v apt-get >/dev/null || die "missing: $* (no apt-get here)"
    log "apt-get install $*"
    # Another engineer's apt-get may hold the lock: wait for it.
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 \
        install -y --no-install-recommends "$@" >&2 ||
        die "apt-get install $* failed"
}

# --------------------------------------------------------------- kernel
# Debian has headers for release $1: installed, or a package apt knows.
have_headers() {
    [ -f "/lib/modules/$1/build/Makefile" ] ||
        { [ "${IMEE_NO_APT:-0}" != 1 ] && command -v apt-cache >/dev/null &&
          apt-cache show "linux-headers-$1" >/dev/null 2>&1; }
}
resolve_kver() {
    [ -z "$ARG_KVER" ] || { echo "$ARG_KVER"; return; }
    case "${IMEE_KVER:-}" in
    running) uname -r; return ;;
    ?*) echo "$IMEE_KVER"; return ;;
    esac
    local run pkg
    run=$(uname -r)
    if have_headers "$run"; then
        echo "$run"
        return
    fi
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
          awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }') || true
    [ -n "$pkg" ] || die "no headers for the running kernel $run, and cannot resolve the kernel (apt-cache depends linux-image-amd64 gave nothing); set IMEE_KVER"
    log "running kernel $run has no Debian headers package: building for $pkg (what linux-image-amd64 depends on; -k or IMEE_KVER to choose)"
    echo "${pkg#linux-image-}"
}
KVER=$(resolve_kver)
[ -n "$KVER" ] || die "empty kernel release"

# Hook patches per kernel series (major.minor of the release).
series_list() { (cd "$REPO/kernel/patches" && ls -d [0-9]*.[0-9]* 2>/dev/null | sort -V | paste -sd' '); }
[[ $KVER =~ ^([0-9]+\.[0-9]+) ]] || die "kernel release '$KVER' does not start with a version"
XY=${BASH_REMATCH[1]}
PATCHDIR=$REPO/kernel/patches/$XY
[ -d "$PATCHDIR" ] ||
    die "kernel $KVER: no ImEE hook patches for Linux $XY (kernel/patches/$XY/; supported: $(series_list))"

# Tools.  flex, bison, bc and libelf-dev are not needed: Debian's headers
# ship prebuilt fixdep, modpost, genksyms and objtool (linux-kbuild-*).
need=()
command -v make >/dev/null || need+=(make)
command -v patch >/dev/null || need+=(patch)
command -v xz >/dev/null || need+=(xz-utils)
command -v gcc >/dev/null || need+=(gcc)
command -v modinfo >/dev/null || need+=(kmod)
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"

KDIR=${IMEE_KDIR:-/lib/modules/$KVER/build}
if [ ! -f "$KDIR/Makefile" ]; then
    [ -z "${IMEE_KDIR:-}" ] || die "IMEE_KDIR=$KDIR has no Makefile"
    apt_install "linux-headers-$KVER"
fi
{ [ -f "$KDIR/Makefile" ] && [ -f "$KDIR/.config" ]; } ||
    die "no kernel headers for $KVER at $KDIR"
KDIR=$(cd "$KDIR" && pwd -P)
# Upstream version of the headers (e.g. 6.1.192), to match the sources.
HVER=$(make -s -C "$KDIR" kernelversion 2>/dev/null | tail -n1)
[[ $HVER =~ ^[0-9]+\.[0-9]+ ]] || die "cannot get kernelversion from $KDIR"
[ "${BASH_REMATCH[0]}" = "$XY" ] || die "release $KVER but headers $KDIR are Linux $HVER"
HEADERS_PKG=linux-headers-$KVER
HEADERS_DEBVER=$(dpkg-query -W -f='${Version}' "$HEADERS_PKG" 2>/dev/null || true)

# The compiler the kernel was built with (Debian: gcc-12), if we have it.
CCNAME=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\([^ ]*\) .*/\1/p' "$KDIR/.config")
if [ -n "$CCNAME" ] && ! command -v "$CCNAME" >/dev/null && [ "${IMEE_NO_APT:-0}" != 1 ] &&
   apt-cache show "$CCNAME" >/dev/null 2>&1; then
    apt_install "$CCNAME"
fi
command -v "$CCNAME" >/dev/null 2>&1 || CCNAME=gcc

# --------------------------------------------------------------- source
KSRC=${IMEE_KSRC:-}
if [ -z "$KSRC" ]; then
    KSRC=/usr/src/linux-source-$XY.tar.xz
    SRC_PKG=linux-source-$XY
    have=$(dpkg-query -W -f='${db:Status-Status} ${Version}' "$SRC_PKG" 2>/dev/null || true)
    if [ -n "$HEADERS_DEBVER" ]; then
        # Same Debian package version as the headers, or the ABI may differ.
        # Unpacked is enough (the tarball is there): a DKMS build that a
        # kernel upgrade starts may run before dpkg configures the source.
        case "$have" in
        "installed $HEADERS_DEBVER" | "unpacked $HEADERS_DEBVER" | \
        "half-configured $HEADERS_DEBVER" | "triggers-"*" $HEADERS_DEBVER") ;;
        *) apt_install "$SRC_PKG=$HEADERS_DEBVER" ;;
        esac
    elif [ ! -f "$KSRC" ]; then
        apt_install "$SRC_PKG"
    fi
fi
[ -e "$KSRC" ] || die "no kernel source at $KSRC (set IMEE_KSRC)"
KSRC=$(cd "$(dirname "$KSRC")" && pwd -P)/$(basename "$KSRC")
if [ "$DEPS_ONLY" = 1 ]; then
    log "kernel $KVER: headers $KDIR, source $KSRC, compiler $CCNAME: all there"
    exit 0
fi

OUT=${1:-$REPO/build/kvm-modules/$KVER}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
CACHE=${IMEE_CACHE_DIR:-$OUT/cache}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)

# Serialize concurrent builds into the same cache.
exec 9>"$CACHE/.lock"
flock 9

# Extract (once per source) only what the build and checkpatch need.
src_id=$(stat -Lc '%n %s %Y' "$KSRC" | md5sum | cut -c1-12)
PRISTINE=$CACHE/src-$src_id
if [ ! -f "$PRISTINE/.done" ]; then
    rm -rf "$CACHE"/src-* "$CACHE/.tmp"
    mkdir -p "$CACHE/.tmp"
    want=(Makefile arch/x86/kvm virt/kvm scripts/checkpatch.pl
          scripts/spelling.txt scripts/const_structs.checkpatch)
    if [ -d "$KSRC" ]; then
        log "copying KVM sources from $KSRC"
        for w in "${want[@]}"; do
            mkdir -p "$CACHE/.tmp/$(dirname "$w")"
            cp -a "$KSRC/$w" "$CACHE/.tmp/$w" 2>/dev/null || true
        done
    else
        log "extracting KVM sources from $KSRC"
        # Top directory of the tarball (linux-source-6.1/).
        top=$(tar -tf "$KSRC" 2>/dev/null | head -n1 | cut -d/ -f1) || true
        [ -n "$top" ] || die "cannot list $KSRC"
        tar -xf "$KSRC" -C "$CACHE/.tmp" --strip-components=1 "${want[@]/#/$top/}" ||
            die "cannot extract ${want[*]} from $KSRC"
    fi
    { [ -f "$CACHE/.tmp/virt/kvm/kvm_main.c" ] && [ -f "$CACHE/.tmp/arch/x86/kvm/Makefile" ]; } ||
        die "$KSRC has no virt/kvm or arch/x86/kvm"
    mv "$CACHE/.tmp" "$PRISTINE"
    touch "$PRISTINE/.done"
fi
SVER=$(awk -F' *= *' '$1 == "VERSION" { v = $2 } $1 == "PATCHLEVEL" { p = $2 }
                      $1 == "SUBLEVEL" { s = $2 } $1 == "EXTRAVERSION" { e = $2 }
                      END { printf "%s.%s.%s%s\n", v, p, s, e }' "$PRISTINE/Makefile")
[ "$SVER" = "$HVER" ] || die "source is $SVER but headers are $HVER ($KSRC vs $KDIR)"

# --------------------------------------------------------------- build tree
STAGE=$CACHE/stage
TREE=$CACHE/tree
rm -rf "$STAGE"
mkdir -p "$STAGE"
cp -a "$PRISTINE/arch" "$PRISTINE/virt" "$STAGE/"
# Overlay: kernel/ mirrors the tree's layout, minus docs and patches.
(cd "$REPO/kernel" && find . -type f ! -path './patches/*' ! -name README.md ! -name '*~' -print0 |
    xargs -0 -r cp --parents -t "$STAGE")
patches=()
for p in "$PATCHDIR"/*.patch; do
    [ -f "$p" ] || continue
    patches+=("$XY/$(basename "$p")")
    patch -d "$STAGE" -p1 --batch --forward --fuzz=0 --no-backup-if-mismatch -s < "$p" ||
        die "kernel/patches/$XY/$(basename "$p") does not apply to linux $SVER"
done
[ ${#patches[@]} -gt 0 ] || die "kernel/patches/$XY/ has no patches"
cp "$REPO/Kbuild" "$STAGE/arch/x86/kvm/Kbuild"

# Sync stage -> tree: copy changed files only, drop files gone from stage.
mkdir -p "$TREE"
(cd "$STAGE" && find . -type f | sort) > "$CACHE/manifest.new"
if [ -f "$CACHE/manifest" ]; then
    comm -23 "$CACHE/manifest" "$CACHE/manifest.new" | (cd "$TREE" && xargs -r rm -f --)
fi
while IFS= read -r f; do
    if ! cmp -s "$STAGE/$f" "$TREE/$f"; then
        mkdir -p "$TREE/$(dirname "$f")"
        cp "$STAGE/$f" "$TREE/$f"
    fi
done < "$CACHE/manifest.new"
mv "$CACHE/manifest.new" "$CACHE/manifest"
rm -rf "$STAGE"

# --------------------------------------------------------------- make
M=$TREE/arch/x86/kvm
AMD=${IMEE_KVM_AMD:-n}
rm -f "$M"/kvm*.ko "$OUT"/kvm*.ko
log "make -C $KDIR M=$M CC=$CCNAME IMEE_KVM_AMD=$AMD -j$JOBS modules"
make -C "$KDIR" M="$M" CC="$CCNAME" IMEE_KVM_AMD="$AMD" -j"$JOBS" modules >&2 ||
    die "build failed"

mods=()
for m in kvm kvm-intel kvm-amd; do
    [ -f "$M/$m.ko" ] || continue
    cp "$M/$m.ko" "$OUT/$m.ko.tmp"
    [ "${IMEE_STRIP:-1}" = 0 ] || strip --strip-debug "$OUT/$m.ko.tmp"
    mv "$OUT/$m.ko.tmp" "$OUT/$m.ko"
    mods+=("$m.ko")
done
{ [ -f "$OUT/kvm.ko" ] && [ -f "$OUT/kvm-intel.ko" ]; } || die "kvm.ko or kvm-intel.ko not built"

# vermagic must start with the headers' release (what the kernel checks).
UTS=$(sed -n 's/^#define UTS_RELEASE "\(.*\)"/\1/p' "$KDIR/include/generated/utsrelease.h")
for m in "${mods[@]}"; do
    vm=$(modinfo -F vermagic "$OUT/$m" 2>/dev/null ||
         strings "$OUT/$m" | sed -n 's/^vermagic=//p' | head -n1)
    case "$vm" in
    "$UTS "*) ;;
    *) die "$m: vermagic '$vm' does not match kernel $UTS" ;;
    esac
done
VERMAGIC=$(modinfo -F vermagic "$OUT/kvm.ko" 2>/dev/null ||
           strings "$OUT/kvm.ko" | sed -n 's/^vermagic=//p' | head -n1)
{
    echo "kernel=$UTS"
    echo "headers=$KDIR${HEADERS_DEBVER:+ ($HEADERS_PKG $HEADERS_DEBVER)}"
    echo "source=$KSRC (linux $SVER)"
    echo "compiler=$CCNAME"
    echo "patches=${patches[*]:-}"
    echo "modules=${mods[*]}"
    echo "vermagic=$VERMAGIC"
} > "$OUT/BUILDINFO"
cat "$OUT/BUILDINFO"
for m in "${mods[@]}"; do echo "$OUT/$m"; done
