// libFuzzer harness: the kallsyms table finder and decoder on arbitrary bytes (guest memory is
// untrusted), and raw BTF as read from guest memory.
#include <cstddef>
#include <cstdint>
#include <span>

#include "imee/error.hpp"
#include "imee/kallsyms.hpp"
#include "imee/kernel_types.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  try {
    if (const auto layout = imee::find_kallsyms(bytes)) {
      const auto symbols = imee::decode_kallsyms(bytes, *layout);
      if (symbols.size() > layout->num_syms) __builtin_trap();
    }
  } catch (const imee::Exception&) {
  }
  try {
    const imee::KernelTypes t = imee::KernelTypes::from_btf(bytes, "fuzz");
    (void)t.member("task_struct", "pid");
    (void)t.type_size("cred");
  } catch (const imee::Exception&) {
  }
  return 0;
}
