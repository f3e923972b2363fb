#!/usr/bin/env python3
"""Checks libimee's include graph: no cycle, and no include from a lower layer up to a higher one.

Layers, bottom up (libimee/src/ follows them; a public header belongs to the layer of the
implementation that defines it):
  0 error          1 guest RAM and addresses   2 page walk, targets
  3 backends       4 Linux awareness
Prints the files, the include edges, and every cycle or upward include; exits 1 on any.
"""
import glob
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PUBLIC_LAYER = {
    "error.hpp": 0, "address_space.hpp": 1, "guest_ram.hpp": 1, "paging.hpp": 2, "target.hpp": 2,
    "backend.hpp": 3, "soft_backend.hpp": 3, "agent_backend.hpp": 3, "kvm_backend.hpp": 3,
    "kernel_backend.hpp": 3, "backends.hpp": 3, "kernel_types.hpp": 4, "symbols.hpp": 4,
    "linux_profile.hpp": 4, "linux_session.hpp": 4, "linux.hpp": 4, "kallsyms.hpp": 4, "isf.hpp": 4,
    "guest_profile.hpp": 4,
}
SRC_LAYER = {"guest": 2, "backend": 3, "linux": 4}


def layer(path):
    rel = os.path.relpath(path, os.path.join(ROOT, "libimee"))
    parts = rel.split(os.sep)
    if parts[0] == "include":
        if parts[-1] not in PUBLIC_LAYER:
            sys.exit(f"check-layers: {rel} has no layer: add it to PUBLIC_LAYER")
        return PUBLIC_LAYER[parts[-1]]
    return SRC_LAYER.get(parts[1], 0) if len(parts) > 2 else 0


files = sorted(glob.glob(os.path.join(ROOT, "libimee/include/imee/*")) +
               glob.glob(os.path.join(ROOT, "libimee/src/**/*.[ch]pp"), recursive=True))
by_name = {}
for f in files:
    by_name.setdefault(os.path.basename(f), []).append(f)
edges = {}
for f in files:
    for inc in re.findall(r'#include "([^"]+)"', open(f).read()):
        targets = [t for t in by_name.get(os.path.basename(inc), []) if t != f]
        if targets:
            edges.setdefault(f, []).append(targets[0])

rel = lambda p: os.path.relpath(p, ROOT)
upward = [(a, b) for a, outs in edges.items() for b in outs if layer(b) > layer(a)]
cycles, state = [], {}


def visit(node, stack):
    state[node] = 1
    stack.append(node)
    for nxt in edges.get(node, []):
        if state.get(nxt) == 1:
            cycles.append(stack[stack.index(nxt):] + [nxt])
        elif not state.get(nxt):
            visit(nxt, stack)
    stack.pop()
    state[node] = 2


for f in files:
    if not state.get(f):
        visit(f, [])
print(f"check-layers: {len(files)} files, {sum(map(len, edges.values()))} include edges, "
      f"{len(cycles)} cycles, {len(upward)} upward includes")
for a, b in upward:
    print(f"  upward: {rel(a)} (layer {layer(a)}) includes {rel(b)} (layer {layer(b)})")
for c in cycles:
    print("  cycle: " + " -> ".join(map(rel, c)))
sys.exit(1 if cycles or upward else 0)
