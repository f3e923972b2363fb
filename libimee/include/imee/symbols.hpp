// Kernel symbols from a /proc/kallsyms dump or a System.map (same "address type name" format).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace imee {

struct Symbol {
  std::uint64_t address = 0;
  char type = '?';  // nm-style type letter: T/t text, D/d data, R/r rodata, B/b bss, A absolute ...
  std::string name;
};

class SymbolTable {
 public:
  // Parses a kallsyms dump or System.map, or reads the binary form save_binary() writes. Throws
  // imee::Exception naming the file and line on malformed input, and on a file with no symbols or
  // with all addresses zero (a kallsyms read without privilege).
  static SymbolTable load(const std::string& path);
  static SymbolTable parse(std::string_view text, const std::string& origin);
  // A table of symbols from elsewhere (e.g. decoded from kallsyms in guest memory); the same
  // checks as parse().
  static SymbolTable from_symbols(std::vector<Symbol> symbols, const std::string& origin);
  // Writes the table in kallsyms format ("address type name" lines), atomically.
  void save(const std::string& path) const;
  // Writes the table in a compact binary form (the zero-config cache's: no text to parse),
  // versioned and checksummed like LinuxProfile::save_binary, atomically.
  void save_binary(const std::string& path) const;

  // Address of the first symbol called `name`: the lowest address, ties in file order (module
  // symbols "[mod]" are dropped at parse time). Thread-safe; a hash index is built on first use.
  std::optional<std::uint64_t> find(std::string_view name) const;

  struct Resolved {
    const Symbol* symbol = nullptr;
    std::uint64_t offset = 0;  // address - symbol->address
  };
  // The nearest non-absolute symbol at or below `address`; of several at that address, the first
  // listed.
  std::optional<Resolved> resolve(std::uint64_t address) const;

  // Address of the first symbol strictly above `address` (bounds an object such as a table).
  std::optional<std::uint64_t> next_address_after(std::uint64_t address) const;

  // Moves every non-absolute symbol by `delta` (a KASLR slide), keeping the order.
  void shift(std::int64_t delta);

  const std::vector<Symbol>& symbols() const { return symbols_; }  // sorted by address
  std::size_t size() const { return symbols_.size(); }

 private:
  struct NameIndex;  // see symbols.cpp
  static SymbolTable from_checked(SymbolTable table, bool all_zero, const std::string& origin);
  void reindex();

  std::vector<Symbol> symbols_;
  std::vector<std::uint32_t> located_;  // indices of the non-absolute symbols, by address
  std::shared_ptr<NameIndex> names_;    // shared by copies: it holds indices, not pointers
};

}  // namespace imee
