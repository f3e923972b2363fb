// What a virtual address is translated in, and what a translation gives: the vocabulary every
// layer above guest RAM shares (the page walker, the backends, the Linux layer).
#pragma once

#include <cstdint>

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

}  // namespace imee
