#!/usr/bin/env python3
"""py-bench.py: what the Python module costs per read, next to libimee's C++ on the same backend
and the same addresses, in one run (absolute figures move between runs on a shared machine; the
ratios within one run are what to read).

    PYTHONPATH=build/python scripts/py-bench.py (--pid PID | --ram FILE) --profile FILE
        [--backend soft] [--reads 10000] [--runs 5]

Reads: 8 bytes at each task_struct of the guest's task list, repeated up to --reads. Best of --runs
(the least disturbed run: this measures a fixed overhead, and the machines are shared). C++ read / read_batch: the same reads in a C++ loop inside the module (no Python).
"""
import argparse
import time

import imee


def per_read(fn, count, runs):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) / count)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pid", type=int)
    ap.add_argument("--ram")
    ap.add_argument("--profile", required=True)
    ap.add_argument("--backend", default="soft")
    ap.add_argument("--reads", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    s = imee.open(pid=a.pid, ram=a.ram, profile=a.profile, backend=a.backend)
    tasks = [t.address for t in s.tasks()]
    vas = (tasks * (a.reads // len(tasks) + 1))[: a.reads]
    batch = [(va, 8) for va in vas]
    n = len(vas)

    def py_read():
        for va in vas:
            s.read(va, 8)

    def py_u64():
        for va in vas:
            s.u64(va)

    cpp_read = min(s._bench_cpp_reads(vas, 8) for _ in range(a.runs))
    cpp_batch = min(s._bench_cpp_batch(vas, 8) for _ in range(a.runs))
    r_read = per_read(py_read, n, a.runs)
    r_u64 = per_read(py_u64, n, a.runs)
    r_batch = per_read(lambda: s.read_batch(batch), n, a.runs)
    print(f"py-bench: backend {s.backend}, {len(tasks)} tasks, {n} 8-byte reads, best of "
          f"{a.runs}: C++ read {cpp_read:.0f} ns, Python read() {r_read:.0f} ns "
          f"(+{r_read - cpp_read:.0f}), u64() {r_u64:.0f} ns (+{r_u64 - cpp_read:.0f}); "
          f"C++ read_batch {cpp_batch:.0f} ns/read, Python read_batch {r_batch:.0f} ns/read "
          f"(+{r_batch - cpp_batch:.0f})")


if __name__ == "__main__":
    main()
