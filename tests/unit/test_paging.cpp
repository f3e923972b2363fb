// Page-walker tests on hand-built page tables: every page size, NX, not-present and reserved
// bits at each level, non-canonical addresses, GPAs beyond RAM, 4- and 5-level paging.
#include <gtest/gtest.h>

#include "../support/page_table_builder.hpp"
#include "imee/paging.hpp"
#include "imee/soft_backend.hpp"

namespace imee {
namespace {

using test::PageTableBuilder;
constexpr std::uint64_t MiB = 1ull << 20, GiB = 1ull << 30;

class PagingTest : public ::testing::TestWithParam<int> {
 protected:
  PagingTest() : b_(16 * MiB, GetParam()) {}
  PagingMode mode() const { return GetParam() == 5 ? PagingMode::k5Level : PagingMode::k4Level; }
  AddressSpace space() const { return {b_.root(), mode(), true}; }
  Expected<Translation> walk(std::uint64_t va) {
    ram_ = GuestRam::view(b_.ram());
    return translate(ram_, space(), va);
  }
  PageTableBuilder b_;
  GuestRam ram_ = GuestRam::view({});
};

TEST_P(PagingTest, FourKilobytePage) {
  const std::uint64_t va = 0xffff888000123456ull;
  b_.map(va & ~0xfffull, 0x345000, 4096, PageTableBuilder::P | PageTableBuilder::W);
  auto t = walk(va);
  ASSERT_TRUE(t.ok()) << t.error().describe();
  EXPECT_EQ(t->gpa, 0x345456u);
  EXPECT_EQ(t->page_size, 4096u);
  EXPECT_TRUE(t->writable);
  EXPECT_FALSE(t->user);  // leaf lacks U
  EXPECT_TRUE(t->executable);
}

TEST_P(PagingTest, TwoMegabytePage) {
  const std::uint64_t va = 0xffffffff81000000ull;
  b_.map(va, 0x1400000, 2 * MiB, PageTableBuilder::P | PageTableBuilder::NX);
  auto t = walk(va + 0x1abcde);
  ASSERT_TRUE(t.ok()) << t.error().describe();
  EXPECT_EQ(t->gpa, 0x1400000u + 0x1abcde);
  EXPECT_EQ(t->page_size, 2 * MiB);
  EXPECT_FALSE(t->executable);
  EXPECT_FALSE(t->writable);
}

TEST_P(PagingTest, OneGigabytePage) {
  const std::uint64_t va = 0x0000004000000000ull;  // user half, 1 GiB aligned
  PageTableBuilder big(16 * MiB, GetParam());
  big.map(va, 2 * GiB, GiB, PageTableBuilder::P | PageTableBuilder::U);
  const GuestRam ram = GuestRam::view(big.ram());
  auto t = translate(ram, {big.root(), mode(), true}, va + 0x12345678);
  ASSERT_TRUE(t.ok()) << t.error().describe();
  EXPECT_EQ(t->gpa, 2 * GiB + 0x12345678);
  EXPECT_EQ(t->page_size, GiB);
  EXPECT_TRUE(t->user);
}

TEST_P(PagingTest, NxInAnUpperLevelMakesTheLeafNonExecutable) {
  const std::uint64_t va = 0x00007f0000001000ull;
  b_.map(va, 0x200000, 4096, PageTableBuilder::P, PageTableBuilder::P | PageTableBuilder::NX);
  auto t = walk(va);
  ASSERT_TRUE(t.ok());
  EXPECT_FALSE(t->executable);
}

TEST_P(PagingTest, NxBitIsReservedWithoutEferNxe) {
  const std::uint64_t va = 0x00007f0000001000ull;
  b_.map(va, 0x200000, 4096, PageTableBuilder::P | PageTableBuilder::NX);
  ram_ = GuestRam::view(b_.ram());
  auto t = translate(ram_, {b_.root(), mode(), false}, va);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().fault, Fault::kReservedBit);
  EXPECT_EQ(t.error().level, 1);
}

TEST_P(PagingTest, NotPresentAtEachLevel) {
  const std::uint64_t va = 0x00007f1234567000ull;
  for (int level = GetParam(); level >= 1; --level) {
    PageTableBuilder b(16 * MiB, GetParam());
    b.map(va, 0x300000, 4096, PageTableBuilder::P);
    const std::uint64_t slot = b.entry_gpa(va, level);
    b.set_entry(slot, b.entry(slot) & ~PageTableBuilder::P);
    const GuestRam ram = GuestRam::view(b.ram());
    auto t = translate(ram, {b.root(), mode(), true}, va);
    ASSERT_FALSE(t.ok()) << "level " << level;
    EXPECT_EQ(t.error().fault, Fault::kNotPresent);
    EXPECT_EQ(t.error().level, level);
    EXPECT_EQ(t.error().gpa, slot);
    EXPECT_EQ(t.error().va, va);
  }
}

TEST_P(PagingTest, LargePageBitIsReservedAtTopLevels) {
  const std::uint64_t va = 0x00007f1234567000ull;
  b_.map(va, 0x300000, 4096, PageTableBuilder::P);
  const std::uint64_t slot = b_.entry_gpa(va, 4);
  b_.set_entry(slot, b_.entry(slot) | PageTableBuilder::PS);
  auto t = walk(va);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().fault, Fault::kReservedBit);
  EXPECT_EQ(t.error().level, 4);
}

