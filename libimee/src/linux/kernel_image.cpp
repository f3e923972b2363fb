// Kernel images: raw BTF, an ELF vmlinux, or a compressed kernel (bzImage/vmlinuz with a gzip,
// xz, lzma or zstd payload, or a plain vmlinux.xz/.gz/.zst), unpacked just far enough to find the
// BTF and the banners.
#include "kernel_image.hpp"

#include <fcntl.h>
#include <lzma.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "imee/error.hpp"
#include "input_file.hpp"

namespace imee {

namespace {

using Bytes = std::span<const std::uint8_t>;

// Debian's vmlinux.bin is ~66 MB; a limit keeps a decompression bomb from eating the host.
constexpr std::size_t kMaxDecompressed = std::size_t{1} << 30;
constexpr std::uint64_t kLzmaMemLimit = std::uint64_t{512} << 20;
// Fallback magic search (non-bzImage input): how many candidate payloads to try.
constexpr int kMaxPayloadCandidates = 8;
std::uint16_t le16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>(p[0] | p[1] << 8);
}
std::uint32_t le32(const std::uint8_t* p) {
  return le16(p) | std::uint32_t{le16(p + 2)} << 16;
}
std::uint64_t le64(const std::uint8_t* p) {
  return le32(p) | std::uint64_t{le32(p + 4)} << 32;
}

constexpr std::string_view kElfMagic = "\177ELF";

bool starts_with(Bytes b, std::string_view magic) {
  return b.size() >= magic.size() && std::memcmp(b.data(), magic.data(), magic.size()) == 0;
}

// Thrown from the decompressors; the caller adds the file name.
struct DecodeError {
  std::string why;
};

// Growable output for the decompressors, in anonymous memory: nothing is zeroed up front, growth
// is an mremap rather than a copy, and huge pages cut the page faults for a 60+ MB kernel by ~500x.
class Buffer {
 public:
  // Slack past an exact size hint: the decoder wants output room before it reports the end.
  explicit Buffer(std::size_t hint) {
    grow(std::clamp<std::size_t>(hint + (1 << 20), 1 << 20, kMaxDecompressed));
  }
  Buffer(Buffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)),
        capacity_(std::exchange(other.capacity_, 0)) {}
  Buffer& operator=(Buffer&&) = delete;
  ~Buffer() {
    if (data_ != nullptr) ::munmap(data_, capacity_);
  }

  // Makes room for more output; false when the size limit is reached.
  bool ensure_room() {
    if (size_ < capacity_) return true;
    if (capacity_ >= kMaxDecompressed) return false;
    grow(std::min(capacity_ * 2, kMaxDecompressed));
    return true;
  }
  std::uint8_t* tail() { return static_cast<std::uint8_t*>(data_) + size_; }
  std::size_t room() const { return capacity_ - size_; }
  void commit(std::size_t n) { size_ += n; }
  Bytes bytes() const { return Bytes(static_cast<const std::uint8_t*>(data_), size_); }

