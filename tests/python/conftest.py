"""The lab guests for the Python module's tests, as tests/live/lab_guest.hpp has them for C++.

ctest sets the environment (tests/CMakeLists.txt): PYTHONPATH (the built module), IMEE_LAB_ROOT,
IMEE_LAB_SCRIPT, IMEE_LAB_KERNEL, IMEE_READ_HELPER; IMEE_LAB_LEVELS picks the guests ("4,5").
"""
import contextlib
import os
import subprocess

import pytest

import imee


def env(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set (run these tests through ctest)")
    return value


class Guest:
    def __init__(self, levels):
        self.levels = levels
        self.dir = os.path.join(env("IMEE_LAB_ROOT"), f"l{levels}")
        self.ram = os.path.join(self.dir, "ram.img")
        self.kallsyms = os.path.join(self.dir, "kallsyms")
        self.profile_path = os.path.join(self.dir, "profile.json")
        with open(os.path.join(self.dir, "qemu.pid")) as f:
            self.qemu_pid = int(f.read().strip())

    def profile(self):
        """The tools' cached profile of this guest, built and saved there if missing."""
        if not os.path.exists(self.profile_path):
            imee.Profile.build(env("IMEE_LAB_KERNEL"), self.kallsyms).save(self.profile_path)
        return imee.Profile.load(self.profile_path)

    def target(self):
        """How the C++ live tests name it: the 5-level guest by QEMU pid, the 4-level by file."""
        return {"pid": self.qemu_pid} if self.levels == 5 else {"ram": self.ram}

    def target_args(self):
        return ["--pid", str(self.qemu_pid)] if self.levels == 5 else ["--ram", self.ram]

    def open(self, backend="soft"):
        return imee.open(**self.target(), profile=self.profile(), backend=backend)

    def lab(self, *args):
        r = subprocess.run([env("IMEE_LAB_SCRIPT"), *args, self.dir] if args[0] != "query"
                           else [env("IMEE_LAB_SCRIPT"), "query", self.dir, args[1]],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            pytest.fail(f"lab.sh {' '.join(args)} failed: {r.stderr}")
        return r.stdout

    def truth_tasks(self):
        """The guest's own /proc view, over its channel: pid -> dict, as LabGuest::tasks()."""
        out = {}
        for line in self.lab("query", "tasks").splitlines():
            if not line.strip():
                continue
            f = line.split(None, 15)
            t = dict(zip(["pid", "ppid", "uid", "euid", "suid", "fsuid", "gid", "egid", "sgid",
                          "fsgid"], map(int, f[:10])))
            for name, value in zip(["cap_inheritable", "cap_permitted", "cap_effective",
                                    "cap_bset", "cap_ambient"], f[10:15]):
                t[name] = int(value, 16)
            t["name"] = f[15] if len(f) > 15 else ""
            out[t["pid"]] = t
        return out

    @contextlib.contextmanager
    def paused(self):
        """The guest stopped (QMP stop), so that two readers see the same memory."""
        self.lab("pause")
        try:
            yield
        finally:
            self.lab("resume")


def levels():
    return [int(x) for x in os.environ.get("IMEE_LAB_LEVELS", "4,5").split(",")]


@pytest.fixture(params=levels(), ids=lambda l: f"{l}level")
def guest(request):
    return Guest(request.param)
