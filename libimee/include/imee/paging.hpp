// x86-64 address translation: one page-table walker, used by every path that walks.
#pragma once

#include <cstdint>

#include "imee/error.hpp"
#include "imee/guest_ram.hpp"

namespace imee {

inline constexpr std::uint64_t kPageSize = 4096;

enum class PagingMode : std::uint8_t { k4Level = 4, k5Level = 5 };

// An address space: the GPA of its top-level table plus the paging controls that change how
// entries are read. For Linux, CR3 with KPTI's user bit (12) and PCID bits cleared.
struct AddressSpace {
  std::uint64_t root = 0;
  PagingMode mode = PagingMode::k4Level;
  bool nxe = true;  // EFER.NXE: bit 63 is NX rather than reserved
  friend bool operator==(const AddressSpace&, const AddressSpace&) = default;
};

struct Translation {
  std::uint64_t gpa = 0;
  std::uint64_t page_size = kPageSize;  // 4 KiB, 2 MiB or 1 GiB
  bool writable = false;
  bool user = false;
  bool executable = false;
};

// Entry bits (Intel SDM vol. 3, 4.5).
namespace pte {
inline constexpr std::uint64_t kPresent = 1ull << 0;
inline constexpr std::uint64_t kWritable = 1ull << 1;
inline constexpr std::uint64_t kUser = 1ull << 2;
inline constexpr std::uint64_t kAccessed = 1ull << 5;
inline constexpr std::uint64_t kDirty = 1ull << 6;
inline constexpr std::uint64_t kLargePage = 1ull << 7;  // PS: 1 GiB at level 3, 2 MiB at level 2
inline constexpr std::uint64_t kNoExecute = 1ull << 63;
inline constexpr std::uint64_t kAddressMask = 0x000ffffffffff000ull;  // bits 51:12
}  // namespace pte

bool is_canonical(std::uint64_t va, PagingMode mode);

// Walks `space`'s page tables in `ram` as the MMU would for a supervisor read. No caching: every
// call reads the guest's current entries, each with one 8-byte load.
Expected<Translation> translate(const GuestRam& ram, const AddressSpace& space, std::uint64_t va);

}  // namespace imee
