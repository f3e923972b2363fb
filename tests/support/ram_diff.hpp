// "Introspection left the target's RAM unchanged", page by page, with one declared exception: a
// CPU that sets Accessed/Dirty bits in guest page tables through read-only EPT entries. The SDM
// treats those updates as writes (an EPT violation when the entry is read-only, which the ImEE
// reports as NEEDS_A_BIT); Bochs 2.7, the VT-x lab's CPU, translates guest page-walk addresses
// for reading only and then writes the A/D bits unchecked (cpu/paging.cc,
// update_access_dirty_PAE). The lab declares it with IMEE_CPU_WRITES_AD_THROUGH_READONLY_EPT=1;
// every other change still fails the check.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <utility>
#include <vector>

namespace imee::test {

inline bool cpu_writes_ad_through_readonly_ept() {
  const char* v = std::getenv("IMEE_CPU_WRITES_AD_THROUGH_READONLY_EPT");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

// Two hashes per 4 KiB page (a copy of the guest's RAM would not fit beside the guests in the
// lab's L1): of the bytes, and of the bytes with the A/D bits (5, 6) of every qword that looks
// like a present entry (bit 0) cleared.
class RamSnapshot {
 public:
  explicit RamSnapshot(std::vector<std::span<const std::byte>> regions)
      : regions_(std::move(regions)), pages_(hash_pages()) {}

  struct Diff {
    std::size_t ad_only_pages = 0;  // pages whose only change is A/D bits gained or lost
    std::size_t other_pages = 0;    // every other changed page
    std::size_t first_other = 0;    // its index, counting pages across the regions
  };
  // How the same memory differs now from when the snapshot was taken.
  Diff diff() const {
    const auto now = hash_pages();
    Diff d;
    for (std::size_t i = 0; i < pages_.size(); ++i) {
      if (now[i].first == pages_[i].first) continue;
      if (now[i].second == pages_[i].second) {
        ++d.ad_only_pages;
      } else if (d.other_pages++ == 0) {
        d.first_other = i;
      }
    }
    return d;
  }

 private:
  std::vector<std::pair<std::uint64_t, std::uint64_t>> hash_pages() const {
    constexpr std::uint64_t kPrime = 1099511628211ull, kAd = 0x60;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
    for (std::span<const std::byte> r : regions_) {
      for (std::size_t page = 0; page < r.size(); page += 4096) {
        std::uint64_t raw = 1469598103934665603ull, masked = raw;  // FNV-1a, a qword at a time
        for (std::size_t off = page; off + 8 <= std::min(r.size(), page + 4096); off += 8) {
          std::uint64_t q = 0;
          std::memcpy(&q, r.data() + off, 8);
          raw = (raw ^ q) * kPrime;
          masked = (masked ^ ((q & 1) != 0 ? q & ~kAd : q)) * kPrime;
        }
        out.emplace_back(raw, masked);
      }
    }
    return out;
  }

  std::vector<std::span<const std::byte>> regions_;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> pages_;
};

// Fails the test if the memory changed since `before`, except for A/D bits on a CPU declared to
// set them through read-only EPT entries (counted and printed).
inline void expect_ram_unchanged(const RamSnapshot& before) {
  const RamSnapshot::Diff d = before.diff();
  EXPECT_EQ(d.other_pages, 0u) << "the target's RAM changed, first in page " << d.first_other;
  if (!cpu_writes_ad_through_readonly_ept()) {
    EXPECT_EQ(d.ad_only_pages, 0u) << "A/D bits were set in the target's page tables";
  } else if (d.ad_only_pages != 0) {
    std::printf(
        "note: this CPU changed A/D bits in %zu pages of guest page tables through "
        "read-only EPT entries (IMEE_CPU_WRITES_AD_THROUGH_READONLY_EPT)\n",
        d.ad_only_pages);
  }
}

}  // namespace imee::test
