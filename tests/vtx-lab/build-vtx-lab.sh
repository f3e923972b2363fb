#!/usr/bin/env bash
# build-vtx-lab.sh OUTDIR -- build the VT-x lab: a Bochs (emulated VT-x + EPT) machine whose L1
# Linux loads kvm-intel and runs the lab guest (tests/lab) as an L2 KVM guest under QEMU microvm.
# VTX_VENDOR=amd builds its AMD-V twin: Bochs' Ryzen model (SVM + NPT) and kvm-amd.
#
# Produces:
#   OUTDIR/vtx-lab.iso        isolinux ISO: L1 kernel (Debian) + L1 initramfs
#   OUTDIR/bochsrc            Bochs config (COM1 -> OUTDIR/com1.log, boots the ISO)
#   OUTDIR/bochs-debugger.rc  "c" (Debian's Bochs is built with its debugger)
#   OUTDIR/l1-initramfs.cpio.zst, OUTDIR/stage/   the L1 initramfs and its tree
#   OUTDIR/lab/               tests/lab/build-lab.sh output (L1 and L2 kernel, L2 initramfs)
#   OUTDIR/cache/             downloaded kernel package, extracted KVM modules
#
# Environment:
#   VTX_VENDOR        intel (default: Bochs corei7_skylake_x, kvm-intel) or amd (Bochs ryzen,
#                     kvm-amd; L1 boots with clearcpuid=mwaitx noxsave, see README.md)
#   KVM_MODULES_DIR   directory with kvm.ko and kvm-intel.ko (amd: kvm-amd.ko) to load in L1
#                     (default: the stock modules of the kernel package). irqbypass.ko is taken
#                     from there if present, else from the stock package.
#   VTX_TESTS_DIR     directory copied to /tests in L1; its run.sh is the test run after L2 is
#                     ready (default: tests/vtx-lab/l1/tests)
#   VTX_BINARIES      space-separated absolute paths of host executables, copied to /opt/imee/bin/
#                     in L1 (debug info stripped) with every shared library ldd names (at their
#                     host paths)
#   VTX_DATA_FILES    space-separated files copied to /opt/imee/share/ in L1
#   VTX_TEST_ENV      space-separated NAME=VALUE words exported to the test run in L1 (e.g.
#                     "IMEE_TEARDOWN_CYCLES=1000 IMEE_CONSISTENCY_SECONDS=10" for the long runs)
#   VTX_LAB_BUILD_DIR where tests/lab/build-lab.sh builds (default: OUTDIR/lab)
#   VTX_L1_MEM        L1 RAM in MiB (default 768)   VTX_L2_MEM  L2 RAM in MiB (default 128)
#   VTX_L2_COUNT      L2 guests: 2 (default; the second one is L2B, in /run/l2b) or 1
#   VTX_L2B_MODE      how L2B comes up: "clone" (default: a live copy of L2 made once L2 is ready,
#                     ~1 min of wall time) or "boot" (its own boot, ~4 min; own KASLR slide)
#   VTX_L2B_MEM       L2B RAM in MiB in boot mode (default 96; a clone has L2's size)
#   VTX_L2_TIMEOUT    L1 waits this many L1-seconds for "LAB READY" from L2 (default 400)
#   VTX_L1_APPEND     extra L1 kernel command-line words
#   VTX_L1_QUIET      L1 kernel log level word (default "quiet": every console line costs ~5 ms of
#                     L1 time in Bochs; set VTX_L1_QUIET= for a full boot log)
#   VTX_NO_INSTALL=1  do not apt-get install missing packages (fail instead)
#   LAB_KERNEL_PKG    passed on to build-lab.sh (kernel package for L1 and L2)
#
# Idempotent: unchanged inputs give no rebuild (the ISO is rebuilt when any input is newer).
set -euo pipefail

die() { echo "build-vtx-lab.sh: $*" >&2; exit 1; }
say() { echo "build-vtx-lab.sh: $*" >&2; }

