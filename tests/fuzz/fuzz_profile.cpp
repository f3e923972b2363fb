// libFuzzer harness: the cached profile (JSON) loader.
#include "file_input.hpp"
#include "imee/error.hpp"
#include "imee/linux_profile.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const imee::fuzz::MemFile file(data, size);
  try {
    const imee::LinuxProfile p = imee::LinuxProfile::load(file.path());
    (void)p.symbol_offset("init_task");
  } catch (const imee::Exception&) {
  }
  return 0;
}
