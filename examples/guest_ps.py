#!/usr/bin/env python3
"""Prints a Linux guest's banner and process list (pid, ppid, comm) through the Python module.

    guest_ps.py (--pid QEMU_PID | --ram FILE) PROFILE.json [BACKEND]
"""
import sys

import imee


def main(argv):
    if len(argv) < 4 or argv[1] not in ("--pid", "--ram"):
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    target = {"pid": int(argv[2])} if argv[1] == "--pid" else {"ram": argv[2]}
    try:
        # Maps the target's RAM, finds the kernel (KASLR, paging mode), builds the backend.
        s = imee.open(**target, profile=argv[3], backend=argv[4] if len(argv) > 4 else "soft")
        # Every read walks the guest's page tables as they are now; a fault raises imee.ReadError.
        sys.stdout.write(s.cstring(s.symbol("linux_banner"), 256))
        for t in s.tasks():
            print(t.pid, t.ppid, t.comm)
    except imee.Error as e:
        print(f"guest_ps.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
