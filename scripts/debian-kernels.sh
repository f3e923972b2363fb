#!/usr/bin/env bash
# debian-kernels.sh -- the kernel releases this project builds and tests for, one per line:
#   6.1:  what linux-image-amd64 depends on (e.g. 6.1.0-56-amd64)
#   6.12: the newest linux-headers-6.12.*+deb12-amd64 whose package version linux-source-6.12
#         also has (e.g. 6.12.117+deb12-amd64): our patches apply to that source
# From apt's metadata (run apt-get update first); exits 1 with a message if one is missing.
# Users: scripts/dkms-check.sh (DKMS builds), scripts/test.sh (one VT-x lab per kernel).
set -euo pipefail

k61=$(apt-cache depends linux-image-amd64 2>/dev/null |
      awk '$1 == "Depends:" && $2 ~ /^linux-image-6\.1\./ { sub(/^linux-image-/, "", $2); print $2; exit }')
[ -n "$k61" ] || { echo "debian-kernels.sh: linux-image-amd64 depends on no 6.1 kernel" >&2; exit 1; }
srcvers=$(apt-cache madison linux-source-6.12 2>/dev/null | awk -F' *[|] *' '{ print $2 }')
k612=
for h in $(apt-cache pkgnames linux-headers-6.12. 2>/dev/null |
           grep -E '^linux-headers-6\.12\.[0-9]+\+deb12-amd64$' | sort -rV); do
    hv=$(apt-cache madison "$h" 2>/dev/null | awk -F' *[|] *' 'NR == 1 { print $2 }')
    if [ -n "$hv" ] && grep -qxF -- "$hv" <<< "$srcvers"; then
        k612=${h#linux-headers-}
        break
    fi
done
[ -n "$k612" ] ||
    { echo "debian-kernels.sh: no linux-headers-6.12.*+deb12-amd64 with a matching linux-source-6.12" >&2; exit 1; }
echo "$k61"
echo "$k612"
