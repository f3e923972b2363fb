// Access to the running lab guests (tests/lab/lab.sh) and their own view of themselves.
#pragma once

#include <gtest/gtest.h>

#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "../support/process.hpp"
#include "imee/kernel_backend.hpp"
#include "imee/kvm_backend.hpp"
#include "imee/linux_profile.hpp"
#include "imee/linux_session.hpp"

namespace imee::test {

// What the guest says about one task (/proc/PID/status, read inside the guest).
struct TruthTask {
  int pid = 0, ppid = 0;
  std::uint32_t uid = 0, euid = 0, suid = 0, fsuid = 0, gid = 0, egid = 0, sgid = 0, fsgid = 0;
  std::uint64_t cap_inh = 0, cap_prm = 0, cap_eff = 0, cap_bnd = 0, cap_amb = 0;
  std::string name;
  friend bool operator==(const TruthTask&, const TruthTask&) = default;
};

// One lab guest: where it runs, how it pages, which kernel it booted.
struct LabGuest {
  std::string dir;     // lab.sh run directory
  int levels = 0;      // paging levels the guest was booted with
  std::string kernel;  // the kernel image (vmlinuz) it booted: BTF and banner for its profile

  static std::string root() { return env_or("IMEE_LAB_ROOT", IMEE_LAB_ROOT); }
  static std::string script() { return env_or("IMEE_LAB_SCRIPT", IMEE_LAB_SCRIPT); }
  static std::string tools() { return env_or("IMEE_TOOLS_DIR", IMEE_TOOLS_DIR); }

  // Backend the tools run with (IMEE_TOOL_BACKEND; the VT-x lab sets "kernel").
  static std::string backend() { return env_or("IMEE_TOOL_BACKEND", "soft"); }

  // The guests to test, in order; the first is the one tests that need only one guest use.
  //  - IMEE_LAB_GUESTS: "DIR:LEVELS[:KERNEL],...", DIR under root(), KERNEL defaulting to
  //    IMEE_LAB_KERNEL's; by default the ctest fixture's three guests (tests/CMakeLists.txt):
  //    Debian 12's 6.1 with 4- and 5-level paging, its 6.12 with 4-level paging.
  //  - IMEE_LAB_LEVELS ("4" in the VT-x lab, whose one L2 runs at /run/lab/l4) when
  //    IMEE_LAB_GUESTS is not set: guests root()/lN, N levels, all of them IMEE_LAB_KERNEL.
  static std::vector<LabGuest> all() {
    const std::string default_kernel = env_or("IMEE_LAB_KERNEL", IMEE_LAB_KERNEL);
    std::string spec = env_or("IMEE_LAB_GUESTS", "");
    if (spec.empty()) {
      const std::string levels = env_or("IMEE_LAB_LEVELS", "");
      if (levels.empty()) {
        spec = IMEE_LAB_GUESTS;
      } else {
        std::istringstream in(levels);
        for (std::string level; std::getline(in, level, ',');)
          spec += (spec.empty() ? "l" : ",l") + level + ":" + level;
      }
    }
    std::vector<LabGuest> out;
    std::istringstream in(spec);
    for (std::string entry; std::getline(in, entry, ',');) {
      std::istringstream fields(entry);
      std::string dir, levels, kernel;
      std::getline(fields, dir, ':');
      std::getline(fields, levels, ':');
      std::getline(fields, kernel);
      if (dir.empty() || (levels != "4" && levels != "5"))
        throw std::invalid_argument("bad lab guest '" + entry + "' (DIR:LEVELS[:KERNEL])");
      out.push_back(
          {root() + "/" + dir, std::stoi(levels), kernel.empty() ? default_kernel : kernel});
    }
    if (out.empty()) throw std::invalid_argument("no lab guests in '" + spec + "'");
    return out;
  }
  static LabGuest first() { return all().front(); }

  // The name of a parameterised test's instance: "4level" and "5level" for the guests in run
  // directories l4 and l5 (the VT-x lab's filters name them so), "<N>level_<dir>" for others.
  std::string test_name() const {
    const std::string base = std::filesystem::path(dir).filename().string();
    std::string name = std::to_string(levels) + "level";
    if (base == "l" + std::to_string(levels)) return name;
    name += '_';
    for (char c : base) name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
    return name;
  }
  friend void PrintTo(const LabGuest& g, std::ostream* os) {
    *os << g.dir << " (" << g.levels << "-level, " << g.kernel << ")";
  }

