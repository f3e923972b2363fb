#include "checked_file.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <span>

#include "imee/linux_profile.hpp"

namespace imee {

namespace {

std::uint64_t checksum(std::string_view payload) {
  return hash_btf(std::span(reinterpret_cast<const std::uint8_t*>(payload.data()), payload.size()));
}

}  // namespace

void ByteWriter::str(std::string_view s) {
  u32(static_cast<std::uint32_t>(s.size()));
  raw(s);
}

std::string_view ByteReader::take(std::size_t n) {
  if (n > rest_.size()) fail("truncated");
  const std::string_view out = rest_.substr(0, n);
  rest_.remove_prefix(n);
  return out;
}

std::string_view ByteReader::str(std::size_t max_len) {
  const std::uint32_t len = u32();
  if (len > max_len) fail("implausible string length " + std::to_string(len));
  return take(len);
}

void ByteReader::fail(const std::string& why) const {
  throw Exception(origin_ + ": " + why);
}

bool has_magic(std::string_view file, std::string_view magic) {
  return file.size() >= magic.size() && file.substr(0, magic.size()) == magic;
}

void write_checked_file(const std::string& path, std::string_view magic, std::uint32_t version,
                        std::string_view payload) {
  ByteWriter header;
  header.raw(magic.substr(0, 8));
  header.u32(version);
  header.u32(0);
  header.u64(payload.size());
  header.u64(checksum(payload));
  // Unique per process: two tools filling the cache at once each rename a whole file.
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary);
    out.write(header.bytes().data(), static_cast<std::streamsize>(header.bytes().size()));
    out.write(payload.data(), static_cast<std::streamsize>(payload.size()));
    if (!out || !out.flush()) {
      std::remove(tmp.c_str());
      throw Exception(path + ": cannot write");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    throw Exception(path + ": cannot write: " + std::strerror(err));
  }
}

std::string_view checked_payload(std::string_view file, std::string_view magic,
                                 std::uint32_t version, const std::string& origin) {
  ByteReader r(file, origin);
  if (file.size() < kCheckedHeaderSize || !has_magic(file, magic))
    r.fail("not an ImEE " + std::string(magic.substr(0, 8)) + " file (bad magic)");
  r.take(8);
  if (const std::uint32_t v = r.u32(); v != version)
    r.fail("format version " + std::to_string(v) + ", this build reads " + std::to_string(version));
  r.u32();
  const std::uint64_t size = r.u64();
  const std::uint64_t sum = r.u64();
  const std::string_view payload = file.substr(kCheckedHeaderSize);
  if (size != payload.size())
    r.fail("payload of " + std::to_string(payload.size()) + " bytes, header says " +
           std::to_string(size) + " (truncated or extended)");
  if (checksum(payload) != sum) r.fail("checksum mismatch (corrupted)");
  return payload;
}

}  // namespace imee
