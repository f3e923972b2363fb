// What the host kernel says about memory, for the tests that change what backs a target's RAM.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <string>

namespace imee::test {

// /proc/PID/pagemap's entry for the page at `addr` in process `pid` ("self" for this one): bit 63
// present, bit 62 swapped, bits 0-54 the PFN (root only). 0 if it cannot be read.
inline std::uint64_t pagemap_entry(const std::string& pid, std::uint64_t addr) {
  const int fd = ::open(("/proc/" + pid + "/pagemap").c_str(), O_RDONLY | O_CLOEXEC);
  std::uint64_t entry = 0;
  const bool ok = fd >= 0 && ::pread(fd, &entry, 8, static_cast<off_t>(addr / 4096 * 8)) == 8;
  if (fd >= 0) ::close(fd);
  return ok ? entry : 0;
}
inline bool page_present(std::uint64_t entry) {
  return (entry >> 63) != 0;
}
inline bool page_swapped(std::uint64_t entry) {
  return ((entry >> 62) & 1) != 0;
}

// The first active swap device or file ("" if none).
inline std::string active_swap() {
  std::ifstream swaps("/proc/swaps");
  std::string header, device;
  std::getline(swaps, header);
  swaps >> device;
  return device;
}

}  // namespace imee::test
