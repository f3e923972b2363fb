// libFuzzer harness: kernel image / ELF / raw BTF input, through libbpf, and member lookups.
#include "file_input.hpp"
#include "imee/error.hpp"
#include "imee/kernel_types.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const imee::fuzz::MemFile file(data, size);
  try {
    const imee::KernelTypes t = imee::KernelTypes::load(file.path());
    (void)t.member("task_struct", "pid");
    (void)t.member("cred", "uid");
    (void)t.type_size("kernel_cap_t");
    for (const auto& b : t.banners()) (void)t.banner_at(b.text_offset);
  } catch (const imee::Exception&) {
  }
  return 0;
}
