// libFuzzer harness: the Volatility 3 ISF reader (JSON with its symbols' order kept, then the
// profile it describes), on arbitrary text.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "imee/error.hpp"
#include "imee/isf.hpp"
#include "imee/linux_profile.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    std::vector<std::string> order;
    const nlohmann::json doc = imee::parse_json_keeping_symbol_order(text, &order);
    if (!imee::is_isf(doc)) return 0;
    const imee::LinuxProfile p = imee::profile_from_isf(doc, "fuzz", order);
    (void)p.symbol_offset("init_task");
    if (p.all_symbols) (void)p.all_symbols->resolve(0xffffffff81000000ull);
  } catch (const imee::Exception&) {
  } catch (const nlohmann::json::exception&) {
  }
  return 0;
}
