"""The Python module against the live lab guests, checked as the C++ live tests check libimee:
against each guest's own view of itself (its /proc, its kallsyms, its sys_call_table, fetched
over the lab channel), and 10,000 random reads against the C++ library's own answers."""
import json
import os
import random
import subprocess
import sys
import threading
import time

import pytest

import imee

MAX_READ = 256 << 20  # imee::kMaxReadLength


def is_kernel_thread(t):
    return t["pid"] == 2 or t["ppid"] == 2


def same_name(comm, t):
    """/proc shows a kernel thread's full name, task->comm its first 15 bytes."""
    if comm == t["name"]:
        return True
    if not is_kernel_thread(t) or not t["name"].startswith(comm):
        return False
    return len(comm) == 15 or t["name"][len(comm)] in "-+"


def stable(a, b):
    if a.keys() != b.keys():
        return False
    for pid, t in a.items():
        u = dict(b[pid])
        if is_kernel_thread(t):
            u["name"] = t["name"]
        if u != t:
            return False
    return True


def test_tasks_match_the_guests_own_view(guest):
    s = guest.open()
    for _ in range(4):
        before = guest.truth_tasks()
        tasks = s.tasks()
        after = guest.truth_tasks()
        if before and stable(before, after):
            break
    else:
        pytest.fail("the guest's task set did not hold still for four attempts")
    truth = before
    assert len(truth) >= 40, "the lab workload should be running"
    seen = set()
    distinct_ids = 0
    for t in tasks:
        if t.pid == 0:
            assert t.comm == "swapper/0"  # init_task: on the list, absent from /proc
            continue
        assert t.pid in truth, f"tasks() shows pid {t.pid} that the guest does not"
        g = truth[t.pid]
        seen.add(t.pid)
        for field in ["ppid", "uid", "euid", "suid", "fsuid", "gid", "egid", "sgid", "fsgid",
                      "cap_inheritable", "cap_permitted", "cap_effective", "cap_bset",
                      "cap_ambient"]:
            assert getattr(t, field) == g[field], f"pid {t.pid} {field}"
        assert same_name(t.comm, g), f"pid {t.pid}: {t.comm!r} vs {g['name']!r}"
        assert t.tgid == t.pid  # the list holds thread-group leaders
        distinct_ids += g["uid"] != g["euid"] or g["gid"] != g["egid"] or g["uid"] != g["suid"]
    assert seen == set(truth), f"missing: {set(truth) - seen}"
    assert distinct_ids > 0, "the workload has tasks whose real and effective ids differ"


def test_kernel_banner_and_symbols(guest):
    s = guest.open()
    kallsyms = {}
    with open(guest.kallsyms) as f:
        for line in f:
            addr, _, name = line.split()[:3]
            kallsyms.setdefault(name, int(addr, 16))
    assert s.text_va == kallsyms["_text"]
    assert s.symbol("init_task") == kallsyms["init_task"]
    assert s.kernel_space.levels == guest.levels
    assert s.text_gpa % (2 << 20) == 0
    assert s.translate(s.text_va).gpa == s.text_gpa
    # The banner read through the guest's page tables is the one in the kernel image.
    assert s.cstring(s.symbol("linux_banner"), 256) == guest.profile().banner + "\n"
    assert s.backend == "soft"


def test_typed_and_physical_reads_agree(guest):
    s = guest.open()
    va = s.symbol("init_task")
    raw = s.read(va, 8)
    assert len(raw) == 8
    assert s.u64(va) == int.from_bytes(raw, "little")
    assert s.u32(va) == int.from_bytes(raw[:4], "little")
    assert s.u16(va + 2) == int.from_bytes(raw[2:4], "little")
    assert s.u8(va + 7) == raw[7]
    # The direct map shows physical memory: page_offset_base + x reads what GPA x holds.
    assert s.read(s.page_offset_base + 0x100000, 4096) == s.read_physical(0x100000, 4096)
    t = s.translate(va)
    assert s.read_physical(t.gpa, 8) == raw
    assert sum(size for _, size in s.ram_regions()) == os.path.getsize(guest.ram)


def test_process_address_spaces(guest):
    s = guest.open()
    init_task = s.symbol("init_task")
    expected = s.read(init_task, 64)
    translated = 0
    for t in s.tasks():
        if t.mm == 0:
            with pytest.raises(ValueError, match="kernel thread"):
                s.task_space(t)
            continue
        space = s.task_space(t)
        assert space.levels == guest.levels
        assert space != s.kernel_space
        # Every process maps the kernel half too.
        assert s.read(init_task, 64, space=space) == expected
        translated += 1
    assert translated >= 40