 private:
  void grow(std::size_t capacity) {
    void* p = data_ == nullptr ? ::mmap(nullptr, capacity, PROT_READ | PROT_WRITE,
                                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                               : ::mremap(data_, capacity_, capacity, MREMAP_MAYMOVE);
    if (p == MAP_FAILED) throw DecodeError{"out of memory for the decompressed kernel"};
    ::madvise(p, capacity, MADV_HUGEPAGE);  // a hint: failure only costs speed
    data_ = p;
    capacity_ = capacity;
  }

  void* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

enum class Codec { kGzip, kXz, kLzma, kZstd };

const char* codec_name(Codec c) {
  switch (c) {
    case Codec::kGzip:
      return "gzip";
    case Codec::kXz:
      return "xz";
    case Codec::kLzma:
      return "lzma";
    case Codec::kZstd:
      return "zstd";
  }
  return "?";
}

// Magic numbers as scripts/extract-vmlinux looks for them.
struct Magic {
  std::string_view bytes;
  Codec codec;
};

// lzma has no real magic: its properties byte, then a dictionary size whose low 16 bits are zero.
constexpr Magic kMagics[] = {
    {std::string_view("\3757zXZ\0", 6), Codec::kXz},
    {std::string_view("\x1f\x8b\x08", 3), Codec::kGzip},
    {std::string_view("\x28\xb5\x2f\xfd", 4), Codec::kZstd},
    {std::string_view("\x5d\0\0", 3), Codec::kLzma},
};

std::optional<Codec> codec_at(Bytes b) {
  for (const Magic& m : kMagics)
    if (starts_with(b, m.bytes)) return m.codec;
  return std::nullopt;
}

// Called with all output so far after each chunk; true stops decoding early (what we need, the
// BTF, sits in the first half of a vmlinux).
using EnoughFn = std::function<bool(Bytes)>;
constexpr std::size_t kDecodeChunk = std::size_t{4} << 20;

Buffer decompress_xz(Bytes in, std::size_t hint, const EnoughFn& enough) {
  lzma_stream s = LZMA_STREAM_INIT;
  // The auto decoder takes both .xz and legacy .lzma; without LZMA_CONCATENATED it stops at the
  // end of the stream, ignoring the 4-byte size the kernel build appends.
  if (lzma_auto_decoder(&s, kLzmaMemLimit, 0) != LZMA_OK) throw DecodeError{"liblzma init failed"};
  struct End {
    lzma_stream* s;
    ~End() { lzma_end(s); }
  } end{&s};
  Buffer out(hint);
  s.next_in = in.data();
  s.avail_in = in.size();
  for (;;) {
    if (!out.ensure_room()) throw DecodeError{"decompressed data exceeds 1 GiB"};
    const std::size_t room = std::min(out.room(), kDecodeChunk);
    s.next_out = out.tail();
    s.avail_out = room;
    const lzma_ret r = lzma_code(&s, LZMA_FINISH);
    out.commit(room - s.avail_out);
    switch (r) {
      case LZMA_OK:
        if (enough(out.bytes())) return out;
        continue;
      case LZMA_STREAM_END:
        return out;
      case LZMA_BUF_ERROR:
        throw DecodeError{"compressed data is truncated"};
      case LZMA_MEMLIMIT_ERROR:
      case LZMA_MEM_ERROR:
        throw DecodeError{"stream needs too much memory to decode"};
      case LZMA_FORMAT_ERROR:
        throw DecodeError{"not a valid stream header"};
      case LZMA_OPTIONS_ERROR:
        throw DecodeError{"unsupported compression options"};
      case LZMA_DATA_ERROR:
        throw DecodeError{"compressed data is corrupt"};
      default:
        throw DecodeError{"decoder error " + std::to_string(static_cast<int>(r))};
    }
  }
}

Buffer decompress_gzip(Bytes in, std::size_t hint, const EnoughFn& enough) {
  if (in.size() > UINT32_MAX) throw DecodeError{"compressed data too large"};
  z_stream z{};
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) throw DecodeError{"zlib init failed"};  // gzip only
  struct End {
    z_stream* z;
    ~End() { inflateEnd(z); }
  } end{&z};
  Buffer out(hint);
  z.next_in = const_cast<Bytef*>(in.data());  // zlib's API is not const-correct
  z.avail_in = static_cast<uInt>(in.size());
  for (;;) {
    if (!out.ensure_room()) throw DecodeError{"decompressed data exceeds 1 GiB"};
    const std::size_t room = std::min(out.room(), kDecodeChunk);
    z.next_out = out.tail();
    z.avail_out = static_cast<uInt>(room);
    const int r = inflate(&z, Z_NO_FLUSH);
    out.commit(room - z.avail_out);
    if (r == Z_STREAM_END) return out;
    if (enough(out.bytes())) return out;
    if (r == Z_OK) continue;
    if (r == Z_BUF_ERROR && z.avail_out == 0) continue;
    if (r == Z_BUF_ERROR) throw DecodeError{"compressed data is truncated"};
    throw DecodeError{std::string("compressed data is corrupt (") + (z.msg ? z.msg : "zlib error") +
                      ")"};
  }
}

Buffer decompress_zstd(Bytes in, std::size_t hint, const EnoughFn& enough) {
  std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> ctx(ZSTD_createDCtx(), &ZSTD_freeDCtx);
  if (!ctx) throw DecodeError{"zstd init failed"};
  Buffer out(hint);
  ZSTD_inBuffer input{in.data(), in.size(), 0};
  for (;;) {
    if (!out.ensure_room()) throw DecodeError{"decompressed data exceeds 1 GiB"};
    ZSTD_outBuffer output{out.tail(), std::min(out.room(), kDecodeChunk), 0};
    const std::size_t r = ZSTD_decompressStream(ctx.get(), &output, &input);
    if (ZSTD_isError(r))
      throw DecodeError{std::string("compressed data is corrupt (") + ZSTD_getErrorName(r) + ")"};
    out.commit(output.pos);
    if (r == 0) return out;  // end of the frame
    if (enough(out.bytes())) return out;
    if (input.pos == input.size && output.pos < output.size)
      throw DecodeError{"compressed data is truncated"};
  }
}

Buffer decompress(Codec codec, Bytes in, std::size_t hint, const EnoughFn& enough) {
  switch (codec) {
    case Codec::kXz:
    case Codec::kLzma:
      return decompress_xz(in, hint, enough);
    case Codec::kGzip:
      return decompress_gzip(in, hint, enough);
    case Codec::kZstd:
      return decompress_zstd(in, hint, enough);
  }
  throw DecodeError{"unknown codec"};
}

// The compressed kernel of an x86 bzImage, located through the boot protocol header
// (Documentation/x86/boot.rst); nullopt when the file has no such header.
std::optional<Bytes> bzimage_payload(Bytes image, const std::string& path) {
  if (image.size() < 0x250 || std::memcmp(image.data() + 0x202, "HdrS", 4) != 0)
    return std::nullopt;
  if (le16(image.data() + 0x206) < 0x208) return std::nullopt;  // no payload fields before 2.08
  const std::uint64_t setup_sects = image[0x1f1] != 0 ? image[0x1f1] : 4;
  const std::uint64_t start = (setup_sects + 1) * 512 + le32(image.data() + 0x248);
  const std::uint64_t length = le32(image.data() + 0x24c);
  if (start > image.size() || length > image.size() - start || length < 16) {
    throw Exception(path + ": kernel image payload (offset " + std::to_string(start) + ", " +
                    std::to_string(length) + " bytes) lies outside the " +
                    std::to_string(image.size()) + "-byte file: truncated image?");
  }
  return image.subspan(start, length);
}

struct Section {
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
};

// Finds a section by name in a 64-bit little-endian ELF, checking every offset read from the file.
std::optional<Section> elf_section(Bytes elf, std::string_view wanted, const std::string& what) {
  const auto corrupt = [&](const std::string& why) {
    return Exception(what + ": corrupt ELF: " + why);
  };
  if (elf.size() < 64) throw corrupt("shorter than an ELF header");
  if (elf[4] != 2) throw Exception(what + ": only 64-bit ELF kernels are supported");
  if (elf[5] != 1) throw Exception(what + ": only little-endian ELF kernels are supported");
  const std::uint8_t* h = elf.data();
  const std::uint64_t shoff = le64(h + 0x28);
  const std::uint64_t shentsize = le16(h + 0x3a);
  std::uint64_t shnum = le16(h + 0x3c);
  std::uint64_t shstrndx = le16(h + 0x3e);
  if (shoff == 0) throw corrupt("no section header table");
  if (shentsize < 64) throw corrupt("section header entries too small");
  if (shoff > elf.size() || elf.size() - shoff < shentsize)
    throw corrupt("section header table lies outside the file");
  const std::uint8_t* sh0 = elf.data() + shoff;
  if (shnum == 0) shnum = le64(sh0 + 0x20);             // real count in section 0's sh_size
  if (shstrndx == 0xffff) shstrndx = le32(sh0 + 0x28);  // SHN_XINDEX: real index in sh_link
  if (shnum > (elf.size() - shoff) / shentsize) throw corrupt("section header table is truncated");
  if (shstrndx >= shnum) throw corrupt("section name table index out of range");

  const auto header = [&](std::uint64_t i) { return elf.data() + shoff + i * shentsize; };
  const auto contents = [&](const std::uint8_t* sh) {
    const Section s{le64(sh + 0x18), le64(sh + 0x20)};
    if (le32(sh + 4) == 8 /* SHT_NOBITS */) return Section{};
    if (s.offset > elf.size() || s.size > elf.size() - s.offset)
      throw corrupt("section contents lie outside the file");
    return s;
  };
  const Section names = contents(header(shstrndx));
  for (std::uint64_t i = 0; i < shnum; ++i) {
    const std::uint8_t* sh = header(i);
    const std::uint64_t name = le32(sh);
    if (name >= names.size || names.size - name < wanted.size() + 1) continue;
    const std::uint8_t* n = elf.data() + names.offset + name;
    if (std::memcmp(n, wanted.data(), wanted.size()) != 0 || n[wanted.size()] != 0) continue;
    const Section s = contents(sh);
    if (s.size == 0) throw Exception(what + ": section " + std::string(wanted) + " is empty");
    return s;
  }
  return std::nullopt;
}

// Finds a complete BTF blob in a growing prefix of a vmlinux by its header: magic, version 1, no
// flags, a 24-byte header, types at offset 0 and strings right after them. That is how the .BTF
// of a compressed kernel is found before the ELF's section table (at its very end) is decoded.
class BtfScanner {
 public:
  // The blob's span once the prefix holds all of it.
  std::optional<Section> operator()(Bytes prefix) {
    static constexpr std::string_view kHeader("\x9f\xeb\x01\x00\x18\x00\x00\x00\x00\x00\x00\x00",
                                              12);
    while (next_ + 24 <= prefix.size()) {
      const void* hit =
          ::memmem(prefix.data() + next_, prefix.size() - next_, kHeader.data(), kHeader.size());
      if (hit == nullptr) {
        next_ = prefix.size() - std::min<std::size_t>(prefix.size(), 23);
        return std::nullopt;
      }
      const std::size_t at = static_cast<const std::uint8_t*>(hit) - prefix.data();
      if (prefix.size() - at < 24) return std::nullopt;  // header not all there yet
      const std::uint8_t* h = prefix.data() + at;
      const std::uint64_t type_len = le32(h + 12), str_off = le32(h + 16), str_len = le32(h + 20);
      if (str_off != type_len || str_len == 0) {
        next_ = at + 1;
        continue;
      }
      next_ = at;
      const std::uint64_t size = 24 + str_off + str_len;
      if (prefix.size() - at < size) return std::nullopt;  // wait for the rest
      return Section{at, size};
    }
    return std::nullopt;
  }

