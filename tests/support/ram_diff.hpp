// "Introspection left the target's RAM unchanged", page by page, with one declared exception: a
// CPU that sets Accessed/Dirty bits in guest page tables through read-only EPT entries. The SDM
// treats those updates as writes (an EPT violation when the entry is read-only, which the ImEE
// reports as NEEDS_A_BIT); Bochs 2.7, the VT-x lab's CPU, translates guest page-walk addresses
// for reading only and then writes the A/D bits unchecked (cpu/paging.cc,
// update_access_dirty_PAE). The lab declares it with IMEE_CPU_WRITES_AD_THROUGH_READONLY_EPT=1,
// and what it excuses is exactly that: A/D bits (5, 6) *gained* by entries that are present
// (bit 0) before and after. A bit lost, or any other change, still fails the check.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
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

// Per 4 KiB page (a copy of the guest's RAM would not fit beside the guests in the lab's L1): a
// hash of the bytes, a hash of the bytes with the A/D bits of every qword that looks like a
// present entry cleared, and those A/D bits themselves (2 bits a qword: 1/32 of the RAM), so that
// a change of A/D bits alone can be told to be gains only.
class RamSnapshot {
 public:
  explicit RamSnapshot(std::vector<std::span<const std::byte>> regions)
      : regions_(std::move(regions)), pages_(scan(true)) {}

  struct Diff {
    std::size_t ad_only_pages = 0;  // pages whose only change is A/D bits gained
    std::size_t other_pages = 0;    // every other changed page (A/D bits lost included)
    std::size_t first_other = 0;    // its index, counting pages across the regions
  };
  // How the same memory differs now from when the snapshot was taken.
  Diff diff() const {
    const std::vector<Page> now = scan(false);
    Diff d;
    std::size_t index = 0;
    for (std::span<const std::byte> r : regions_) {
      for (std::size_t page = 0; page < r.size(); page += 4096, ++index) {
        if (now[index].raw == pages_[index].raw) continue;
        if (now[index].masked == pages_[index].masked && only_gained(r, page, pages_[index])) {
          ++d.ad_only_pages;
        } else if (d.other_pages++ == 0) {
          d.first_other = index;
        }
      }
    }
    return d;
  }

 private:
  static constexpr std::uint64_t kAd = 0x60;
  struct Page {
    std::uint64_t raw = 0, masked = 0;
    std::array<std::uint64_t, 16> ad{};  // A/D bits of qword i at bits 2i, 2i+1 of the 1024
  };

  static std::uint64_t qword(std::span<const std::byte> r, std::size_t off) {
    std::uint64_t q = 0;
    std::memcpy(&q, r.data() + off, 8);
    return q;
  }
  static unsigned ad_of(std::uint64_t q) { return (q & 1) != 0 ? (q & kAd) >> 5 : 0; }

  // Every present-looking qword of the page keeps the A/D bits it had (and may have gained).
  static bool only_gained(std::span<const std::byte> r, std::size_t page, const Page& before) {
    for (std::size_t i = 0; i < 512 && page + 8 * i + 8 <= r.size(); ++i) {
      const unsigned had = (before.ad[i / 32] >> (2 * (i % 32))) & 3;
      if ((had & ~ad_of(qword(r, page + 8 * i))) != 0) return false;
    }
    return true;
  }

  std::vector<Page> scan(bool with_ad) const {
    constexpr std::uint64_t kPrime = 1099511628211ull;
    std::vector<Page> out;
    for (std::span<const std::byte> r : regions_) {
      for (std::size_t page = 0; page < r.size(); page += 4096) {
        Page p;
        p.raw = p.masked = 1469598103934665603ull;  // FNV-1a, a qword at a time
        for (std::size_t i = 0; i < 512 && page + 8 * i + 8 <= r.size(); ++i) {
          const std::uint64_t q = qword(r, page + 8 * i);
          p.raw = (p.raw ^ q) * kPrime;
          p.masked = (p.masked ^ ((q & 1) != 0 ? q & ~kAd : q)) * kPrime;
          if (with_ad) p.ad[i / 32] |= std::uint64_t{ad_of(q)} << (2 * (i % 32));
        }
        out.push_back(p);
      }
    }
    return out;
  }

  std::vector<std::span<const std::byte>> regions_;
  std::vector<Page> pages_;
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
