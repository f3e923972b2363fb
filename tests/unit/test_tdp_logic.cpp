// The kernel ImEE's pure TDP logic (kernel/imee/tdp_logic.h), built in user space and checked
// against the vendors' definitions, written out by hand here: Intel SDM vol. 3C (29.3.2 EPT
// entries, 25.6.11 EPTP, table 28-7 EPT-violation exit qualification) and AMD APM vol. 2
// (15.25.5 nested paging: long-mode page table entries, all accesses user accesses; 15.25.6
// the #NPF error code in EXITINFO1).
#include <gtest/gtest.h>

#define IMEE_TDP_USER
#include "../../kernel/imee/tdp_logic.h"

namespace {

constexpr std::uint64_t kRead = 1, kWrite = 2, kFetch = 4, kGlaValid = 1u << 7,
                        kTranslated = 1u << 8;
// #NPF error code bits
constexpr std::uint64_t kNpfPresent = 1, kNpfWrite = 2, kNpfUser = 4, kNpfFetch = 16,
                        kNpfFinal = 1ull << 32, kNpfWalk = 1ull << 33;
constexpr bool kExecOnly = true;    // EPT
constexpr bool kWalkCopies = true;  // AMD, batch activations

// An EPT violation, classified as the Intel ImEE does.
imee_action ept(imee_region region, std::uint64_t qual) {
  return imee_classify(region, imee_ept_access(qual), kExecOnly, !kWalkCopies);
}
// A #NPF, classified as the AMD ImEE does in poll mode (no copies of page-table pages)...
imee_action npt(imee_region region, std::uint64_t error_code) {
  return imee_classify(region, imee_npf_access(error_code), !kExecOnly, !kWalkCopies);
}
// ... and in batch mode.
imee_action npt_batch(imee_region region, std::uint64_t error_code) {
  return imee_classify(region, imee_npf_access(error_code), !kExecOnly, kWalkCopies);
}

TEST(TdpLogic, EptEntriesFollowTheSdm) {
  // Leaf: address, R/W/X in bits 2:0, memory type WB (6) in bits 5:3, ignore-PAT bit 6.
  EXPECT_EQ(imee_tdp_leaf(IMEE_TDP_EPT, 0x12345000, IMEE_PERM_R),
            0x12345000ull | 1 | (6 << 3) | (1 << 6));
  EXPECT_EQ(imee_tdp_leaf(IMEE_TDP_EPT, 0x7000, IMEE_PERM_X), 0x7000ull | 4 | 0x30 | 0x40);
  // Address bits outside 51:12 never leak into the entry; permissions outside 2:0 neither.
  EXPECT_EQ(imee_tdp_leaf(IMEE_TDP_EPT, 0xfff0000000001fffull, IMEE_PERM_R | (1u << 7)),
            0x0000000000001000ull | 1 | 0x70);
  // Non-leaf: read, write, execute; no memory type.
  EXPECT_EQ(imee_tdp_table_entry(IMEE_TDP_EPT, 0xabc000), 0xabc000ull | 7);
  // Present: any of R/W/X (an execute-only leaf is present).
  EXPECT_TRUE(imee_tdp_present(IMEE_TDP_EPT, 0x7000ull | 4));
  EXPECT_FALSE(imee_tdp_present(IMEE_TDP_EPT, 0x7000ull | 0x70));
}

TEST(TdpLogic, NptEntriesFollowTheApm) {
  constexpr std::uint64_t P = 1, RW = 2, US = 4, NX = 1ull << 63;
  // Target memory: present, user (every NPT access is one), read-only, no-execute.
  EXPECT_EQ(imee_tdp_leaf(IMEE_TDP_NPT, 0x12345000, IMEE_PERM_R), 0x12345000ull | P | US | NX);
  // The agent's page: NPT has no execute-only, so executable means readable too.
  EXPECT_EQ(imee_tdp_leaf(IMEE_TDP_NPT, 0x7000, IMEE_PERM_X), 0x7000ull | P | US);
  // The shell's own pages.
  EXPECT_EQ(imee_tdp_leaf(IMEE_TDP_NPT, 0x8000, IMEE_PERM_RWX), 0x8000ull | P | RW | US);
  // No memory-type bits (PWT 3, PCD 4, PAT 7): write-back through the host's PAT; no address
  // bits outside 51:12.
  EXPECT_EQ(imee_tdp_leaf(IMEE_TDP_NPT, 0xfff0000000001fffull, IMEE_PERM_R),
            0x1000ull | P | US | NX);
  // Non-leaf: present, writable, user; executable (the leaf decides).
  EXPECT_EQ(imee_tdp_table_entry(IMEE_TDP_NPT, 0xabc000), 0xabc000ull | P | RW | US);
  // Present: the P bit alone.
  EXPECT_TRUE(imee_tdp_present(IMEE_TDP_NPT, 0x7000ull | P));
  EXPECT_FALSE(imee_tdp_present(IMEE_TDP_NPT, 0x7000ull | RW | US | NX));
}

TEST(TdpLogic, EptpHasAccessedDirtyFlagsOff) {
  const std::uint64_t eptp = imee_eptp(0x1234000);
  EXPECT_EQ(eptp & 7, 6u);                  // paging structures write-back
  EXPECT_EQ((eptp >> 3) & 7, 3u);           // page-walk length 4, minus 1
  EXPECT_EQ(eptp & (1ull << 6), 0u);        // A/D off: walks are reads, not writes
  EXPECT_EQ(eptp & ~0xfffull, 0x1234000u);  // the PML4
}

TEST(TdpLogic, IndexesSplitTheGfnNineBitsPerLevel) {
  const std::uint64_t gfn = (0x1aull << 27) | (0x155ull << 18) | (0x0aaull << 9) | 0x1ff;
  EXPECT_EQ(imee_tdp_index(gfn, 1), 0x1ffu);
  EXPECT_EQ(imee_tdp_index(gfn, 2), 0x0aau);
  EXPECT_EQ(imee_tdp_index(gfn, 3), 0x155u);
  EXPECT_EQ(imee_tdp_index(gfn, 4), 0x1au);
}

TEST(TdpLogic, AccessesDecodeFromEitherVendor) {
  EXPECT_EQ(imee_ept_access(kRead | kGlaValid | kTranslated), IMEE_ACCESS_READ);
  EXPECT_EQ(imee_ept_access(kWrite | kGlaValid), IMEE_ACCESS_WRITE | IMEE_ACCESS_WALK);
  EXPECT_EQ(imee_ept_access(kWrite), IMEE_ACCESS_WRITE) << "no linear address: not a walk";
  EXPECT_EQ(imee_ept_access(kFetch | kRead), IMEE_ACCESS_FETCH | IMEE_ACCESS_READ);
  EXPECT_EQ(imee_npf_access(kNpfUser | kNpfFinal), IMEE_ACCESS_READ);
  EXPECT_EQ(imee_npf_access(kNpfPresent | kNpfUser | kNpfWrite | kNpfFinal), IMEE_ACCESS_WRITE);
  EXPECT_EQ(imee_npf_access(kNpfUser | kNpfFetch | kNpfFinal), IMEE_ACCESS_FETCH);
  EXPECT_EQ(imee_npf_access(kNpfUser | kNpfWalk), IMEE_ACCESS_READ | IMEE_ACCESS_WALK);
  EXPECT_EQ(imee_npf_access(kNpfPresent | kNpfUser | kNpfWrite | kNpfWalk),
            IMEE_ACCESS_WRITE | IMEE_ACCESS_WALK);
}

TEST(TdpLogic, TargetMemoryIsOnlyEverRead) {
  EXPECT_EQ(ept(IMEE_REGION_TARGET, kRead | kGlaValid | kTranslated), IMEE_MAP_TARGET);
  // a page walk reading a paging-structure entry
  EXPECT_EQ(ept(IMEE_REGION_TARGET, kRead | kGlaValid), IMEE_MAP_TARGET);
  // the walk wants to set an Accessed bit: never done, reported
  EXPECT_EQ(ept(IMEE_REGION_TARGET, kWrite | kGlaValid), IMEE_STOP_NEEDS_A_BIT);
  // a store to target memory, or one without a linear address
  EXPECT_EQ(ept(IMEE_REGION_TARGET, kWrite | kGlaValid | kTranslated), IMEE_STOP_FORBIDDEN);
  EXPECT_EQ(ept(IMEE_REGION_TARGET, kWrite), IMEE_STOP_FORBIDDEN);
  // executing target code
  EXPECT_EQ(ept(IMEE_REGION_TARGET, kFetch | kGlaValid | kTranslated), IMEE_STOP_FORBIDDEN);
  EXPECT_EQ(ept(IMEE_REGION_TARGET, kFetch | kRead), IMEE_STOP_FORBIDDEN);
  // the same rules on AMD
  EXPECT_EQ(npt(IMEE_REGION_TARGET, kNpfUser | kNpfFinal), IMEE_MAP_TARGET);
  EXPECT_EQ(npt(IMEE_REGION_TARGET, kNpfUser | kNpfWalk), IMEE_MAP_TARGET);
  EXPECT_EQ(npt(IMEE_REGION_TARGET, kNpfPresent | kNpfUser | kNpfWrite | kNpfWalk),
            IMEE_STOP_NEEDS_A_BIT);
  EXPECT_EQ(npt(IMEE_REGION_TARGET, kNpfPresent | kNpfUser | kNpfWrite | kNpfFinal),
            IMEE_STOP_FORBIDDEN);
  EXPECT_EQ(npt(IMEE_REGION_TARGET, kNpfPresent | kNpfUser | kNpfFetch | kNpfFinal),
            IMEE_STOP_FORBIDDEN);
  // With walk copies, only the walk's write changes: it gets a private copy, never the target.
  EXPECT_EQ(npt_batch(IMEE_REGION_TARGET, kNpfPresent | kNpfUser | kNpfWrite | kNpfWalk),
            IMEE_MAP_WALK_COPY);
  EXPECT_EQ(npt_batch(IMEE_REGION_TARGET, kNpfUser | kNpfWrite | kNpfWalk), IMEE_MAP_WALK_COPY);
  EXPECT_EQ(npt_batch(IMEE_REGION_TARGET, kNpfUser | kNpfWalk), IMEE_MAP_TARGET);
  EXPECT_EQ(npt_batch(IMEE_REGION_TARGET, kNpfUser | kNpfFinal), IMEE_MAP_TARGET);
  EXPECT_EQ(npt_batch(IMEE_REGION_TARGET, kNpfPresent | kNpfUser | kNpfWrite | kNpfFinal),
            IMEE_STOP_FORBIDDEN);
  EXPECT_EQ(npt_batch(IMEE_REGION_TARGET, kNpfUser | kNpfFetch | kNpfWalk), IMEE_STOP_FORBIDDEN);
  // nor anything else: the agent's home and the rest of the GPA space are as without copies
  for (std::uint64_t e : {kNpfPresent | kNpfUser | kNpfWrite | kNpfWalk, kNpfUser | kNpfFinal,
                          kNpfUser | kNpfFetch | kNpfFinal})
    for (imee_region r : {IMEE_REGION_AGENT, IMEE_REGION_LOCAL, IMEE_REGION_NONE})
      EXPECT_EQ(npt_batch(r, e), npt(r, e)) << r << " " << e;
}

TEST(TdpLogic, TheAgentsPageOnlyExecutesWhereTheFormatAllowsIt) {
  EXPECT_EQ(ept(IMEE_REGION_AGENT, kFetch | kGlaValid | kTranslated), IMEE_MAP_AGENT);
  EXPECT_EQ(ept(IMEE_REGION_AGENT, kRead | kGlaValid | kTranslated), IMEE_STOP_BLIND_SPOT);
  EXPECT_EQ(ept(IMEE_REGION_AGENT, kWrite | kGlaValid | kTranslated), IMEE_STOP_BLIND_SPOT);
  EXPECT_EQ(ept(IMEE_REGION_AGENT, kRead | kGlaValid), IMEE_STOP_BLIND_SPOT);
  // NPT: a read maps the (readable) agent page, a write is still refused
  EXPECT_EQ(npt(IMEE_REGION_AGENT, kNpfUser | kNpfFetch | kNpfFinal), IMEE_MAP_AGENT);
  EXPECT_EQ(npt(IMEE_REGION_AGENT, kNpfUser | kNpfFinal), IMEE_MAP_AGENT);
  EXPECT_EQ(npt(IMEE_REGION_AGENT, kNpfPresent | kNpfUser | kNpfWrite | kNpfFinal),
            IMEE_STOP_BLIND_SPOT);
  EXPECT_EQ(npt(IMEE_REGION_AGENT, kNpfPresent | kNpfUser | kNpfWrite | kNpfWalk),
            IMEE_STOP_BLIND_SPOT);
}

TEST(TdpLogic, OwnPagesMapAndEverythingElseIsNoGpa) {
  for (std::uint64_t q : {kRead, kWrite, kFetch, kRead | kGlaValid | kTranslated}) {
    EXPECT_EQ(ept(IMEE_REGION_LOCAL, q), IMEE_MAP_LOCAL) << q;
    EXPECT_EQ(ept(IMEE_REGION_NONE, q), IMEE_STOP_NO_GPA) << q;
    EXPECT_EQ(npt(IMEE_REGION_LOCAL, q << 1), IMEE_MAP_LOCAL) << q;
    EXPECT_EQ(npt(IMEE_REGION_NONE, q << 1), IMEE_STOP_NO_GPA) << q;
  }
}

}  // namespace