TEST_P(PagingTest, ReservedBitsInLargePages) {
  const std::uint64_t va = 0xffffffff81000000ull;
  b_.map(va, 0x1400000 | (1ull << 13), 2 * MiB, PageTableBuilder::P);  // bit 13: reserved
  auto t = walk(va);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().fault, Fault::kReservedBit);
  EXPECT_EQ(t.error().level, 2);
}

TEST_P(PagingTest, TableBeyondRamIsReported) {
  const std::uint64_t va = 0x00007f1234567000ull;
  b_.map(va, 0x300000, 4096, PageTableBuilder::P);
  const std::uint64_t slot = b_.entry_gpa(va, 2);
  b_.set_entry(slot, (512 * GiB) | PageTableBuilder::P);  // PT far beyond 16 MiB of RAM
  auto t = walk(va);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().fault, Fault::kBeyondRam);
  EXPECT_EQ(t.error().level, 1);
  EXPECT_EQ(t.error().gpa, 512 * GiB + PageTableBuilder::index(va, 1) * 8);
}

TEST_P(PagingTest, NonCanonicalAddresses) {
  const std::uint64_t hole = GetParam() == 5 ? 0x0100000000000000ull : 0x0000800000000000ull;
  auto t = walk(hole);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().fault, Fault::kNonCanonical);
  EXPECT_EQ(t.error().va, hole);
}

INSTANTIATE_TEST_SUITE_P(Levels, PagingTest, ::testing::Values(4, 5),
                         [](const auto& info) { return std::to_string(info.param) + "level"; });

TEST(PagingModes, FiveLevelUsesBits56To48) {
  // Bit 48 set, bits 63:49 clear: canonical with 57-bit addresses only, PML5 index 1.
  const std::uint64_t va = 0x0001000000000000ull;
  PageTableBuilder b(16 * MiB, 5);
  b.map(va, 0x400000, 4096, PageTableBuilder::P);
  const GuestRam ram = GuestRam::view(b.ram());
  EXPECT_TRUE(translate(ram, {b.root(), PagingMode::k5Level, true}, va).ok());
  EXPECT_EQ(translate(ram, {b.root(), PagingMode::k4Level, true}, va).error().fault,
            Fault::kNonCanonical);
  EXPECT_EQ(PageTableBuilder::index(va, 5), 1u);
}

// Reads through the soft backend: page crossings, faults naming the first failing VA.
TEST(SoftBackendRead, CrossesPagesAndReportsTheFirstFailingVa) {
  PageTableBuilder b(16 * MiB, 4);
  const std::uint64_t va = 0xffffc90000000000ull;
  b.map(va, 0x500000, 4096, PageTableBuilder::P);
  b.map(va + 4096, 0x800000, 4096, PageTableBuilder::P);  // not contiguous physically
  b.fill(0x500000, 4096, 1);
  b.fill(0x800000, 4096, 2);
  const GuestRam ram = GuestRam::view(b.ram());
  SoftBackend soft(ram);
  const AddressSpace as{b.root(), PagingMode::k4Level, true};

  std::vector<std::byte> buf(100);
  ASSERT_TRUE(soft.read(as, va + 4046, buf).ok());
  for (int i = 0; i < 50; ++i) EXPECT_EQ(buf[i], b.bytes()[0x500000 + 4046 + i]);
  for (int i = 50; i < 100; ++i) EXPECT_EQ(buf[i], b.bytes()[0x800000 + i - 50]);

  std::vector<std::byte> big(3 * 4096);
  Status s = soft.read(as, va + 10, big);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().fault, Fault::kNotPresent);
  EXPECT_EQ(s.error().va, va + 2 * 4096);  // the first byte of the unmapped third page

  std::vector<std::byte> one(1);
  EXPECT_EQ(soft.read(as, ~0ull, std::span(one.data(), 2)).error().fault, Fault::kBadLength);
  EXPECT_EQ(soft.read(as, va, std::span(one.data(), kMaxReadLength + 1)).error().fault,
            Fault::kBadLength);
  EXPECT_TRUE(soft.read(as, va, std::span(one.data(), 0)).ok());
  EXPECT_EQ(soft.read_physical(16 * MiB - 4, std::span(buf.data(), 8)).error().fault,
            Fault::kBeyondRam);
}

}  // namespace
}  // namespace imee