 private:
  std::size_t next_ = 0;
};

// The loadable segments, so a file offset can be turned into an offset from _text: x86-64
// vmlinux's first PT_LOAD starts at _text (the per-cpu segment, linked at 0, comes later).
struct LoadSegment {
  std::uint64_t offset, vaddr, filesz;
};
std::vector<LoadSegment> load_segments(Bytes elf) {
  std::vector<LoadSegment> out;
  const std::uint8_t* h = elf.data();
  const std::uint64_t phoff = le64(h + 0x20);
  const std::uint64_t phentsize = le16(h + 0x36), phnum = le16(h + 0x38);
  if (phentsize < 56 || phoff > elf.size() || phnum > (elf.size() - phoff) / phentsize) return out;
  for (std::uint64_t i = 0; i < phnum; ++i) {
    const std::uint8_t* ph = h + phoff + i * phentsize;
    if (le32(ph) == 1 /* PT_LOAD */)
      out.push_back({le64(ph + 0x08), le64(ph + 0x10), le64(ph + 0x20)});
  }
  return out;
}

// Every "Linux version <digit>... \n" string in the image (linux_banner and look-alikes, e.g.
// a copy from an earlier link pass), each with its offset from _text where the segments say.
std::vector<KernelBanner> find_banners(Bytes data) {
  static constexpr std::string_view kPrefix = "Linux version ";
  const std::vector<LoadSegment> segments = load_segments(data);
  const std::uint64_t text = segments.empty() ? 0 : segments.front().vaddr;
  std::vector<KernelBanner> out;
  const auto* p = data.data();
  const auto* const end = data.data() + data.size();
  while (p < end) {
    const void* hit = ::memmem(p, end - p, kPrefix.data(), kPrefix.size());
    if (hit == nullptr) break;
    const auto* b = static_cast<const std::uint8_t*>(hit);
    const auto* e = b + kPrefix.size();
    // The real banner continues with a release number; format strings and docs do not.
    if (e < end && *e >= '0' && *e <= '9') {
      const auto* limit = std::min(end, b + 512);
      while (e < limit && *e >= 0x20 && *e < 0x7f) ++e;
      if (e < end && *e == '\n') {
        KernelBanner banner{KernelTypes::kUnknownOffset,
                            std::string(reinterpret_cast<const char*>(b), e - b)};
        const std::uint64_t off = b - data.data();
        for (const LoadSegment& s : segments)
          if (off >= s.offset && off - s.offset < s.filesz)
            banner.text_offset = s.vaddr + (off - s.offset) - text;
        out.push_back(std::move(banner));
      }
    }
    p = b + 1;
  }
  return out;
}

// The loadable segments laid out from _text, as in memory (the per-cpu segment, linked at 0,
// is not part of the image's mapping).
std::vector<std::uint8_t> lay_out(Bytes elf, std::uint64_t& text_va, const std::string& what) {
  const std::vector<LoadSegment> segments = load_segments(elf);
  if (segments.empty()) throw Exception(what + ": ELF has no loadable segments");
  text_va = segments.front().vaddr;
  std::uint64_t end = text_va;
  for (const LoadSegment& s : segments)
    if (s.vaddr >= text_va && s.offset <= elf.size() && s.filesz <= elf.size() - s.offset)
      end = std::max(end, s.vaddr + s.filesz);
  if (end - text_va > kMaxDecompressed) throw Exception(what + ": implausible segment layout");
  std::vector<std::uint8_t> out(end - text_va);
  for (const LoadSegment& s : segments)
    if (s.vaddr >= text_va && s.offset <= elf.size() && s.filesz <= elf.size() - s.offset)
      std::memcpy(out.data() + (s.vaddr - text_va), elf.data() + s.offset, s.filesz);
  return out;
}

// Copies `ranges` (offsets from _text) out of a (possibly truncated) vmlinux.
std::vector<std::vector<std::uint8_t>> copy_ranges(Bytes elf, std::span<const ImageRange> ranges) {
  std::vector<std::vector<std::uint8_t>> out(ranges.size());
  if (ranges.empty() || elf.size() < 64) return out;
  const std::vector<LoadSegment> segments = load_segments(elf);
  if (segments.empty()) return out;
  const std::uint64_t text = segments.front().vaddr;
  for (std::size_t i = 0; i < ranges.size(); ++i) {
    const std::uint64_t va = text + ranges[i].text_offset;
    for (const LoadSegment& s : segments) {
      if (va < s.vaddr || va - s.vaddr > s.filesz || ranges[i].size > s.filesz - (va - s.vaddr))
        continue;
      const std::uint64_t off = s.offset + (va - s.vaddr);
      if (off > elf.size() || ranges[i].size > elf.size() - off) break;
      out[i].assign(elf.begin() + off, elf.begin() + off + ranges[i].size);
      break;
    }
  }
  return out;
}

}  // namespace