def test_syscall_table_matches_the_guests(guest):
    s = guest.open()
    words = guest.lab("query", "syscalls").split()
    assert words[0] == "count"
    count = int(words[1])
    table = [int(words[3 + 2 * i], 16) for i in range(count)]
    assert [int(words[2 + 2 * i]) for i in range(count)] == list(range(count))
    while table and table[-1] == 0:
        table.pop()
    assert len(table) >= 400
    assert s.syscall_table() == table
    with open(guest.kallsyms) as f:
        has_x64_sys_call = any(line.split()[2] == "x64_sys_call" for line in f)
    d = s.syscall_dispatch(guest.kallsyms)
    assert d["through_table"] == (not has_x64_sys_call)
    assert d["confirmed"]
    assert d["via"] == ("x64_sys_call() switch" if has_x64_sys_call else "sys_call_table")


def test_wild_reads_raise_typed_errors(guest):
    s = guest.open()
    noncanonical = 0x0100000000000000 if guest.levels == 5 else 0x0000800000000000
    with pytest.raises(imee.ReadError) as e:
        s.u64(noncanonical)
    assert e.value.fault == imee.Fault.NON_CANONICAL
    assert e.value.va == noncanonical
    with pytest.raises(imee.ReadError) as e:
        s.read(0x1000, 8)  # the kernel's page tables map nothing there
    assert e.value.fault == imee.Fault.NOT_PRESENT
    assert e.value.va == 0x1000
    assert 1 <= e.value.level <= guest.levels
    assert isinstance(e.value, imee.Error) and isinstance(e.value, RuntimeError)
    assert "0x1000" in str(e.value)
    with pytest.raises(imee.ReadError) as e:
        s.read(0xFFFFFFFFFFFFFFFF - 4, 16)
    assert e.value.fault == imee.Fault.BAD_LENGTH
    with pytest.raises(imee.ReadError) as e:
        s.read(s.symbol("init_task"), MAX_READ + 1)
    assert e.value.fault == imee.Fault.BAD_LENGTH
    with pytest.raises(imee.ReadError) as e:
        s.read_physical(sum(size for _, size in s.ram_regions()) + (4 << 30), 8)
    assert e.value.fault == imee.Fault.BEYOND_RAM
    # read_batch reports, does not raise: the same fields in the failed slots.
    out = s.read_batch([(s.symbol("init_task"), 8), (0x1000, 8), (noncanonical, 4)])
    assert out[0] == s.read(s.symbol("init_task"), 8)
    assert isinstance(out[1], imee.ReadError) and out[1].fault == imee.Fault.NOT_PRESENT
    assert out[1].va == 0x1000
    assert isinstance(out[2], imee.ReadError) and out[2].fault == imee.Fault.NON_CANONICAL


