// libFuzzer harness: guest RAM files (raw, ELF cores) and the page walker over whatever they hold:
// the first 16 bytes of the input pick an address space and a VA to read.
#include <cstring>
#include <vector>

#include "file_input.hpp"
#include "imee/error.hpp"
#include "imee/guest_ram.hpp"
#include "imee/soft_backend.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 16) return 0;
  std::uint64_t root, va;
  std::memcpy(&root, data, 8);
  std::memcpy(&va, data + 8, 8);
  const imee::fuzz::MemFile file(data + 16, size - 16);
  try {
    const imee::GuestRam ram = imee::GuestRam::open(file.path(), imee::MachineType::kPc);
    imee::SoftBackend soft(ram);
    std::vector<std::byte> buf(64);
    for (auto mode : {imee::PagingMode::k4Level, imee::PagingMode::k5Level}) {
      const imee::AddressSpace space{root & 0xffffff000ull, mode, (root & 1) != 0};
      (void)soft.read(space, va, buf);
      (void)soft.translate(space, va ^ 0xfff);
    }
    (void)soft.read_physical(root % (ram.total_size() + 1), buf);
  } catch (const imee::Exception&) {
  }
  return 0;
}