[ $# -eq 1 ] || die "usage: build-vtx-lab.sh OUTDIR"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
CACHE=$OUT/cache
LABDIR=${VTX_LAB_BUILD_DIR:-$OUT/lab}
TESTS_DIR=${VTX_TESTS_DIR:-$HERE/l1/tests}
L1_MEM=${VTX_L1_MEM:-768}
L2_MEM=${VTX_L2_MEM:-128}
L2_COUNT=${VTX_L2_COUNT:-2}
L2B_MODE=${VTX_L2B_MODE:-clone}
L2B_MEM=${VTX_L2B_MEM:-96}
TEST_ENV=${VTX_TEST_ENV:-}
BINARIES=${VTX_BINARIES:-}
DATA_FILES=${VTX_DATA_FILES:-}
case $L2_COUNT in 1|2) ;; *) die "VTX_L2_COUNT must be 1 or 2" ;; esac
case $L2B_MODE in clone|boot) ;; *) die "VTX_L2B_MODE must be clone or boot" ;; esac
[ "$L2B_MODE" = boot ] || L2B_MEM=$L2_MEM
for f in $BINARIES; do
    case $f in /*) ;; *) die "VTX_BINARIES: $f is not an absolute path" ;; esac
    [ -f "$f" ] && [ -x "$f" ] || die "VTX_BINARIES: $f is not an executable file"
done
for f in $DATA_FILES; do [ -f "$f" ] || die "VTX_DATA_FILES: no file $f"; done
L2_TIMEOUT=${VTX_L2_TIMEOUT:-400}
VENDOR=${VTX_VENDOR:-intel}
case $VENDOR in
intel) KVM_VENDOR_KO=kvm-intel.ko BOCHS_CPU=corei7_skylake_x VENDOR_APPEND= ;;
# Bochs 2.7 never wakes MWAITX (the kernel's delay loop hangs in delay_halt_mwaitx), and with
# XSAVE on, QEMU's first KVM_RUN in L1 hits "Bad FPU state detected at restore_fpregs_from_fpstate"
amd) KVM_VENDOR_KO=kvm-amd.ko BOCHS_CPU=ryzen VENDOR_APPEND="clearcpuid=mwaitx noxsave" ;;
*) die "VTX_VENDOR must be intel or amd" ;;
esac
mkdir -p "$CACHE" "$LABDIR"

exec 9>"$OUT/.build.lock"
flock 9

# ---------------------------------------------------------------- host packages
need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
have bochs-bin || need_pkgs+=(bochs)
[ -e /usr/lib/x86_64-linux-gnu/bochs/plugins/libbx_term_gui.so ] || need_pkgs+=(bochs-term)
[ -e /usr/share/bochs/BIOS-bochs-latest ] || need_pkgs+=(bochsbios)
[ -e /usr/share/vgabios/vgabios.bin ] || need_pkgs+=(vgabios)
[ -e /usr/lib/ISOLINUX/isolinux.bin ] || need_pkgs+=(isolinux)
[ -e /usr/lib/syslinux/modules/bios/ldlinux.c32 ] || need_pkgs+=(syslinux-common)
have xorriso || need_pkgs+=(xorriso)
have xz || need_pkgs+=(xz-utils)
have cpio || need_pkgs+=(cpio)
have zstd || need_pkgs+=(zstd)
[ -x /usr/bin/qemu-system-x86_64 ] || need_pkgs+=(qemu-system-x86)
[ -e /usr/share/qemu/qboot.rom ] || need_pkgs+=(qemu-system-data)
[ -x /bin/busybox ] || need_pkgs+=(busybox-static)
have gcc || need_pkgs+=(gcc libc6-dev)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    [ "${VTX_NO_INSTALL:-0}" = 1 ] && die "missing packages: ${need_pkgs[*]}"
    say "installing ${need_pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y --no-install-recommends "${need_pkgs[@]}" >&2 ||
        { apt-get -o DPkg::Lock::Timeout=900 update >&2 && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y --no-install-recommends "${need_pkgs[@]}" >&2; } ||
        die "apt-get install ${need_pkgs[*]} failed"
fi

# ---------------------------------------------------------------- lab guest (L1 + L2 kernel, L2 initramfs)
"$REPO/tests/lab/build-lab.sh" "$LABDIR" >&2
KPKG=$(cat "$LABDIR/kernel.version")
KVER=${KPKG#linux-image-}

# ---------------------------------------------------------------- stock modules (cached)
# KVM's, and zram's (swap in L1 for the tests that have a target's pages swapped out), each with
# the modules it depends on (read from its .modinfo: 6.1's zram needs zsmalloc.ko, 6.12's the lz4
# compressors, zsmalloc being built in), uncompressed (6.12 ships .ko.xz). swap.order lists the
# swap modules in load order.
STOCK=$CACHE/$KPKG-kvm
if [ ! -s "$STOCK/kvm-intel.ko" ] || [ ! -s "$STOCK/kvm-amd.ko" ] || [ ! -s "$STOCK/kvm.ko" ] ||
    [ ! -s "$STOCK/irqbypass.ko" ] || [ ! -s "$STOCK/swap.order" ] || [ ! -e "$STOCK/amd.order" ]; then
    say "fetching KVM and zram modules of $KPKG"
    tmp=$(mktemp -d "$CACHE/.dl.XXXXXX")
    chmod 755 "$tmp"   # apt's _apt user must be able to write the .deb
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    (cd "$tmp" && apt-get download "$KPKG" >&2) || die "apt-get download $KPKG failed"
    debs=("$tmp"/*.deb)
    mkdir -p "$tmp/x"
    dpkg-deb --fsys-tarfile "${debs[0]}" | tar -x -C "$tmp/x" --wildcards "./lib/modules/$KVER/kernel/*"
    m=$tmp/x/lib/modules/$KVER/kernel
    rm -rf "$STOCK" "$STOCK.tmp"; mkdir -p "$STOCK.tmp"
    order=()
    # take_module NAME: NAME.ko (uncompressed) into STOCK.tmp after the modules it depends on
    take_module() {
        local name=${1//-/_} f dep
        [[ " ${order[*]} " == *" $name "* ]] && return 0
        f=$(find "$m" -regextype posix-extended -regex ".*/${name//_/[-_]}\.ko(\.xz|\.zst)?" | head -n1)
        [ -n "$f" ] || die "$KPKG has no module $name"
        case $f in
        *.xz) xz -dc "$f" > "$STOCK.tmp/$name.ko" ;;
        *.zst) zstd -qdc "$f" > "$STOCK.tmp/$name.ko" ;;
        *) cp "$f" "$STOCK.tmp/$name.ko" ;;
        esac
        for dep in $(strings -a "$STOCK.tmp/$name.ko" | sed -n 's/^depends=//p' | head -n1 | tr , ' '); do
            take_module "$dep"
        done
        order+=("$name")
    }
    take_module kvm_intel
    mv "$STOCK.tmp/kvm_intel.ko" "$STOCK.tmp/kvm-intel.ko"
    # kvm-amd's own dependencies (ccp, ...) in load order; kvm and irqbypass are loaded anyway
    order=(kvm irqbypass)
    take_module kvm_amd
    mv "$STOCK.tmp/kvm_amd.ko" "$STOCK.tmp/kvm-amd.ko"
    printf '%s\n' "${order[@]:2}" | grep -vx kvm_amd > "$STOCK.tmp/amd.order" || true
    order=()
    take_module zram
    printf '%s\n' "${order[@]}" > "$STOCK.tmp/swap.order"
    mv "$STOCK.tmp" "$STOCK"
    rm -rf "$tmp"; trap - EXIT
