// The kernel's own compressed symbol table (CONFIG_KALLSYMS), found in a copy of the kernel
// image's read-only data by the tables' structure alone (no symbol needed) and decoded.
//
// What scripts/kallsyms.c emits, each table 8-byte aligned, in .rodata:
//   kallsyms_num_syms       u32, followed directly by
//   kallsyms_names          per symbol: length (1 byte, or 2 bytes ULEB128 if >= 0x80, 6.1+),
//                           then that many token indices; the expansion's first char is the type
//   kallsyms_markers        u32 per 256 symbols: offset of symbol 256*k in kallsyms_names
//   kallsyms_token_table    256 NUL-terminated strings
//   kallsyms_token_index    256 u16 offsets into the token table, ascending from 0
// and the addresses, one of:
//   CONFIG_KALLSYMS_BASE_RELATIVE (and every kernel since 6.4): kallsyms_offsets (i32 per
//   symbol) + kallsyms_relative_base (u64): with ABSOLUTE_PERCPU, offset >= 0 is an absolute
//   value and offset < 0 means relative_base - 1 - offset; without it, relative_base + u32.
//   Otherwise: kallsyms_addresses (u64 per symbol).
// Up to 6.1 the addresses come first (offsets, relative_base, num_syms, names, markers,
// [seqs_of_names, 6.2 and stable backports], token_table, token_index); 6.4+ puts num_syms first
// and offsets, relative_base, seqs_of_names after token_index. The finder accepts both orders.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "imee/symbols.hpp"

namespace imee {

struct KallsymsLayout {
  enum class Addresses { kRelative, kRelativePercpu, kAbsolute };
  Addresses addresses = Addresses::kRelative;
  std::uint64_t num_syms = 0;
  // Byte offsets of the tables in the scanned bytes.
  std::size_t names = 0, markers = 0, token_table = 0, token_index = 0;
  std::size_t address_table = 0;    // kallsyms_offsets or kallsyms_addresses
  std::uint64_t relative_base = 0;  // for the relative layouts, as it is in these bytes
};

// Finds the tables in `image` (e.g. the kernel image as loaded in guest memory; offsets in it
// must keep the image's 8-byte alignment). nullopt when no consistent set is there.
std::optional<KallsymsLayout> find_kallsyms(std::span<const std::uint8_t> image);

// Every symbol of the tables, in table order (by address), without the nameless ones (as
// /proc/kallsyms). Throws imee::Exception on tables that are inconsistent or run outside `image`
// (out-of-range offsets, token indices, lengths).
std::vector<Symbol> decode_kallsyms(std::span<const std::uint8_t> image,
                                    const KallsymsLayout& layout);

}  // namespace imee
