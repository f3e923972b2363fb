// Kernel struct layouts from BTF, read through libbpf.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

struct btf;  // libbpf

namespace imee {

class KernelTypes {
 public:
  // Loads BTF from a raw BTF file (a copy of /sys/kernel/btf/vmlinux), an ELF vmlinux with a .BTF
  // section, or a compressed kernel image (bzImage/vmlinuz with a gzip, xz, lzma or zstd payload).
  // Throws imee::Exception with a clear message for missing, unrecognised or corrupt input.
  // `ranges`: spans of the image (offsets from _text) to keep a copy of, as linked.
  struct ImageRange {
    std::uint64_t text_offset = 0, size = 0;
  };
  static KernelTypes load(const std::string& path, const std::vector<ImageRange>& ranges = {});
  // The bytes of load()'s ranges[i]; empty where the input does not hold it (raw BTF).
  const std::vector<std::uint8_t>& image_range(std::size_t i) const { return ranges_.at(i); }
  // Parses raw BTF bytes (e.g. the kernel's .BTF read from guest memory); `origin` names them in
  // messages. Throws imee::Exception on corrupt input.
  static KernelTypes from_btf(std::span<const std::uint8_t> raw, const std::string& origin);

  KernelTypes(KernelTypes&&) noexcept;
  KernelTypes& operator=(KernelTypes&&) noexcept;
  ~KernelTypes();

  struct Member {
    std::uint64_t offset = 0;  // bytes from the start of the outer struct
    std::uint64_t size = 0;    // bytes
  };
  // A member of a struct or union, searched through anonymous nested structs/unions. Bitfields are
  // not supported (returns nullopt).
  std::optional<Member> member(std::string_view type_name, std::string_view member_name) const;
  std::optional<std::uint64_t> type_size(std::string_view type_name) const;

  // "Linux version ..." strings in the image's data (none when loaded from raw BTF), each with
  // its offset from the image's _text when the ELF's segments tell it.
  static constexpr std::uint64_t kUnknownOffset = ~0ull;
  struct Banner {
    std::uint64_t text_offset = kUnknownOffset;
    std::string text;
  };
  const std::vector<Banner>& banners() const { return banners_; }
  // The banner at `text_offset` from _text (pass linux_banner's offset), or "" if none is there.
  std::string banner_at(std::uint64_t text_offset) const;

  // The parsed BTF (libbpf's), for walking every type (e.g. the ISF exporter); owned by this.
  const struct btf* btf() const { return btf_.get(); }

 private:
  struct BtfDeleter {
    void operator()(struct btf* btf) const;
  };
  KernelTypes() = default;
  std::unique_ptr<struct btf, BtfDeleter> btf_;
  std::vector<Banner> banners_;
  std::vector<std::vector<std::uint8_t>> ranges_;
};

}  // namespace imee