fi
MODDIR=${KVM_MODULES_DIR:-$STOCK}
[ -s "$MODDIR/kvm.ko" ] && [ -s "$MODDIR/$KVM_VENDOR_KO" ] || die "$MODDIR lacks kvm.ko / $KVM_VENDOR_KO"
IRQBYPASS=$MODDIR/irqbypass.ko; [ -s "$IRQBYPASS" ] || IRQBYPASS=$STOCK/irqbypass.ko
for ko in "$MODDIR/kvm.ko" "$MODDIR/$KVM_VENDOR_KO"; do
    vm=$(strings -a "$ko" | sed -n 's/^vermagic=\([^ ]*\).*/\1/p' | head -n1)
    [ "$vm" = "$KVER" ] || die "$ko: vermagic '$vm' does not match the L1 kernel $KVER"
done

# ---------------------------------------------------------------- L2's kernel as an ELF (cached)
# QEMU boots L2 from the uncompressed vmlinux (PVH entry, CONFIG_PVH): L2 then does not spend
# Bochs time decompressing its bzImage, nor do the tools in L1 when they read its BTF. The
# bzImage's payload (boot protocol: payload_offset at 0x248 and payload_length at 0x24c, from
# the protected-mode code after the setup sectors; the last 4 bytes are the uncompressed size)
# is the vmlinux, xz-compressed by Debian's 6.1 and zstd-compressed by its 6.12.
VMLINUX=$CACHE/$KPKG-vmlinux-$(md5sum < "$LABDIR/vmlinuz" | cut -c1-12)
if [ ! -s "$VMLINUX" ]; then
    u32() { od -An -tu4 -j "$1" -N4 "$LABDIR/vmlinuz" | tr -d ' '; }
    setup_sects=$(od -An -tu1 -j $((0x1f1)) -N1 "$LABDIR/vmlinuz" | tr -d ' ')
    [ "$setup_sects" != 0 ] || setup_sects=4
    payload_start=$(( (setup_sects + 1) * 512 + $(u32 $((0x248))) ))
    payload_len=$(u32 $((0x24c)))
    # a file, not a pipe into head: head's early exit would SIGPIPE tail
    tail -c +$((payload_start + 1)) "$LABDIR/vmlinuz" > "$VMLINUX.z"
    truncate -s $((payload_len - 4)) "$VMLINUX.z"
    case $(od -An -tx1 -N4 "$VMLINUX.z" | tr -d ' ') in
    fd377a58) xz -dc --single-stream "$VMLINUX.z" > "$VMLINUX.tmp" ;;
    28b52ffd) zstd -qdc "$VMLINUX.z" > "$VMLINUX.tmp" ;;
    *) die "$LABDIR/vmlinuz: payload neither xz nor zstd" ;;
    esac || die "$LABDIR/vmlinuz: its payload does not decompress"
    rm -f "$VMLINUX.z"
    [ "$(head -c 4 "$VMLINUX.tmp")" = $'\177ELF' ] || die "$LABDIR/vmlinuz: its payload is not an ELF"
    mv "$VMLINUX.tmp" "$VMLINUX"
