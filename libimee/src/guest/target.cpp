#include "imee/target.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "imee/error.hpp"

namespace imee {

namespace {

std::vector<std::string> read_cmdline(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  if (!in)
    throw Exception("no process with pid " + std::to_string(pid) + " (or /proc is not readable)");
  std::vector<std::string> args;
  std::string arg;
  while (std::getline(in, arg, '\0')) args.push_back(arg);
  if (args.empty())
    throw Exception("process " + std::to_string(pid) +
                    " has no command line (a kernel thread or a zombie?)");
  return args;
}

// The machine type from QEMU's "-machine"/"-M" option: "pc", "q35,accel=tcg", "type=q35,...".
MachineType machine_from_cmdline(const std::vector<std::string>& args) {
  for (std::size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] != "-machine" && args[i] != "-M" && args[i] != "--machine") continue;
    std::stringstream opts(args[i + 1]);
    std::string opt;
    while (std::getline(opts, opt, ',')) {
      if (opt.starts_with("type=")) return parse_machine_type(opt.substr(5));
      if (opt.find('=') == std::string::npos) return parse_machine_type(opt);
    }
  }
  return MachineType::kPc;  // QEMU's default machine on x86
}

struct SharedMapping {
  std::string range;  // "start-end" as in /proc/PID/maps
  std::uint64_t size = 0;
  std::string path;
};

// Guest RAM is the largest shared mapping of QEMU (memory-backend-file or memfd with share=on).
SharedMapping find_ram_mapping(pid_t pid) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  if (!maps)
    throw Exception("cannot read /proc/" + std::to_string(pid) + "/maps: " + std::strerror(errno));
  SharedMapping best;
  std::string line;
  while (std::getline(maps, line)) {
    std::istringstream fields(line);
    std::string range, perms, offset, dev, inode, path;
    fields >> range >> perms >> offset >> dev >> inode;
    std::getline(fields >> std::ws, path);
    if (perms.size() < 4 || perms[3] != 's' || inode == "0") continue;
    const auto dash = range.find('-');
    const std::uint64_t start = std::stoull(range.substr(0, dash), nullptr, 16);
    const std::uint64_t end = std::stoull(range.substr(dash + 1), nullptr, 16);
    if (end - start > best.size && offset == "00000000") best = {range, end - start, path};
  }
  if (best.size < (1u << 20))
    throw Exception("QEMU process " + std::to_string(pid) +
                    " has no shared guest RAM; start it with -object memory-backend-file,share=on "
                    "(or memory-backend-memfd,share=on) and -machine memory-backend=...");
  return best;
}

}  // namespace

Target Target::open(const TargetSpec& spec) {
  if (spec.qemu_pid && !spec.ram_path.empty())
    throw Exception("name the target either by QEMU pid or by RAM file, not both");
  if (!spec.qemu_pid) {
    if (spec.ram_path.empty()) throw Exception("no target: give a QEMU pid or a RAM file");
    const MachineType machine = spec.machine.value_or(MachineType::kFlat);
    return Target(GuestRam::open(spec.ram_path, machine), std::nullopt, machine);
  }
  const pid_t pid = *spec.qemu_pid;
  const MachineType machine = spec.machine.value_or(machine_from_cmdline(read_cmdline(pid)));
  const SharedMapping mapping = find_ram_mapping(pid);
  // map_files opens the very object QEMU maps, memfd included, without trusting the path name.
  const std::string via = "/proc/" + std::to_string(pid) + "/map_files/" + mapping.range;
  const int fd = ::open(via.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw Exception("cannot open QEMU's guest RAM through " + via + ": " + std::strerror(errno) +
                    " (this needs root or CAP_SYS_ADMIN)");
  try {
    GuestRam ram = GuestRam::open_fd(fd, mapping.path, machine, GuestRam::Content::kRaw);
    ::close(fd);
    return Target(std::move(ram), pid, machine);
  } catch (...) {
    ::close(fd);
    throw;
  }
}

std::string Target::describe() const {
  std::string out = qemu_pid_ ? "QEMU pid " + std::to_string(*qemu_pid_) + ", " : "";
  char size[64];
  std::snprintf(size, sizeof size, "%llu MiB",
                static_cast<unsigned long long>(ram_.total_size() >> 20));
  return out + "RAM " + ram_.name() + " (" + size + ", " + to_string(machine_) + " layout)";
}

}  // namespace imee
