// libFuzzer harness: the zero-configuration cache's binary files (LinuxProfile::save_binary,
// SymbolTable::save_binary). The first byte picks what the rest is: 0, a whole file as found on
// disk (header checks); 1 and 2, a profile's or a symbol list's payload, given a valid header
// here (magic, version, size, checksum) so that the fuzzer reaches the field checks behind it.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "file_input.hpp"
#include "imee/error.hpp"
#include "imee/linux_profile.hpp"
#include "imee/symbols.hpp"

namespace {

std::string with_header(const char* magic, const std::uint8_t* payload, std::size_t size) {
  std::string file(magic, 8);
  const std::uint32_t version = 1, zero = 0;
  const std::uint64_t length = size, sum = imee::hash_btf(std::span(payload, size));
  file.append(reinterpret_cast<const char*>(&version), 4);
  file.append(reinterpret_cast<const char*>(&zero), 4);
  file.append(reinterpret_cast<const char*>(&length), 8);
  file.append(reinterpret_cast<const char*>(&sum), 8);
  file.append(reinterpret_cast<const char*>(payload), size);
  return file;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  std::string file;
  switch (data[0] % 3) {
    case 0:
      file.assign(reinterpret_cast<const char*>(data + 1), size - 1);
      break;
    case 1:
      file = with_header("IMEEPROF", data + 1, size - 1);
      break;
    default:
      file = with_header("IMEESYMS", data + 1, size - 1);
      break;
  }
  const imee::fuzz::MemFile mem(reinterpret_cast<const std::uint8_t*>(file.data()), file.size());
  try {
    const imee::LinuxProfile p = imee::LinuxProfile::load(mem.path());
    (void)p.symbol_offset("init_task");
  } catch (const imee::Exception&) {
  }
  try {
    const imee::SymbolTable t = imee::SymbolTable::load(mem.path());
    (void)t.find("_text");
    (void)t.resolve(0xffffffff81000000ull);
  } catch (const imee::Exception&) {
  }
  return 0;
}