KernelImage read_kernel_image(const std::string& path, KernelImagePart part,
                              std::span<const ImageRange> ranges) {
  const InputFile file(path, kMaxDecompressed);
  const Bytes input = file.bytes();
  if (input.empty()) throw Exception(path + ": file is empty");
  if (input.size() < 24) {
    throw Exception(path + ": too small (" + std::to_string(input.size()) +
                    " bytes) to be BTF or a kernel image");
  }

  KernelImage image;
  const auto parse_btf = [&](Bytes raw, const std::string& what) {
    image.btf.assign(raw.begin(), raw.end());
    image.btf_origin = what;
  };
  const auto from_elf = [&](Bytes elf, const std::string& what) {
    const auto btf = elf_section(elf, ".BTF", what);
    if (!btf) {
      throw Exception(what +
                      ": ELF has no .BTF section (kernel built without CONFIG_DEBUG_INFO_BTF?)");
    }
    parse_btf(elf.subspan(btf->offset, btf->size), what + " .BTF");
    image.banners = find_banners(elf);
    if (part == KernelImagePart::kWhole) image.loaded = lay_out(elf, image.text_va, what);
    image.ranges = copy_ranges(elf, ranges);
  };

  // Raw BTF, either byte order (libbpf swaps); then ELF; then a compressed kernel.
  if (starts_with(input, "\x9f\xeb") || starts_with(input, "\xeb\x9f")) {
    parse_btf(input, path);
    image.ranges.resize(ranges.size());
    return image;
  }
  if (starts_with(input, kElfMagic)) {
    from_elf(input, path);
    return image;
  }

  if (const auto payload = bzimage_payload(input, path)) {
    const auto codec = codec_at(*payload);
    if (!codec) {
      throw Exception(path +
                      ": kernel image payload is not gzip, xz, lzma or zstd compressed "
                      "(bzip2, lzo and lz4 are not supported)");
    }
    // The kernel build appends the decompressed size as 4 little-endian bytes; trust it only as
    // far as a plausible compression ratio.
    const std::size_t hint =
        std::min<std::size_t>(le32(payload->data() + payload->size() - 4), payload->size() * 32);
    const std::string what = path + " (" + codec_name(*codec) + " payload)";
    try {
      BtfScanner scan;
      std::optional<Section> btf;
      const Buffer vmlinux = decompress(*codec, *payload, hint, [&](Bytes prefix) {
        return (btf = scan(prefix)).has_value() && part == KernelImagePart::kBtf;
      });
      if (!starts_with(vmlinux.bytes(), kElfMagic))
        throw Exception(what + ": decompressed kernel is not an ELF image");
      if (!btf || part == KernelImagePart::kWhole) {
        from_elf(vmlinux.bytes(), what);  // decoded whole: use the section table
      } else {
        parse_btf(vmlinux.bytes().subspan(btf->offset, btf->size), what + " .BTF");
        image.banners = find_banners(vmlinux.bytes());  // linux_banner is in .rodata, before .BTF
        image.ranges = copy_ranges(vmlinux.bytes(), ranges);
      }
    } catch (const DecodeError& e) {
      throw Exception(what + ": " + e.why);
    }
    return image;
  }

  // No boot header: look for a compressed stream the way scripts/extract-vmlinux does, which also
  // covers a plain vmlinux.xz/.gz/.zst.
  std::string first_error;
  int tried = 0;
  for (std::size_t pos = 0; pos + 4 <= input.size() && tried < kMaxPayloadCandidates; ++pos) {
    const Bytes rest = input.subspan(pos);
    const auto codec = codec_at(rest);
    if (!codec) continue;
    ++tried;
    const std::string what =
        path + " (" + codec_name(*codec) + " data at offset " + std::to_string(pos) + ")";
    try {
      const Buffer vmlinux = decompress(*codec, rest, rest.size() * 4, [](Bytes) { return false; });
      if (!starts_with(vmlinux.bytes(), kElfMagic)) {
        if (first_error.empty()) first_error = what + ": decompressed data is not an ELF image";
        continue;
      }
      from_elf(vmlinux.bytes(), what);
      return image;
    } catch (const DecodeError& e) {
      if (first_error.empty()) first_error = what + ": " + e.why;
    }
  }
  if (!first_error.empty()) throw Exception(first_error);
  throw Exception(path +
                  ": unrecognised format (not raw BTF, an ELF vmlinux, or a kernel image with a "
                  "gzip, xz, lzma or zstd payload)");
}

}  // namespace imee
