// libFuzzer harness: BTF as read from guest memory (KernelTypes::from_btf), every lookup the
// profile builder makes on it and the ISF writer over all of its types; and the same bytes as
// guest RAM, through the zero-configuration path (banner scan, kallsyms and BTF from memory).
#include <cstddef>
#include <cstdint>
#include <span>

#include "imee/error.hpp"
#include "imee/guest_profile.hpp"
#include "imee/guest_ram.hpp"
#include "imee/isf.hpp"
#include "imee/kernel_types.hpp"
#include "imee/linux_profile.hpp"
#include "imee/symbols.hpp"

namespace {

// A symbol list with every symbol the profile builder wants, so that it goes on to the types.
const imee::SymbolTable& symbols() {
  static const imee::SymbolTable table = [] {
    std::vector<imee::Symbol> list;
    std::uint64_t at = 0xffffffff81000000ull;
    for (const char* name : {"_text", "_etext", "entry_SYSCALL_64", "init_task", "init_top_pgt",
                             "linux_banner", "page_offset_base", "sys_call_table", "init_pid_ns",
                             "init_cred", "modules", "zz_after_sys_call_table"})
      list.push_back({at += 0x1000, 'T', name});
    return imee::SymbolTable::from_symbols(std::move(list), "fuzz");
  }();
  return table;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  try {
    const imee::KernelTypes types = imee::KernelTypes::from_btf(bytes, "fuzz");
    try {
      (void)imee::LinuxProfile::build(types, symbols(), "fuzz", "fuzz");
    } catch (const imee::Exception&) {
    }
    (void)imee::make_isf(types, symbols(), 0xffffffff81000000ull, "Linux version 6.1.0-fuzz");
  } catch (const imee::Exception&) {
  }
  try {
    const imee::GuestRam ram = imee::GuestRam::view(std::as_bytes(bytes));
    (void)imee::guest_profile(ram, "");
  } catch (const imee::Exception&) {
  }
  return 0;
}