fi

# ---------------------------------------------------------------- L2's kallsyms (cached per kernel build)
# L1 cannot fetch L2's kallsyms over the channel: it moves ~1 KB per wall second (every byte is a
# nested exit), and kallsyms is 3.9 MB. A kallsyms of the same kernel build from any boot serves
# the tools (they use symbols as offsets from _text), so boot the lab guest once on the host
# under TCG (~20 s) and keep its kallsyms. It goes to /l2/kallsyms in L1.
KALLSYMS=$CACHE/$KPKG-kallsyms-$(md5sum < "$LABDIR/vmlinuz" | cut -c1-12)
if [ ! -s "$KALLSYMS" ]; then
    say "booting the lab guest on the host once for its kallsyms"
    run=$CACHE/.kallsyms-run
    "$REPO/tests/lab/lab.sh" stop "$run" >/dev/null 2>&1 || true
    LAB_BUILD_DIR=$LABDIR "$REPO/tests/lab/lab.sh" start "$run" --levels 4 --mem 256M >&2 ||
        die "lab guest on the host did not come up (for its kallsyms)"
    cp "$run/kallsyms" "$KALLSYMS.tmp"
    "$REPO/tests/lab/lab.sh" stop "$run" >&2 || true
    rm -rf "$run"
    grep -q ' T _text$' "$KALLSYMS.tmp" || die "kallsyms of the host boot has no _text"
    mv "$KALLSYMS.tmp" "$KALLSYMS"
fi

# ---------------------------------------------------------------- static labctl (L1 talks to L2's channel)
stale() { local t=$1; shift; [ -e "$t" ] || return 0; local s; for s; do [ "$s" -nt "$t" ] && return 0; done; return 1; }
if stale "$OUT/labctl.static" "$REPO/tests/lab/host/labctl.c"; then
    gcc -O2 -Wall -std=gnu11 -static -o "$OUT/labctl.static.tmp" "$REPO/tests/lab/host/labctl.c"
    mv "$OUT/labctl.static.tmp" "$OUT/labctl.static"
fi

# ---------------------------------------------------------------- L1 initramfs
QEMU=/usr/bin/qemu-system-x86_64
inputs=("$0" "$HERE/l1/init" "$VMLINUX" "$LABDIR/initramfs.cpio.gz" "$OUT/labctl.static"
        "$MODDIR/kvm.ko" "$MODDIR/$KVM_VENDOR_KO" "$IRQBYPASS" "$STOCK/swap.order" "$QEMU" /bin/busybox "$KALLSYMS")
# shellcheck disable=SC2206  # space-separated lists by design
inputs+=($BINARIES $DATA_FILES)
while IFS= read -r -d '' f; do inputs+=("$f"); done < <(find "$TESTS_DIR" -type f -print0)
[ -f "$TESTS_DIR/run.sh" ] || die "$TESTS_DIR/run.sh missing"
# any change here forces a rebuild even when no input file is newer (e.g. a binary dropped)
conf="L2_MEM=$L2_MEM L2_TIMEOUT=$L2_TIMEOUT L2_COUNT=$L2_COUNT L2B_MODE=$L2B_MODE L2B_MEM=$L2B_MEM"
conf+=" MODDIR=$MODDIR TESTS=$TESTS_DIR KALLSYMS=$KALLSYMS BINARIES=$BINARIES DATA=$DATA_FILES"
conf+=" TEST_ENV=$TEST_ENV VENDOR=$VENDOR"

