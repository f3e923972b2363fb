#include "imee/symbols.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <utility>

#include "checked_file.hpp"
#include "imee/error.hpp"
#include "input_file.hpp"

namespace imee {

// Hash index for find(): an open-addressing table of symbol indices (linear probing), filled in
// address order so that of equal names the lowest address is met first. It holds indices, not
// pointers, so copies of a table can share it. Until a table has had a few lookups, find() scans
// instead: a tool that looks up one or two names should not pay for hashing 100k of them.
struct SymbolTable::NameIndex {
  static constexpr int kScansBeforeIndex = 8;  // a scan is ~0.3 ms, the index ~5 ms
  static constexpr std::uint32_t kEmpty = UINT32_MAX;
  std::atomic<int> scans{0};
  std::once_flag once;
  std::vector<std::uint32_t> slots;  // power-of-two size, at most half full
};

namespace {

constexpr std::string_view kBinaryMagic = "IMEESYMS";
constexpr std::uint32_t kBinaryVersion = 1;

// Large enough for any kernel's symbol list, small enough to refuse a wrong file quickly.
constexpr std::size_t kMaxFileBytes = std::size_t{512} << 20;

// Digit values for '0'-'9', 'a'-'f', 'A'-'F'; 0xff otherwise.
constexpr auto kHexValue = [] {
  std::array<std::uint8_t, 256> t{};
  t.fill(0xff);
  for (int i = 0; i < 10; ++i) t['0' + i] = static_cast<std::uint8_t>(i);
  for (int i = 0; i < 6; ++i) t['a' + i] = t['A' + i] = static_cast<std::uint8_t>(10 + i);
  return t;
}();

bool is_blank(char c) {
  return c == ' ' || c == '\t';
}
bool is_absolute(char type) {
  return type == 'A' || type == 'a';
}
bool is_type_letter(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '?';
}
// Printable ASCII or UTF-8 bytes; no blanks or control characters.
bool is_name_char(char c) {
  return static_cast<unsigned char>(c) > 0x20 && c != 0x7f;
}

// Skips whole 8-byte words of name characters (the bulk of the parse time is this scan); the
// caller finishes byte by byte. Bit tricks from "Bit Twiddling Hacks" (hasless / haszero).
const char* skip_name_words(const char* p, const char* end) {
  constexpr std::uint64_t kOnes = 0x0101010101010101, kHighs = 0x8080808080808080;
  while (end - p >= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    const std::uint64_t below_0x21 = (w - kOnes * 0x21) & ~w & kHighs;
    const std::uint64_t x = w ^ (kOnes * 0x7f);
    const std::uint64_t is_0x7f = (x - kOnes) & ~x & kHighs;
    if ((below_0x21 | is_0x7f) != 0) break;
    p += 8;
  }
  return p;
}

}  // namespace

SymbolTable SymbolTable::load(const std::string& path) {
  const InputFile file(path, kMaxFileBytes);
  if (!has_magic(file.text(), kBinaryMagic)) return parse(file.text(), path);
  // The binary form: count, then per symbol its address, type letter and name.
  const std::string_view payload = checked_payload(file.text(), kBinaryMagic, kBinaryVersion, path);
  ByteReader r(payload, path);
  const std::uint32_t count = r.u32();
  if (count == 0) r.fail("no symbols");
  SymbolTable table;
  std::vector<Symbol>& symbols = table.symbols_;
  symbols.reserve(std::min<std::size_t>(count, payload.size() / 12));  // 12: the smallest entry
  bool all_zero = true;
  for (std::uint32_t i = 0; i < count; ++i) {
    Symbol& s = symbols.emplace_back();
    s.address = r.u64();
    s.type = static_cast<char>(r.u8());
    const std::string_view name = r.take(r.u16());
    if (!is_type_letter(s.type)) r.fail("bad symbol type letter");
    if (name.empty() || !std::all_of(name.begin(), name.end(), is_name_char))
      r.fail("bad symbol name");
    s.name.assign(name);
    all_zero = all_zero && s.address == 0;
  }
  if (!r.at_end()) r.fail("trailing bytes");
  return from_checked(std::move(table), all_zero, path);
}

void SymbolTable::save_binary(const std::string& path) const {
  ByteWriter w;
  w.u32(static_cast<std::uint32_t>(symbols_.size()));
  for (const Symbol& s : symbols_) {
    w.u64(s.address);
    w.u8(static_cast<std::uint8_t>(s.type));
    const std::string_view name = std::string_view(s.name).substr(0, UINT16_MAX);
    w.u16(static_cast<std::uint16_t>(name.size()));
    w.raw(name);
  }
  write_checked_file(path, kBinaryMagic, kBinaryVersion, w.bytes());
}

SymbolTable SymbolTable::parse(std::string_view text, const std::string& origin) {
  SymbolTable table;
  std::vector<Symbol>& symbols = table.symbols_;
  symbols.reserve(text.size() / 36 + 16);  // kallsyms lines average ~40 bytes

  std::size_t line_no = 0;
  std::size_t module_symbols = 0;
  bool all_zero = true;
  const char* p = text.data();
  const char* const end = p + text.size();
  while (p < end) {
    const char* eol = static_cast<const char*>(std::memchr(p, '\n', end - p));
    if (eol == nullptr) eol = end;
    const char* line_begin = p;
    const char* line_end = eol;
    p = eol + 1;
    ++line_no;
    if (line_end > line_begin && line_end[-1] == '\r') --line_end;  // serial-console dumps
    if (line_end == line_begin) continue;

    const auto fail = [&](const std::string& why) {
      const std::string_view line(line_begin, line_end - line_begin);
      std::string hint;
      if (line.find("The real System.map is in") != std::string_view::npos) {
        hint =
            " (this is Debian's placeholder System.map: install the linux-image-*-dbg package "
            "or use a /proc/kallsyms dump)";
      }
      return Exception(origin + ":" + std::to_string(line_no) + ": " + why + hint);
    };

    // "<hex address> <type> <name>[\t[module]]"
    const char* q = line_begin;
    std::uint64_t address = 0;
    // Hand-rolled: at most 16 digits cannot overflow, and it is ~2x faster than std::from_chars.
    const char* const digits_end = q + std::min<std::ptrdiff_t>(line_end - q, 17);
    for (; q < digits_end; ++q) {
      const std::uint8_t v = kHexValue[static_cast<unsigned char>(*q)];
      if (v > 15) break;
      address = address << 4 | v;
    }
    if (q == line_begin) throw fail("expected a hexadecimal address at the start of the line");
    if (q - line_begin > 16) throw fail("address longer than 16 hex digits");
    if (q == line_end || !is_blank(*q)) throw fail("expected a blank after the address");
    while (q < line_end && is_blank(*q)) ++q;
    if (q == line_end || !is_type_letter(*q)) throw fail("expected a symbol type letter");
    const char type = *q++;
    if (q == line_end || !is_blank(*q)) throw fail("expected a blank after the symbol type");
    while (q < line_end && is_blank(*q)) ++q;
    const char* name_begin = q;
    q = skip_name_words(q, line_end);
    while (q < line_end && is_name_char(*q)) ++q;
    if (q == name_begin) throw fail("missing symbol name");
    const char* name_end = q;
    if (q < line_end && !is_blank(*q)) throw fail("control character in symbol name");
    while (q < line_end && is_blank(*q)) ++q;
    if (q < line_end) {
      // Only a "[module]" tag may follow the name.
      const char* tag_end = q;
      while (tag_end < line_end && is_name_char(*tag_end)) ++tag_end;
      const char* rest = tag_end;
      while (rest < line_end && is_blank(*rest)) ++rest;
      if (*q != '[' || tag_end - q < 3 || tag_end[-1] != ']' || rest != line_end)
        throw fail("unexpected text after the symbol name");
      ++module_symbols;  // module addresses move with every load: useless for a profile
      continue;
    }
    all_zero = all_zero && address == 0;
    Symbol& symbol = symbols.emplace_back();  // built in place: no string moves
    symbol.address = address;
    symbol.type = type;
    symbol.name.assign(name_begin, name_end);
  }

  if (symbols.empty()) {
    throw Exception(origin + (module_symbols ? ": only module symbols, no kernel symbols"
                                             : ": no symbols (empty file?)"));
  }
  return from_checked(std::move(table), all_zero, origin);
}

SymbolTable SymbolTable::from_symbols(std::vector<Symbol> symbols, const std::string& origin) {
  if (symbols.empty()) throw Exception(origin + ": no symbols");
  const bool all_zero =
      std::all_of(symbols.begin(), symbols.end(), [](const Symbol& s) { return s.address == 0; });
  SymbolTable table;
  table.symbols_ = std::move(symbols);
  return from_checked(std::move(table), all_zero, origin);
}

SymbolTable SymbolTable::from_checked(SymbolTable table, bool all_zero, const std::string& origin) {
  std::vector<Symbol>& symbols = table.symbols_;
  if (all_zero) {
    throw Exception(origin +
                    ": every symbol address is zero: this kallsyms was read without privilege "
                    "(kernel.kptr_restrict); dump it as root, e.g. sudo cat /proc/kallsyms > FILE");
  }
  if (symbols.size() > UINT32_MAX) throw Exception(origin + ": too many symbols");
  const auto by_address = [](const Symbol& a, const Symbol& b) { return a.address < b.address; };
  // kallsyms lists the percpu 'A' symbols first; System.map is sorted already.
  if (!std::is_sorted(symbols.begin(), symbols.end(), by_address))
    std::stable_sort(symbols.begin(), symbols.end(), by_address);
  table.reindex();
  return table;
}

void SymbolTable::save(const std::string& path) const {
  std::string text;
  text.reserve(symbols_.size() * 48);
  char address[20];
  for (const Symbol& s : symbols_) {
    std::snprintf(address, sizeof address, "%016llx ", static_cast<unsigned long long>(s.address));
    ((text += address) += s.type) += ' ';
    (text += s.name) += '\n';
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    if (out) out.write(text.data(), static_cast<std::streamsize>(text.size()));
    if (!out || !out.flush()) {
      std::remove(tmp.c_str());
      throw Exception(path + ": cannot write the symbol list");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Exception(path + ": cannot write the symbol list: " + std::strerror(errno));
  }
}

void SymbolTable::reindex() {
  located_.clear();
  for (std::uint32_t i = 0; i < symbols_.size(); ++i)
    if (!is_absolute(symbols_[i].type)) located_.push_back(i);
  names_ = std::make_shared<NameIndex>();
}

std::optional<std::uint64_t> SymbolTable::find(std::string_view name) const {
  if (!names_) return std::nullopt;  // default-constructed or moved-from
  NameIndex& index = *names_;
  if (index.scans.load(std::memory_order_relaxed) < NameIndex::kScansBeforeIndex) {
    index.scans.fetch_add(1, std::memory_order_relaxed);
    for (const Symbol& s : symbols_)
      if (s.name == name) return s.address;
    return std::nullopt;
  }
  const std::hash<std::string_view> hash;
  std::call_once(index.once, [&] {
    index.slots.assign(std::bit_ceil(symbols_.size() * 2), NameIndex::kEmpty);
    const std::size_t mask = index.slots.size() - 1;
    for (std::uint32_t i = 0; i < symbols_.size(); ++i) {
      std::size_t slot = hash(symbols_[i].name) & mask;
      while (index.slots[slot] != NameIndex::kEmpty) slot = (slot + 1) & mask;
      index.slots[slot] = i;
    }
  });
  const std::size_t mask = index.slots.size() - 1;
  for (std::size_t slot = hash(name) & mask; index.slots[slot] != NameIndex::kEmpty;
       slot = (slot + 1) & mask) {
    const Symbol& s = symbols_[index.slots[slot]];
    if (s.name == name) return s.address;
  }
  return std::nullopt;
}

std::optional<SymbolTable::Resolved> SymbolTable::resolve(std::uint64_t address) const {
  auto it = std::upper_bound(
      located_.begin(), located_.end(), address,
      [this](std::uint64_t a, std::uint32_t i) { return a < symbols_[i].address; });
  if (it == located_.begin()) return std::nullopt;
  --it;
  const std::uint64_t base = symbols_[*it].address;
  while (it != located_.begin() && symbols_[*(it - 1)].address == base) --it;
  const Symbol& s = symbols_[*it];
  return Resolved{&s, address - s.address};
}

std::optional<std::uint64_t> SymbolTable::next_address_after(std::uint64_t address) const {
  const auto it = std::upper_bound(symbols_.begin(), symbols_.end(), address,
                                   [](std::uint64_t a, const Symbol& s) { return a < s.address; });
  if (it == symbols_.end()) return std::nullopt;
  return it->address;
}

void SymbolTable::shift(std::int64_t delta) {
  for (Symbol& s : symbols_)
    if (!is_absolute(s.type)) s.address += static_cast<std::uint64_t>(delta);  // wraps like a VA
  const auto by_address = [](const Symbol& a, const Symbol& b) { return a.address < b.address; };
  // Absolute symbols stay put, so a slide can move text past them: restore the address order.
  if (!std::is_sorted(symbols_.begin(), symbols_.end(), by_address)) {
    std::stable_sort(symbols_.begin(), symbols_.end(), by_address);
    reindex();
  }
}

}  // namespace imee
