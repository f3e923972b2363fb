// Volatility 3's Intermediate Symbol Format (ISF, format 6.2.0: what dwarf2json writes and
// Volatility 3 reads, with anonymous struct/union members) out of a kernel's BTF and symbol
// list, and back in as a profile.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "imee/kernel_types.hpp"
#include "imee/linux_profile.hpp"
#include "imee/symbols.hpp"

namespace imee {

inline constexpr const char* kIsfFormat = "6.2.0";

struct IsfCounts {
  std::size_t base_types = 0, user_types = 0, enums = 0, symbols = 0;
};

// The ISF of a kernel: every type of `types` (structs and unions with every field, bitfields,
// arrays, pointers, function pointers; typedefs and qualifiers resolved, as ISF has none; unnamed
// structs and unions named unnamed_<kind>_<BTF id>), every enum, and every symbol of `symbols`
// moved so that _text is at `link_text` (symbols of any boot in, link-time addresses out;
// absolute symbols stay), linux_banner carrying `banner` + "\n\0" as its constant data (how
// Volatility 3 matches an ISF to a memory image).
// Returned as JSON text (symbols in table order).
std::string make_isf(const KernelTypes& types, const SymbolTable& symbols, std::uint64_t link_text,
                     const std::string& banner, IsfCounts* counts = nullptr);

// Writes the ISF text to `path`, xz-compressed if the name ends in ".xz" (liblzma), atomically.
void write_isf(const std::string& isf, const std::string& path);

// Whether `doc` is an ISF rather than an ImEE profile.
bool is_isf(const nlohmann::json& doc);

// Parses JSON text, recording the order of the keys of its top-level "symbols" object (an ISF's
// symbols in file order: of symbols at one address, the first listed names it).
nlohmann::json parse_json_keeping_symbol_order(const std::string& text,
                                               std::vector<std::string>* symbol_order);

// The profile an ISF describes: the layout from its user_types, the symbols (all of them, at
// their link-time addresses, in `symbol_order` if given) from its symbols, the banner from
// linux_banner's constant data. Throws imee::Exception naming what is missing or mistyped.
LinuxProfile profile_from_isf(const nlohmann::json& isf, const std::string& origin,
                              const std::vector<std::string>& symbol_order = {});

// The contents of `path`, xz-decompressed when it is xz data (by its magic).
std::string read_maybe_xz(const std::string& path);

}  // namespace imee