# copy_libs BIN STAGE: every shared library ldd names for BIN, at its host path under STAGE
# (the dynamic loader then finds them as on the host)
copy_libs() {
    local deps
    deps=$(ldd "$1" 2>&1) || return 0   # "not a dynamic executable": nothing to copy
    ! grep -q 'not found' <<<"$deps" || die "$1: missing libraries: $(grep 'not found' <<<"$deps" | tr -s '\t\n' '  ')"
    awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }' <<<"$deps" | sort -u | while read -r lib; do
        [ -e "$2$lib" ] && continue
        mkdir -p "$2$(dirname "$lib")"
        cp -L "$lib" "$2$lib"
    done
}
[ "$(cat "$OUT/.initramfs.conf" 2>/dev/null)" = "$conf" ] || rm -f "$OUT/l1-initramfs.cpio.zst"

if stale "$OUT/l1-initramfs.cpio.zst" "${inputs[@]}"; then
    say "building L1 initramfs"
    S=$OUT/stage
    rm -rf "$S"
    mkdir -p "$S"/{bin,sbin,usr/bin,usr/share/qemu,dev,proc,sys,tmp,run,etc,lib/modules/{kvm,swap},l2,tests}
    chmod 1777 "$S/tmp"
    cp /bin/busybox "$S/bin/busybox"
    for a in $(/bin/busybox --list); do
        [ "$a" = busybox ] || [ "$a" = init ] || ln -sf busybox "$S/bin/$a"
    done
    cp "$HERE/l1/init" "$S/init"; chmod 755 "$S/init"
    # kernel modules, in load order
    cp "$IRQBYPASS" "$S/lib/modules/kvm/01-irqbypass.ko"
    cp "$MODDIR/kvm.ko" "$S/lib/modules/kvm/02-kvm.ko"
    i=0
    if [ "$VENDOR" = amd ]; then
        while read -r mod; do
            i=$((i + 1))
            cp "$STOCK/$mod.ko" "$S/lib/modules/kvm/02-$i-$mod.ko"
        done < "$STOCK/amd.order"
    fi
    cp "$MODDIR/$KVM_VENDOR_KO" "$S/lib/modules/kvm/03-$KVM_VENDOR_KO"
    i=0
    while read -r mod; do
        i=$((i + 1))
        cp "$STOCK/$mod.ko" "$S/lib/modules/swap/$(printf %02d $i)-$mod.ko"
    done < "$STOCK/swap.order"
    # QEMU + its shared libraries at their host paths
    cp "$QEMU" "$S/usr/bin/"
    copy_libs "$QEMU" "$S"
    [ -e "$S/lib64/ld-linux-x86-64.so.2" ] || die "dynamic loader not copied"
    # the binaries under test (VTX_BINARIES) + their libraries, data files (VTX_DATA_FILES)
    mkdir -p "$S/opt/imee/bin" "$S/opt/imee/share"
    for f in $BINARIES; do
        [ ! -e "$S/opt/imee/bin/$(basename "$f")" ] || die "VTX_BINARIES: two files named $(basename "$f")"
        # without debug info: a RelWithDebInfo tool is 9 MB, 0.5 MB stripped, and every MB of
        # initramfs costs L1 boot time
        strip --strip-debug -o "$S/opt/imee/bin/$(basename "$f")" "$f" 2>/dev/null || cp -L "$f" "$S/opt/imee/bin/"
        copy_libs "$f" "$S"
    done
    for f in $DATA_FILES; do cp -L "$f" "$S/opt/imee/share/"; done
    # firmware: microvm's bios is qboot; -kernel adds the linuxboot_dma option ROM. QEMU finds
    # them in /usr/bin/../share/qemu as on the host.
    cp -L /usr/share/qemu/bios-microvm.bin /usr/share/qemu/linuxboot_dma.bin "$S/usr/share/qemu/"
    # L2 = the lab guest
    cp "$VMLINUX" "$S/l2/vmlinux"
    cp "$LABDIR/initramfs.cpio.gz" "$S/l2/initramfs.cpio.gz"
    cp "$KALLSYMS" "$S/l2/kallsyms"
    cp "$OUT/labctl.static" "$S/bin/labctl"
    cp -r "$TESTS_DIR"/. "$S/tests/"
    chmod -R a+rX "$S/tests"
    cat > "$S/etc/vtx-lab.conf" <<EOF