def test_bad_input_raises_the_right_exception(guest, tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        imee.open()
    with pytest.raises(ValueError, match="exactly one"):
        imee.open(pid=guest.qemu_pid, ram=guest.ram)
    with pytest.raises(imee.Error):
        imee.open(ram=str(tmp_path / "no-such-ram"))
    with pytest.raises(imee.Error, match="unknown backend"):
        imee.open(**guest.target(), profile=guest.profile(), backend="bogus")
    with pytest.raises(ValueError, match="needs a profile"):
        imee.open(**guest.target(), backend="kvm")
    with pytest.raises(imee.Error, match="not found"):
        imee.open(**guest.target(), profile=str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="both kernel= and symbols="):
        imee.open(**guest.target(), kernel=os.environ["IMEE_LAB_KERNEL"])
    # A profile of another kernel build: refused, not misread.
    wrong = json.load(open(guest.profile_path))
    wrong["banner"] = "Linux version 5.10.0-99-amd64 (nobody@example) #1 SMP"
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    with pytest.raises(imee.Error, match="not found in guest RAM"):
        imee.open(**guest.target(), profile=str(tmp_path / "wrong.json"))
    with pytest.raises(ValueError):
        imee.AddressSpace(0x1000, levels=3)
    with pytest.raises(TypeError):
        guest.open().read("init_task", 8)
    with pytest.raises(ValueError, match="each request"):
        guest.open().read_batch([(1, 2, 3, 4)])
    with pytest.raises(ValueError, match="each request"):
        guest.open().read_batch([[1, 2]])
    with pytest.raises(TypeError):
        guest.open().read_batch(5)
    with pytest.raises(OverflowError):
        guest.open().read_batch([(-1, 8)])


def test_target_without_a_profile(guest):
    s = guest.open()
    t = imee.open(**guest.target())
    assert isinstance(t, imee.Target) and not isinstance(t, imee.Session)
    with pytest.raises(ValueError, match="no address space"):
        t.read(s.symbol("init_task"), 8)
    va = s.symbol("init_task")
    assert t.read(va, 64, space=s.kernel_space) == s.read(va, 64)
    assert t.translate(va, space=s.kernel_space).gpa == s.translate(va).gpa
    assert t.read_physical(0x100000, 256) == s.read_physical(0x100000, 256)


def test_profile_built_from_kernel_and_symbols(guest, tmp_path):
    path = tmp_path / "built.json"
    s = imee.open(**guest.target(), profile=str(path), kernel=os.environ["IMEE_LAB_KERNEL"],
                  symbols=guest.kallsyms, backend="soft")
    assert path.exists()  # written where the tools would cache it
    assert s.symbol("init_task") == guest.open().symbol("init_task")


def random_requests(s, count, seed):
    """Reads a tool would make and reads no one should: kernel text and data, the direct map
    (all of RAM and beyond it), page-crossing ranges, random kernel-half, user-half and
    non-canonical addresses; lengths 0..256."""
    rng = random.Random(seed)
    ram = sum(size for _, size in s.ram_regions())
    out = []
    for _ in range(count):
        kind = rng.randrange(6)
        if kind == 0:
            va = s.text_va + rng.randrange(32 << 20)
        elif kind == 1:
            va = s.page_offset_base + rng.randrange(ram + (64 << 20))
        elif kind == 2:
            va = (s.page_offset_base + rng.randrange(ram)) | 0xFFF
            va -= rng.randrange(8)
        elif kind == 3:
            va = rng.randrange(1 << 64) | 0xFFFF800000000000
        elif kind == 4:
            va = rng.randrange(1 << 47)
        else:
            va = rng.randrange(1 << 64)
        out.append((va, rng.choice([0, 1, 2, 4, 8, 16, 64, 256, rng.randrange(257)])))
    return out


def test_10000_random_reads_equal_the_cpp_library(guest):
    s = guest.open()
    requests = random_requests(s, 10000, seed=guest.levels)
    with guest.paused():
        batch = s.read_batch(requests)
        single = []
        for va, n in requests[:2000]:
            try:
                single.append(s.read(va, n))
            except imee.ReadError as e:
                single.append(e)
        helper = subprocess.run(
            [os.environ["IMEE_READ_HELPER"], *guest.target_args(), guest.profile_path],
            input="".join(f"{va:x} {n}\n" for va, n in requests), capture_output=True,
            text=True, timeout=300)
    assert helper.returncode == 0, helper.stderr
    lines = helper.stdout.splitlines()
    assert len(lines) == len(requests)
    ok = failed = 0
    for i, (line, got) in enumerate(zip(lines, batch)):
        words = line.split()
        if words[0] == "ok":
            assert got == bytes.fromhex(words[1] if len(words) > 1 else ""), f"request {i}"
            ok += 1
        else:
            assert isinstance(got, imee.ReadError), f"request {i}: C++ says {line}"
            assert (int(got.fault), got.va, got.gpa, got.level) == (
                int(words[1]), int(words[2], 16), int(words[3], 16), int(words[4])), f"request {i}"
            failed += 1
        if i < len(single):
            if isinstance(got, bytes):
                assert single[i] == got, f"request {i}: read() vs read_batch()"
            else:
                assert isinstance(single[i], imee.ReadError)
                assert (single[i].fault, single[i].va, single[i].gpa, single[i].level) == (
                    got.fault, got.va, got.gpa, got.level)
    # Both outcomes well represented, or the comparison proves little.
    assert ok > 3000 and failed > 2000, (ok, failed)


def test_reads_release_the_gil(guest):
    s = guest.open()
    size = 128 << 20
    stamps, window = [], []

    def big_read():
        t0 = time.perf_counter()
        data = s.read_physical(0, size)
        window.extend([t0, time.perf_counter(), len(data)])

    sys.setswitchinterval(0.0005)
    worker = threading.Thread(target=big_read)
    worker.start()
    while worker.is_alive():
        stamps.append(time.perf_counter())
    worker.join()
    t0, t1, n = window
    assert n == size
    during = [t for t in stamps if t0 < t < t1]
    # Held GIL: the main thread could run at most once before the read began.
    assert len(during) > 100, f"{len(during)} main-thread steps during a {t1 - t0:.3f} s read"


def test_kvm_backend_reads_the_same_bytes(guest):
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("this machine has no usable /dev/kvm: the kvm backend cannot run")
    soft = guest.open("soft")
    kvm = guest.open("kvm")
    assert kvm.backend == "kvm"
    requests = random_requests(soft, 200, seed=7)
    with guest.paused():
        a = soft.read_batch(requests)
        b = kvm.read_batch(requests)
    for i, (x, y) in enumerate(zip(a, b)):
        if isinstance(x, bytes):
            assert x == y, f"request {i}"
        else:
            assert isinstance(y, imee.ReadError), f"request {i}"
            assert (x.fault, x.va) == (y.fault, y.va), f"request {i}"
    if guest.levels == 4:  # 5-level spaces go to the software walk on a KVM without LA57
        assert kvm.stats()["imee_reads"] > 0, kvm.stats()["who_answered"]
