#!/usr/bin/env python3
"""compare.py OUTPUT PSLIST_JSON PROFILE: OUTPUT (a program's "banner" line, then "pid ppid comm"
per task) must hold the guest's banner as the kernel image has it (the profile's) and exactly the
task list pslist --json printed for the same (paused) guest: the same tasks with the same fields, in
pid order (pslist's order comes from its two views, the program's from the task list's links)."""
import difflib
import json
import sys

out_path, pslist_path, profile_path = sys.argv[1:4]
out = open(out_path).read().split("\n")
pslist = json.load(open(pslist_path))["tasks"]
banner = json.load(open(profile_path))["banner"]
ok = True
if out[0] != banner:
    print(f"banner: {out[0]!r}\n  expected (from the kernel image) {banner!r}")
    ok = False
by_pid = lambda line: int(line.split(" ", 1)[0])
mine = sorted((line for line in out[1:] if line), key=by_pid)
theirs = sorted((f"{t['pid']} {t['ppid']} {t['comm']}" for t in pslist), key=by_pid)
if mine != theirs:
    print(f"task lists differ ({pslist_path} vs {out_path}):")
    print("\n".join(difflib.unified_diff(theirs, mine, "pslist", out_path, lineterm="")))
    ok = False
if len(mine) < 40:
    print(f"only {len(mine)} tasks: the lab workload should be running")
    ok = False
print(f"{out_path}: banner and {len(mine)} tasks {'same as pslist' if ok else 'MISMATCH'}")
sys.exit(0 if ok else 1)