  // The ImEE backend under test: "kernel" in the VT-x lab, "kvm" elsewhere.
  static std::string imee_backend() { return backend() == "kernel" ? "kernel" : "kvm"; }

  std::string qemu_pid() const {
    std::ifstream in(dir + "/qemu.pid");
    std::string pid;
    in >> pid;
    return pid;
  }
  std::string ram() const { return dir + "/ram.img"; }
  std::string kallsyms() const { return dir + "/kallsyms"; }
  std::string profile() const { return dir + "/profile.json"; }
  // The guest's profile from the tools' cache (profile()), built and saved there if missing:
  // building parses the kernel's BTF, a second on the host but minutes in the VT-x lab's L1.
  LinuxProfile linux_profile() const {
    if (std::filesystem::exists(profile())) return LinuxProfile::load(profile());
    LinuxProfile p = LinuxProfile::build(kernel, kallsyms());
    p.save(profile());
    return p;
  }

  // The session a live test starts from: the guest's RAM file, read by the software walk.
  std::unique_ptr<LinuxSession> open_session() const {
    return LinuxSession::open({.ram_path = ram()}, linux_profile(), "soft");
  }
  KernelVm kernel_vm() const { return {.qemu_pid = std::stoi(qemu_pid())}; }
  // The ImEE backend under test (imee_backend()) on this guest, its agent at `home` (default:
  // the kernel's syscall entry). The caller checks first that it can run (IMEE_NEED_BACKEND).
  std::unique_ptr<AgentBackend> open_imee(const LinuxSession& s,
                                          std::optional<AgentHome> home = std::nullopt) const {
    const GuestRam& ram = s.target()->ram();
    if (imee_backend() == "kernel")
      return std::make_unique<KernelBackend>(ram, home.value_or(s.agent_home()), kernel_vm());
    return std::make_unique<KvmBackend>(ram, home.value_or(s.agent_home()));
  }

  // Target and profile options for a tool. The 5-level guest is named by QEMU pid, the 4-level
  // one by its RAM file, so both ways of naming a target are exercised; the kernel backend needs
  // the pid (it opens QEMU's VM fd).
  std::string target_args() const {
    const bool by_pid = levels == 5 || backend() == "kernel";
    const std::string target = by_pid ? "--pid " + qemu_pid() : "--ram " + ram();
    return target + " --profile " + profile() + " --kernel " + kernel + " --symbols " + kallsyms() +
           " --backend " + backend();
  }

  RunResult tool(const std::string& name, const std::string& extra = "--json") const {
    return run(tools() + "/" + name + " " + target_args() + " " + extra);
  }

  std::string query(const std::string& command) const {
    RunResult r = run(script() + " query " + dir + " '" + command + "'");
    if (r.status != 0) ADD_FAILURE() << "lab query '" << command << "' failed: " << r.err;
    return r.out;
  }

  std::map<int, TruthTask> tasks() const {
    std::map<int, TruthTask> out;
    std::istringstream in(query("tasks"));
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      std::istringstream f(line);
      TruthTask t;
      std::string caps[5];
      f >> t.pid >> t.ppid >> t.uid >> t.euid >> t.suid >> t.fsuid >> t.gid >> t.egid >> t.sgid >>
          t.fsgid >> caps[0] >> caps[1] >> caps[2] >> caps[3] >> caps[4];
      std::getline(f >> std::ws, t.name);
      if (!f && !f.eof()) {
        ADD_FAILURE() << "bad truth line: " << line;
        continue;
      }
      t.cap_inh = std::stoull(caps[0], nullptr, 16);
      t.cap_prm = std::stoull(caps[1], nullptr, 16);
      t.cap_eff = std::stoull(caps[2], nullptr, 16);
      t.cap_bnd = std::stoull(caps[3], nullptr, 16);
      t.cap_amb = std::stoull(caps[4], nullptr, 16);
      out[t.pid] = t;
    }
    return out;
  }
};

}  // namespace imee::test
