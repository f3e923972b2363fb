// A target VM: where its RAM is and how it is laid out, found from a QEMU process or a file.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <utility>

#include "imee/guest_ram.hpp"

namespace imee {

struct TargetSpec {
  std::optional<pid_t> qemu_pid;       // a running QEMU; its RAM backend is found through /proc
  std::string ram_path;                // or: a RAM file (memory-backend-file) or a dump
  std::optional<MachineType> machine;  // RAM layout; from QEMU's command line when omitted
};

class Target {
 public:
  static Target open(const TargetSpec& spec);

  const GuestRam& ram() const { return ram_; }
  std::optional<pid_t> qemu_pid() const { return qemu_pid_; }
  MachineType machine() const { return machine_; }
  std::string describe() const;

 private:
  Target(GuestRam ram, std::optional<pid_t> pid, MachineType machine)
      : ram_(std::move(ram)), qemu_pid_(pid), machine_(machine) {}
  GuestRam ram_;
  std::optional<pid_t> qemu_pid_;
  MachineType machine_;
};

}  // namespace imee
