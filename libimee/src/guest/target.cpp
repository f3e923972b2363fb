#include "imee/target.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string_view>
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
// QEMU has hundreds of mappings and every tool run reads them: one read, no streams.
SharedMapping find_ram_mapping(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/maps";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Exception("cannot read " + path + ": " + std::strerror(errno));
  std::string text;
  char buf[1 << 16];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      throw Exception("cannot read " + path + ": " + std::strerror(err));
    }
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  // "start-end perms offset dev inode [path]"
  const auto field = [](std::string_view& line) {
    const std::size_t begin = std::min(line.size(), line.find_first_not_of(' '));
    line.remove_prefix(begin);
    const std::size_t end = std::min(line.size(), line.find(' '));
    const std::string_view f = line.substr(0, end);
    line.remove_prefix(end);
    return f;
  };
  const auto hex = [](std::string_view s) {
    std::uint64_t v = 0;
    std::from_chars(s.data(), s.data() + s.size(), v, 16);
    return v;
  };
  SharedMapping best;
  for (std::string_view rest = text; !rest.empty();) {
    const std::size_t eol = std::min(rest.size(), rest.find('\n'));
    std::string_view line = rest.substr(0, eol);
    rest.remove_prefix(std::min(rest.size(), eol + 1));
    const std::string_view range = field(line), perms = field(line), offset = field(line);
    field(line);  // dev
    const std::string_view inode = field(line);
    const std::size_t path_at = std::min(line.size(), line.find_first_not_of(' '));
    if (perms.size() < 4 || perms[3] != 's' || inode == "0" || offset != "00000000") continue;
    const std::size_t dash = range.find('-');
    if (dash == std::string_view::npos) continue;
    const std::uint64_t start = hex(range.substr(0, dash)), end = hex(range.substr(dash + 1));
    if (end > start && end - start > best.size)
      best = {std::string(range), end - start, std::string(line.substr(path_at))};
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
