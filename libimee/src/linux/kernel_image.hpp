// What libimee takes from a guest kernel's image: its BTF and its "Linux version" banners.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "imee/kernel_types.hpp"

namespace imee {

using KernelBanner = KernelTypes::Banner;

using ImageRange = KernelTypes::ImageRange;

struct KernelImage {
  std::vector<std::uint8_t> btf;  // the raw .BTF bytes
  std::string btf_origin;         // where they came from, for messages
  std::vector<KernelBanner> banners;
  // The bytes of each range asked for, as linked (before KASLR relocation); empty where the
  // image does not hold the range (raw BTF, or beyond what was decoded).
  std::vector<std::vector<std::uint8_t>> ranges;
};

// Reads a raw BTF file (a copy of /sys/kernel/btf/vmlinux), an ELF vmlinux with a .BTF section,
// or a compressed kernel image (bzImage/vmlinuz with a gzip, xz, lzma or zstd payload). Throws
// imee::Exception with a clear message for missing, unrecognised or corrupt input.
// `ranges`: spans of the image, by offset from _text, to copy out (e.g. sys_call_table's initial
// contents); a compressed image is decoded only up to its .BTF, so ranges must lie before it.
KernelImage read_kernel_image(const std::string& path, std::span<const ImageRange> ranges = {});

}  // namespace imee
