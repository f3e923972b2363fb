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
  // With KernelImagePart::kWhole: the image as the kernel is laid out in memory from _text
  // (the ELF's loadable segments at their addresses, the per-cpu segment left out), and the
  // link-time address of _text.
  std::vector<std::uint8_t> loaded;
  std::uint64_t text_va = 0;
  // The bytes of each range asked for, as linked (before KASLR relocation); empty where the
  // image does not hold the range (raw BTF, or beyond what was decoded).
  std::vector<std::vector<std::uint8_t>> ranges;
};

enum class KernelImagePart { kBtf, kWhole };

// Reads a raw BTF file (a copy of /sys/kernel/btf/vmlinux), an ELF vmlinux with a .BTF section,
// or a compressed kernel image (bzImage/vmlinuz with a gzip, xz, lzma or zstd payload). Throws
// imee::Exception with a clear message for missing, unrecognised or corrupt input.
// `part`: kBtf decodes a compressed image only up to its .BTF, kWhole all of it (`loaded`).
// `ranges`: spans of the image, by offset from _text, to copy out (e.g. sys_call_table's initial
// contents); with kBtf they must lie before the .BTF.
KernelImage read_kernel_image(const std::string& path, KernelImagePart part = KernelImagePart::kBtf,
                              std::span<const ImageRange> ranges = {});

}  // namespace imee
