#!/usr/bin/env bash
# dkms-check.sh -- CI check: the DKMS package (dkms.conf) builds for both
# kernel series of Debian 12.  As root on Debian 12: installs dkms and the
# headers and sources of the 6.1 and 6.12 releases scripts/debian-kernels.sh
# names, then runs `dkms build -k <release>` for each in a private DKMS tree (a
# temporary --sourcetree/--dkmstree: nothing is installed into
# /lib/modules, nothing is left in /var/lib/dkms but DKMS's signing key,
# which Debian's dkms creates on its first build).
# Prints one line: dkms-check.sh: PASS|FAIL (<release>: vermagic ..., Ns; ...)
# and exits 0 only if both built.
#
#   IMEE_DKMS_KERNELS  releases to build instead (space-separated)
#   KEEP=1             keep the temporary tree (printed)
set -uo pipefail

start=$(date +%s)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
NAME=imee-kvm
VERSION=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"$/\1/p' "$REPO/dkms.conf")

finish() {  # finish PASS|FAIL DETAILS
    echo "dkms-check.sh: $1 ($2; total $(($(date +%s) - start))s wall)"
    [ "$1" = PASS ]
    exit $?
}
log() { echo "dkms-check.sh: $*" >&2; }

[ "$(id -u)" = 0 ] || finish FAIL "run as root"
command -v apt-get >/dev/null || finish FAIL "no apt-get: Debian 12 only"
aptq() {
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 "$@" >&2
}

log "apt-get update"
aptq update -q || finish FAIL "apt-get update failed"

if [ -n "${IMEE_DKMS_KERNELS:-}" ]; then
    read -r -a kernels <<< "$IMEE_DKMS_KERNELS"
else
    mapfile -t kernels < <("$REPO/scripts/debian-kernels.sh")
    [ ${#kernels[@]} -eq 2 ] || finish FAIL "no kernel releases (scripts/debian-kernels.sh)"
fi
log "kernels: ${kernels[*]}"

if ! command -v dkms >/dev/null; then
    aptq install -y --no-install-recommends dkms || finish FAIL "apt-get install dkms failed"
fi
for k in "${kernels[@]}"; do
    "$REPO/scripts/build-kvm-modules.sh" --deps -k "$k" ||
        finish FAIL "$k: cannot install headers/source (build-kvm-modules.sh --deps)"
done

# The tree dkms-install.sh puts in /usr/src, in a private DKMS tree.
tmp=$(mktemp -d /tmp/dkms-check.XXXXXX)
[ "${KEEP:-0}" = 1 ] && log "keeping $tmp" || trap 'rm -rf "$tmp"' EXIT
src=$tmp/src/$NAME-$VERSION
mkdir -p "$src/scripts" "$tmp/dkms"
cp "$REPO/dkms.conf" "$REPO/Kbuild" "$src/"
cp -r "$REPO/kernel" "$src/kernel"
cp "$REPO/scripts/build-kvm-modules.sh" "$src/scripts/"
trees=(--sourcetree "$tmp/src" --dkmstree "$tmp/dkms")
dkms add "$NAME/$VERSION" "${trees[@]}" >&2 || finish FAIL "dkms add failed"

status=PASS
details=()
for k in "${kernels[@]}"; do
    t0=$(date +%s)
    if dkms build "$NAME/$VERSION" -k "$k" "${trees[@]}" >&2; then
        t=$(($(date +%s) - t0))
        # every module DKMS built (kvm, kvm-intel, kvm-amd): this kernel's vermagic, our version
        bad=
        for m in kvm kvm-intel kvm-amd; do
            mod=$(ls "$tmp/dkms/$NAME/$VERSION/$k"/*/module/$m.ko* 2>/dev/null | head -n1)
            vm=$(modinfo -F vermagic "$mod" 2>/dev/null | sed 's/ *$//')
            ver=$(modinfo -F version "$mod" 2>/dev/null)
            case "$vm" in "$k "*) ;; *) bad+=" $m.ko: vermagic '$vm'" ;; esac
            [[ $ver == imee-* ]] || bad+=" $m.ko: version '$ver'"
        done
        if [[ -z $bad ]]; then
            details+=("$k: kvm, kvm-intel, kvm-amd with vermagic '$k ...', version $ver, ${t}s")
        else
            status=FAIL; details+=("$k:$bad, ${t}s")
        fi
    else
        t=$(($(date +%s) - t0))
        status=FAIL
        details+=("$k: dkms build failed after ${t}s")
        tail -n 30 "$tmp/dkms/$NAME/$VERSION/build/make.log" >&2 2>/dev/null
    fi
done
detail=$(printf '%s; ' "${details[@]}")
finish "$status" "${detail%; }"
