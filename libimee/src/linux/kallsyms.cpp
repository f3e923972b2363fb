// The kernel's kallsyms tables, found by their structure and decoded (see kallsyms.hpp; checked
// against scripts/kallsyms.c and kernel/kallsyms.c of Debian's 6.1 and 6.12 sources).
#include "imee/kallsyms.hpp"

#include <array>
#include <cctype>
#include <cstring>
#include <string>
#include <string_view>

#include "imee/error.hpp"

namespace imee {

namespace {

using Bytes = std::span<const std::uint8_t>;

constexpr std::uint64_t kMaxSymbols = 1u << 24;  // kallsyms_seqs_of_names holds 24-bit indices
constexpr std::uint64_t kKernelHalf = 0xffff800000000000ull;
// How far before the token table the names may start: real kernels need ~2 MB (names,
// markers, and up to 6.1 seqs_of_names); hostile input must not make the search quadratic.
constexpr std::size_t kMaxNamesDistance = std::size_t{64} << 20;
constexpr int kQuickCheckSymbols = 32;
constexpr std::uint16_t kMaxTokenLength = 128;

std::uint16_t le16(Bytes b, std::size_t at) {
  std::uint16_t v;
  std::memcpy(&v, b.data() + at, sizeof v);
  return v;
}
std::uint32_t le32(Bytes b, std::size_t at) {
  std::uint32_t v;
  std::memcpy(&v, b.data() + at, sizeof v);
  return v;
}
std::uint64_t le64(Bytes b, std::size_t at) {
  std::uint64_t v;
  std::memcpy(&v, b.data() + at, sizeof v);
  return v;
}
constexpr std::size_t align8(std::size_t v) {
  return (v + 7) & ~std::size_t{7};
}
bool fits(Bytes b, std::size_t at, std::uint64_t len) {
  return at <= b.size() && len <= b.size() - at;
}

using Tokens = std::array<std::string_view, 256>;

// The 256 tokens, if `table` and `index` hold a consistent token table: every offset inside the
// table, every token a printable string ending where the next begins, the last one ending within
// the alignment padding before the index.
std::optional<Tokens> tokens_at(Bytes b, std::size_t table, std::size_t index) {
  if (table >= index || !fits(b, index, 512)) return std::nullopt;
  Tokens out;
  for (int i = 0; i < 256; ++i) {
    const std::size_t off = table + le16(b, index + 2 * i);
    if (off >= index) return std::nullopt;
    const auto* s = reinterpret_cast<const char*>(b.data() + off);
    const std::size_t len = ::strnlen(s, index - off);
    if (len == 0 || off + len == index) return std::nullopt;  // empty or not terminated
    for (std::size_t k = 0; k < len; ++k)
      if (s[k] < 0x20 || s[k] > 0x7e) return std::nullopt;
    if (i < 255 ? table + le16(b, index + 2 * i + 2) != off + len + 1
                : align8(off + len + 1) != index)
      return std::nullopt;
    out[i] = {s, len};
  }
  return out;
}

// Whether 256 u16 at `at` look like a token index: 0 first, then ascending by a token's length
// plus its NUL.
bool looks_like_token_index(Bytes b, std::size_t at) {
  if (le16(b, at) != 0) return false;
  std::uint16_t prev = 0;
  for (int i = 1; i < 256; ++i) {
    const std::uint16_t v = le16(b, at + 2 * i);
    if (v < prev + 2 || v > prev + kMaxTokenLength + 1) return false;
    prev = v;
  }
  return true;
}

// One name of kallsyms_names at `at`: its length field and token bytes.
struct NameRecord {
  std::size_t tokens = 0;  // offset of the first token byte
  std::size_t len = 0;     // token count
  std::size_t next = 0;    // offset of the next record
};
std::optional<NameRecord> name_at(Bytes b, std::size_t at, std::size_t end) {
  if (at >= end) return std::nullopt;
  std::size_t len = b[at];
  std::size_t head = 1;
  if ((len & 0x80) != 0) {  // "big" symbol: ULEB128 in two bytes
    if (at + 1 >= end) return std::nullopt;
    len = (len & 0x7f) | std::size_t{b[at + 1]} << 7;
    head = 2;
  }
  if (len == 0 || len > end - at - head) return std::nullopt;
  return NameRecord{at + head, len, at + head + len};
}

// Walks `n` names from `at` (staying before `end`), recording every 256th record's offset;
// the end of the stream, or nullopt. With `strict`, the first symbols must expand to a type
// letter and a name (a cheap test before the full walk).
std::optional<std::size_t> walk_names(Bytes b, std::size_t at, std::uint64_t n, std::size_t end,
                                      const Tokens& tokens, std::vector<std::uint32_t>* markers,
                                      int strict) {
  const std::size_t start = at;
  for (std::uint64_t i = 0; i < n; ++i) {
    const auto r = name_at(b, at, end);
    if (!r) return std::nullopt;
    if ((i & 0xff) == 0 && markers) markers->push_back(static_cast<std::uint32_t>(at - start));
    if (static_cast<int>(i) < strict) {
      const std::string_view first = tokens[b[r->tokens]];
      if (!std::isalpha(static_cast<unsigned char>(first[0]))) return std::nullopt;
      if (first.size() == 1 && r->len == 1) return std::nullopt;  // a type with no name
    }
    at = r->next;
  }
  return at;
}

// Whether the markers at `at` are the ones recorded while walking the names.
bool markers_match(Bytes b, std::size_t at, const std::vector<std::uint32_t>& expected) {
  if (!fits(b, at, expected.size() * 4)) return false;
  for (std::size_t k = 0; k < expected.size(); ++k)
    if (le32(b, at + 4 * k) != expected[k]) return false;
  return true;
}

std::uint64_t address_of(Bytes b, const KallsymsLayout& l, std::uint64_t i) {
  switch (l.addresses) {
    case KallsymsLayout::Addresses::kAbsolute:
      return le64(b, l.address_table + 8 * i);
    case KallsymsLayout::Addresses::kRelative:
      return l.relative_base + le32(b, l.address_table + 4 * i);
    case KallsymsLayout::Addresses::kRelativePercpu: {
      const auto off = static_cast<std::int32_t>(le32(b, l.address_table + 4 * i));
      if (off >= 0) return static_cast<std::uint64_t>(off);
      return l.relative_base - 1 - static_cast<std::uint64_t>(static_cast<std::int64_t>(off));
    }
  }
  return 0;
}

// Completes `l` (names, token tables found) with an address table at `table`, if the addresses
// there are what kallsyms holds: sorted, and in the kernel's half for the relocated ones.
bool try_addresses(Bytes b, KallsymsLayout& l, std::size_t table, KallsymsLayout::Addresses kind,
                   std::size_t base_at) {
  const std::uint64_t width = kind == KallsymsLayout::Addresses::kAbsolute ? 8 : 4;
  if (table % 8 != 0 || !fits(b, table, l.num_syms * width)) return false;
  l.addresses = kind;
  l.address_table = table;
  if (kind != KallsymsLayout::Addresses::kAbsolute) {
    if (!fits(b, base_at, 8)) return false;
    l.relative_base = le64(b, base_at);
    if (l.relative_base < kKernelHalf) return false;
    bool negative = false;
    for (std::uint64_t i = 0; i < l.num_syms && !negative; ++i)
      negative = (le32(b, table + 4 * i) & 0x80000000u) != 0;
    if (negative) l.addresses = KallsymsLayout::Addresses::kRelativePercpu;
  }
  std::uint64_t prev = 0;
  for (std::uint64_t i = 0; i < l.num_syms; ++i) {
    const std::uint64_t a = address_of(b, l, i);
    if (a < prev) return false;
    prev = a;
  }
  return prev >= kKernelHalf;  // the last symbols are the kernel's
}

}  // namespace

std::optional<KallsymsLayout> find_kallsyms(std::span<const std::uint8_t> b) {
  for (std::size_t index = 8; index + 512 <= b.size(); index += 8) {
    if (!looks_like_token_index(b, index)) continue;
    // The table ends in the padding before the index; its last token's length is unknown.
    const std::size_t last = le16(b, index + 510);
    std::optional<Tokens> tokens;
    std::size_t table = 0;
    for (std::size_t size = align8(last + 2); size <= align8(last + kMaxTokenLength + 1) && !tokens;
         size += 8) {
      if (size > index) break;
      table = index - size;
      tokens = tokens_at(b, table, index);
    }
    if (!tokens) continue;

    // kallsyms_num_syms, then the names right after it at the next 8-byte boundary, then the
    // markers: searched backwards from the token table.
    const std::size_t floor = table > kMaxNamesDistance ? table - kMaxNamesDistance : 0;
    for (std::size_t at = table; at >= floor + 8;) {
      at -= 8;
      const std::uint64_t n = le32(b, at);
      if (n != 0 && n <= kMaxSymbols && le32(b, at + 4) == 0 &&
          walk_names(b, at + 8, std::min<std::uint64_t>(n, kQuickCheckSymbols), table, *tokens,
                     nullptr, kQuickCheckSymbols)) {
        std::vector<std::uint32_t> markers;
        const auto end = walk_names(b, at + 8, n, table, *tokens, &markers, 0);
        if (end && markers_match(b, align8(*end), markers)) {
          KallsymsLayout l;
          l.num_syms = n;
          l.names = at + 8;
          l.markers = align8(*end);
          l.token_table = table;
          l.token_index = index;
          using A = KallsymsLayout::Addresses;
          // 6.4+: offsets and relative_base after the token index.
          const std::size_t after = align8(index + 512);
          if (try_addresses(b, l, after, A::kRelative, align8(after + 4 * n))) return l;
          // Up to 6.1: offsets, relative_base, then num_syms; or absolute addresses, num_syms.
          if (at >= 8 + align8(4 * n) &&
              try_addresses(b, l, at - 8 - align8(4 * n), A::kRelative, at - 8))
            return l;
          if (at >= 8 * n && try_addresses(b, l, at - 8 * n, A::kAbsolute, 0)) return l;
        }
      }
    }
  }
  return std::nullopt;
}

std::vector<Symbol> decode_kallsyms(std::span<const std::uint8_t> b, const KallsymsLayout& l) {
  const auto bad = [](const std::string& why) {
    return Exception("kallsyms tables are inconsistent: " + why);
  };
  if (l.num_syms == 0 || l.num_syms > kMaxSymbols)
    throw bad("implausible symbol count " + std::to_string(l.num_syms));
  if (!fits(b, l.token_index, 512) || l.token_table >= l.token_index)
    throw bad("token table or index outside the image");
  Tokens tokens;
  for (int i = 0; i < 256; ++i) {
    const std::size_t off = l.token_table + le16(b, l.token_index + 2 * i);
    if (off >= l.token_index) throw bad("token index " + std::to_string(i) + " out of range");
    const auto* s = reinterpret_cast<const char*>(b.data() + off);
    const std::size_t len = ::strnlen(s, l.token_index - off);
    if (off + len == l.token_index) throw bad("token " + std::to_string(i) + " not terminated");
    tokens[i] = {s, len};
  }
  const std::uint64_t width = l.addresses == KallsymsLayout::Addresses::kAbsolute ? 8 : 4;
  if (!fits(b, l.address_table, l.num_syms * width)) throw bad("address table outside the image");
  if (l.names >= b.size()) throw bad("names outside the image");

  std::vector<Symbol> out;
  out.reserve(l.num_syms);
  std::size_t at = l.names;
  std::string text;
  for (std::uint64_t i = 0; i < l.num_syms; ++i) {
    const auto r = name_at(b, at, b.size());
    if (!r) throw bad("name of symbol " + std::to_string(i) + " is empty or runs off the image");
    text.clear();
    for (std::size_t k = 0; k < r->len; ++k) text += tokens[b[r->tokens + k]];
    at = r->next;
    if (text.size() < 2) continue;  // nameless: /proc/kallsyms skips it too
    Symbol& s = out.emplace_back();
    s.type = text[0];
    s.name.assign(text, 1);
    s.address = address_of(b, l, i);
  }
  return out;
}

}  // namespace imee
