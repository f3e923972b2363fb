// The RAM-unchanged check the backend tests rely on must see every change.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "../support/ram_diff.hpp"

namespace imee::test {
namespace {

TEST(RamSnapshot, SeesAnyChangeAndTellsAccessedDirtyBitsApart) {
  std::vector<std::byte> ram(4 * 4096);
  const std::uint64_t entry = 0x1234000 | 1;  // a present page-table entry in page 1
  std::memcpy(ram.data() + 4096 + 8, &entry, 8);
  const RamSnapshot snap({std::span<const std::byte>(ram)});
  EXPECT_EQ(snap.diff().other_pages + snap.diff().ad_only_pages, 0u);

  const std::uint64_t accessed = entry | 0x20;  // the A bit, as a page walk sets it
  std::memcpy(ram.data() + 4096 + 8, &accessed, 8);
  EXPECT_EQ(snap.diff().ad_only_pages, 1u);
  EXPECT_EQ(snap.diff().other_pages, 0u);

  ram[3 * 4096 + 4095] = std::byte{1};  // any other byte
  EXPECT_EQ(snap.diff().other_pages, 1u);
  EXPECT_EQ(snap.diff().first_other, 3u);

  const std::uint64_t not_present = 0x20;  // bit 5 of a qword that is no present entry
  std::memcpy(ram.data() + 16, &not_present, 8);
  EXPECT_EQ(snap.diff().other_pages, 2u);
}

TEST(RamSnapshot, ExcusesOnlyAccessedDirtyBitsGained) {
  std::vector<std::byte> ram(2 * 4096);
  const std::uint64_t entry = 0x5678000 | 0x20 | 1;  // present, Accessed
  std::memcpy(ram.data() + 4096 + 16, &entry, 8);
  const RamSnapshot snap({std::span<const std::byte>(ram)});
  const std::uint64_t dirty = entry | 0x40;  // gains D: excused
  std::memcpy(ram.data() + 4096 + 16, &dirty, 8);
  EXPECT_EQ(snap.diff().ad_only_pages, 1u);
  EXPECT_EQ(snap.diff().other_pages, 0u);
  const std::uint64_t lost = (entry & ~std::uint64_t{0x20}) | 0x40;  // loses A, gains D: not
  std::memcpy(ram.data() + 4096 + 16, &lost, 8);
  EXPECT_EQ(snap.diff().ad_only_pages, 0u);
  EXPECT_EQ(snap.diff().other_pages, 1u);
}

}  // namespace
}  // namespace imee::test
