// libFuzzer harness: the kallsyms / System.map parser and the lookups on what it accepts.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "imee/error.hpp"
#include "imee/symbols.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    imee::SymbolTable t = imee::SymbolTable::parse(
        std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
    if (t.size() == 0) __builtin_trap();  // parse promises a non-empty table or an exception
    const std::uint64_t a = t.symbols().front().address;
    (void)t.find(t.symbols().back().name);
    (void)t.resolve(a + 1);
    (void)t.next_address_after(a);
    t.shift(0x1000);
    (void)t.resolve(a);
  } catch (const imee::Exception&) {
  }
  return 0;
}