L2_MEM=$L2_MEM
L2_TIMEOUT=$L2_TIMEOUT
L2_COUNT=$L2_COUNT
L2B_MODE=$L2B_MODE
L2B_MEM=$L2B_MEM
KVER=$KVER
VENDOR=$VENDOR
MODULES_FROM='$MODDIR'
EOF
    for kv in $TEST_ENV; do
        [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*=[A-Za-z0-9_.,:/-]*$ ]] || die "VTX_TEST_ENV: not NAME=VALUE: $kv"
        echo "export $kv" >> "$S/etc/vtx-lab.conf"
    done
    echo "root:x:0:0:root:/:/bin/sh" > "$S/etc/passwd"
    (cd "$S" && find . -print0 | LC_ALL=C sort -z |
        cpio --null -o -H newc --quiet --reproducible) | zstd -q -10 -T0 -c > "$OUT/l1-initramfs.cpio.zst.tmp"
    mv "$OUT/l1-initramfs.cpio.zst.tmp" "$OUT/l1-initramfs.cpio.zst"
    echo "$conf" > "$OUT/.initramfs.conf"
fi

# ---------------------------------------------------------------- ISO
APPEND="console=ttyS0 ${VTX_L1_QUIET-quiet} $VENDOR_APPEND ${VTX_L1_APPEND:-}"
ISOCFG="SERIAL 0 115200
DEFAULT l1
PROMPT 0
TIMEOUT 0
LABEL l1
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND $APPEND"
[ "$(cat "$OUT/.isolinux.cfg" 2>/dev/null)" = "$ISOCFG" ] || rm -f "$OUT/vtx-lab.iso"
if stale "$OUT/vtx-lab.iso" "$OUT/l1-initramfs.cpio.zst" "$LABDIR/vmlinuz" "$0"; then
    say "building ISO"
    I=$OUT/isoroot
    rm -rf "$I"; mkdir -p "$I/isolinux"
    cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$I/isolinux/"
    printf '%s\n' "$ISOCFG" > "$I/isolinux/isolinux.cfg"
    ln "$LABDIR/vmlinuz" "$I/vmlinuz" 2>/dev/null || cp "$LABDIR/vmlinuz" "$I/vmlinuz"
    ln "$OUT/l1-initramfs.cpio.zst" "$I/initrd.img" 2>/dev/null || cp "$OUT/l1-initramfs.cpio.zst" "$I/initrd.img"
    xorriso -as mkisofs -quiet -o "$OUT/vtx-lab.iso.tmp" -R -J -V VTXLAB \
        -b isolinux/isolinux.bin -c isolinux/boot.cat -no-emul-boot -boot-load-size 4 -boot-info-table \
        "$I" >&2
    mv "$OUT/vtx-lab.iso.tmp" "$OUT/vtx-lab.iso"
    rm -rf "$I"
    printf '%s\n' "$ISOCFG" > "$OUT/.isolinux.cfg"
fi

# ---------------------------------------------------------------- Bochs config
cat > "$OUT/bochsrc.tmp" <<EOF
# generated by tests/vtx-lab/build-vtx-lab.sh
memory: guest=$L1_MEM, host=$L1_MEM
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest
cpu: model=$BOCHS_CPU, count=1, ips=200000000, reset_on_triple_fault=1, ignore_bad_msrs=1
clock: sync=none, time0=local
pci: enabled=1, chipset=i440fx
ata0: enabled=1, ioaddr1=0x1f0, ioaddr2=0x3f0, irq=14
ata0-master: type=cdrom, path="$OUT/vtx-lab.iso", status=inserted
boot: cdrom
com1: enabled=1, mode=file, dev="$OUT/com1.log"
display_library: term
mouse: enabled=0
speaker: enabled=0
log: $OUT/bochs.log
panic: action=fatal
error: action=report, cpu0=ignore
info: action=ignore
debug: action=ignore
EOF
mv "$OUT/bochsrc.tmp" "$OUT/bochsrc"
echo c > "$OUT/bochs-debugger.rc"

say "$OUT ready ($KPKG, modules from $MODDIR, L1 initramfs $(du -h "$OUT/l1-initramfs.cpio.zst" | cut -f1), ISO $(du -h "$OUT/vtx-lab.iso" | cut -f1))"
