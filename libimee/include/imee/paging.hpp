// x86-64 address translation: one page-table walker, used by every path that walks.
#pragma once

#include <cstdint>

#include "imee/address_space.hpp"
#include "imee/error.hpp"
#include "imee/guest_ram.hpp"

namespace imee {

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
