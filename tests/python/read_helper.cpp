// The C++ side of the Python binding's read comparison: reads "VA LEN" lines from stdin with
// libimee (LinuxSession, soft backend, one read_batch for all) and prints one line per request:
// "ok HEX" or "err FAULT VA GPA LEVEL" (imee::Error's fields; FAULT as the enum's number). Guest
// and profile as for a tool:
//   imee_read_helper (--pid PID | --ram FILE) PROFILE
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "imee/linux_session.hpp"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: imee_read_helper (--pid PID | --ram FILE) PROFILE\n");
    return 2;
  }
  imee::TargetSpec spec;
  if (std::string(argv[1]) == "--pid")
    spec.qemu_pid = std::stoi(argv[2]);
  else
    spec.ram_path = argv[2];
  auto s = imee::LinuxSession::open(spec, imee::LinuxProfile::load(argv[3]), "soft");

  std::vector<std::uint64_t> vas;
  std::vector<std::size_t> lens;
  std::size_t total = 0;
  for (std::uint64_t va, len; std::cin >> std::hex >> va >> std::dec >> len;) {
    vas.push_back(va);
    lens.push_back(len);
    total += len;
  }
  std::vector<std::byte> buffer(total);
  std::vector<imee::ReadRequest> requests(vas.size());
  std::size_t offset = 0;
  for (std::size_t i = 0; i < vas.size(); ++i) {
    requests[i] = {s->kernel_space(), vas[i], {buffer.data() + offset, lens[i]}, {}};
    offset += lens[i];
  }
  s->read_batch(requests);
  for (const imee::ReadRequest& r : requests) {
    if (r.status) {
      std::string hex = "ok ";
      for (std::byte b : r.dst) {
        static const char* digits = "0123456789abcdef";
        hex += digits[static_cast<unsigned>(b) >> 4];
        hex += digits[static_cast<unsigned>(b) & 15];
      }
      std::puts(hex.c_str());
    } else {
      const imee::Error& e = r.status.error();
      std::printf("err %d %llx %llx %d\n", static_cast<int>(e.fault),
                  static_cast<unsigned long long>(e.va), static_cast<unsigned long long>(e.gpa),
                  e.level);
    }
  }
  return 0;
}
