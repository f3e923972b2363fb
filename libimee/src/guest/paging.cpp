#include "imee/paging.hpp"

namespace imee {

namespace {

// Reserved bits of a large-page leaf between the PAT bit (12) and the frame address.
constexpr std::uint64_t kReserved2M = 0x1fe000ull;    // bits 20:13
constexpr std::uint64_t kReserved1G = 0x3fffe000ull;  // bits 29:13
constexpr std::uint64_t kFrame2M = 0x000fffffffe00000ull;
constexpr std::uint64_t kFrame1G = 0x000fffffc0000000ull;

// One 8-byte load: a PTE the guest is rewriting is seen whole, old or new, never torn.
inline std::uint64_t load_entry(const std::byte* p) {
  return __atomic_load_n(reinterpret_cast<const std::uint64_t*>(p), __ATOMIC_RELAXED);
}

}  // namespace

bool is_canonical(std::uint64_t va, PagingMode mode) {
  const int bits = mode == PagingMode::k5Level ? 57 : 48;
  const auto top = static_cast<std::int64_t>(va) >> (bits - 1);
  return top == 0 || top == -1;
}

Expected<Translation> translate(const GuestRam& ram, const AddressSpace& space, std::uint64_t va) {
  if (!is_canonical(va, space.mode)) return Error{Fault::kNonCanonical, va, 0, 0};

  std::uint64_t table = space.root & pte::kAddressMask;
  bool writable = true, user = true, executable = true;
  for (int level = static_cast<int>(space.mode); level >= 1; --level) {
    const int shift = 12 + 9 * (level - 1);
    const std::uint64_t entry_gpa = table + ((va >> shift) & 511) * 8;
    const std::byte* p = ram.host(entry_gpa, 8);
    if (p == nullptr) return Error{Fault::kBeyondRam, va, entry_gpa, level};
    const std::uint64_t entry = load_entry(p);

    if (!(entry & pte::kPresent)) return Error{Fault::kNotPresent, va, entry_gpa, level};
    if (!space.nxe && (entry & pte::kNoExecute))
      return Error{Fault::kReservedBit, va, entry_gpa, level};
    writable = writable && (entry & pte::kWritable);
    user = user && (entry & pte::kUser);
    executable = executable && !(entry & pte::kNoExecute);

    const bool large = entry & pte::kLargePage;
    if (large && level >= 4) return Error{Fault::kReservedBit, va, entry_gpa, level};
    if (large && level == 3) {
      if (entry & kReserved1G) return Error{Fault::kReservedBit, va, entry_gpa, level};
      return Translation{(entry & kFrame1G) | (va & ((1ull << 30) - 1)), 1ull << 30, writable, user,
                         executable};
    }
    if (large && level == 2) {
      if (entry & kReserved2M) return Error{Fault::kReservedBit, va, entry_gpa, level};
      return Translation{(entry & kFrame2M) | (va & ((1ull << 21) - 1)), 1ull << 21, writable, user,
                         executable};
    }
    table = entry & pte::kAddressMask;
  }
  return Translation{table | (va & (kPageSize - 1)), kPageSize, writable, user, executable};
}

}  // namespace imee
