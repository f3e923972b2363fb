// The binary files libimee writes for itself (the profile cache): a header that says what the
// file is, so that a reader refuses anything else before it trusts one byte of the payload.
//   magic (8 bytes) | format version u32 | 0 u32 | payload size u64 | payload checksum u64
// then the payload, little-endian. Private to libimee.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "imee/error.hpp"

namespace imee {

inline constexpr std::size_t kCheckedHeaderSize = 32;

// Appends fixed-width little-endian fields and length-prefixed strings.
class ByteWriter {
 public:
  void u8(std::uint8_t v) { bytes_.push_back(static_cast<char>(v)); }
  void u16(std::uint16_t v) { put(&v, 2); }
  void u32(std::uint32_t v) { put(&v, 4); }
  void u64(std::uint64_t v) { put(&v, 8); }
  void str(std::string_view s);  // u32 length, then the bytes
  void raw(std::string_view s) { bytes_.append(s); }
  const std::string& bytes() const { return bytes_; }

 private:
  void put(const void* p, std::size_t n) { bytes_.append(static_cast<const char*>(p), n); }
  std::string bytes_;
};

// Reads what ByteWriter wrote; any read past the end throws imee::Exception naming `origin`.
class ByteReader {
 public:
  ByteReader(std::string_view bytes, std::string origin)
      : rest_(bytes), origin_(std::move(origin)) {}
  std::uint8_t u8() { return static_cast<std::uint8_t>(take(1)[0]); }
  std::uint16_t u16() { return get<std::uint16_t>(); }
  std::uint32_t u32() { return get<std::uint32_t>(); }
  std::uint64_t u64() { return get<std::uint64_t>(); }
  std::string_view str(std::size_t max_len);
  std::string_view take(std::size_t n);
  bool at_end() const { return rest_.empty(); }
  [[noreturn]] void fail(const std::string& why) const;

 private:
  template <class T>
  T get() {
    T v;
    std::memcpy(&v, take(sizeof v).data(), sizeof v);
    return v;
  }
  std::string_view rest_;
  std::string origin_;
};

// Whether `file` starts with `magic` (8 bytes).
bool has_magic(std::string_view file, std::string_view magic);

// The checked header and `payload`, written to `path` atomically (a temporary file renamed).
void write_checked_file(const std::string& path, std::string_view magic, std::uint32_t version,
                        std::string_view payload);

// The payload of `file` (a whole file's bytes), after checking its magic, version, size and
// checksum; throws imee::Exception saying which one is wrong, naming `origin`.
std::string_view checked_payload(std::string_view file, std::string_view magic,
                                 std::uint32_t version, const std::string& origin);

}  // namespace imee
