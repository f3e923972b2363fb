// The kernel ImEE's pure EPT logic (kernel/imee/ept_logic.h), built in user space and checked
// against the Intel SDM's definitions (vol. 3C: 29.3.2 EPT entries, 25.6.11 EPTP, table 28-7
// EPT-violation exit qualification), written out by hand here.
#include <gtest/gtest.h>

#define IMEE_EPT_USER
#include "../../kernel/imee/ept_logic.h"

namespace {

constexpr std::uint64_t kRead = 1, kWrite = 2, kFetch = 4, kGlaValid = 1u << 7,
                        kTranslated = 1u << 8;

TEST(EptLogic, EntriesFollowTheSdm) {
  // Leaf: address, R/W/X in bits 2:0, memory type WB (6) in bits 5:3, ignore-PAT bit 6.
  EXPECT_EQ(imee_ept_leaf(0x12345000, IMEE_EPT_R), 0x12345000ull | 1 | (6 << 3) | (1 << 6));
  EXPECT_EQ(imee_ept_leaf(0x7000, IMEE_EPT_X), 0x7000ull | 4 | 0x30 | 0x40);  // execute-only
  // Address bits outside 51:12 never leak into the entry; permissions outside 2:0 neither.
  EXPECT_EQ(imee_ept_leaf(0xfff0000000001fffull, IMEE_EPT_R | (1ull << 7)),
            0x0000000000001000ull | 1 | 0x70);
  // Non-leaf: read, write, execute; no memory type.
  EXPECT_EQ(imee_ept_table_entry(0xabc000), 0xabc000ull | 7);
}

TEST(EptLogic, EptpHasAccessedDirtyFlagsOff) {
  const std::uint64_t eptp = imee_eptp(0x1234000);
  EXPECT_EQ(eptp & 7, 6u);                  // paging structures write-back
  EXPECT_EQ((eptp >> 3) & 7, 3u);           // page-walk length 4, minus 1
  EXPECT_EQ(eptp & (1ull << 6), 0u);        // A/D off: walks are reads, not writes
  EXPECT_EQ(eptp & ~0xfffull, 0x1234000u);  // the PML4
}

TEST(EptLogic, IndexesSplitTheGfnNineBitsPerLevel) {
  const std::uint64_t gfn = (0x1aull << 27) | (0x155ull << 18) | (0x0aaull << 9) | 0x1ff;
  EXPECT_EQ(imee_ept_index(gfn, 1), 0x1ffu);
  EXPECT_EQ(imee_ept_index(gfn, 2), 0x0aau);
  EXPECT_EQ(imee_ept_index(gfn, 3), 0x155u);
  EXPECT_EQ(imee_ept_index(gfn, 4), 0x1au);
}

TEST(EptLogic, TargetMemoryIsOnlyEverRead) {
  EXPECT_EQ(imee_classify(IMEE_REGION_TARGET, kRead | kGlaValid | kTranslated), IMEE_MAP_TARGET);
  // a page walk reading a paging-structure entry
  EXPECT_EQ(imee_classify(IMEE_REGION_TARGET, kRead | kGlaValid), IMEE_MAP_TARGET);
  // the walk wants to set an Accessed bit: never done, reported
  EXPECT_EQ(imee_classify(IMEE_REGION_TARGET, kWrite | kGlaValid), IMEE_STOP_NEEDS_A_BIT);
  // a store to target memory, or one without a linear address
  EXPECT_EQ(imee_classify(IMEE_REGION_TARGET, kWrite | kGlaValid | kTranslated),
            IMEE_STOP_FORBIDDEN);
  EXPECT_EQ(imee_classify(IMEE_REGION_TARGET, kWrite), IMEE_STOP_FORBIDDEN);
  // executing target code
  EXPECT_EQ(imee_classify(IMEE_REGION_TARGET, kFetch | kGlaValid | kTranslated),
            IMEE_STOP_FORBIDDEN);
  EXPECT_EQ(imee_classify(IMEE_REGION_TARGET, kFetch | kRead), IMEE_STOP_FORBIDDEN);
}

TEST(EptLogic, TheAgentsPageOnlyExecutes) {
  EXPECT_EQ(imee_classify(IMEE_REGION_AGENT, kFetch | kGlaValid | kTranslated), IMEE_MAP_AGENT);
  EXPECT_EQ(imee_classify(IMEE_REGION_AGENT, kRead | kGlaValid | kTranslated),
            IMEE_STOP_BLIND_SPOT);
  EXPECT_EQ(imee_classify(IMEE_REGION_AGENT, kWrite | kGlaValid | kTranslated),
            IMEE_STOP_BLIND_SPOT);
  EXPECT_EQ(imee_classify(IMEE_REGION_AGENT, kRead | kGlaValid), IMEE_STOP_BLIND_SPOT);
}

TEST(EptLogic, OwnPagesMapAndEverythingElseIsNoGpa) {
  for (std::uint64_t q : {kRead, kWrite, kFetch, kRead | kGlaValid | kTranslated}) {
    EXPECT_EQ(imee_classify(IMEE_REGION_LOCAL, q), IMEE_MAP_LOCAL) << q;
    EXPECT_EQ(imee_classify(IMEE_REGION_NONE, q), IMEE_STOP_NO_GPA) << q;
  }
}

}  // namespace
