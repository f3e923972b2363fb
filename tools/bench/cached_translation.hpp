// A software walk that caches translations in a small TLB, the way LibVMI and memflow do by
// default. It exists only to measure what consistency costs: it can return bytes from a page the
// guest has since unmapped or remapped, which the product backends never do.
#pragma once

#include <array>

#include "imee/backend.hpp"
#include "imee/guest_ram.hpp"
#include "imee/paging.hpp"
#include "imee/soft_backend.hpp"

namespace imee::bench {

class CachedTranslationBackend final : public MemoryBackend {
 public:
  explicit CachedTranslationBackend(const GuestRam& ram) : ram_(ram) {}

  std::string_view name() const override { return "soft+tlb"; }

  Status read(const AddressSpace& space, std::uint64_t va, std::span<std::byte> dst) override {
    return copy_translated(ram_, va, dst, [&](std::uint64_t cur) { return lookup(space, cur); });
  }
  void read_batch(std::span<ReadRequest> requests) override {
    for (ReadRequest& r : requests) r.status = read(r.space, r.va, r.dst);
  }
  Expected<Translation> translate(const AddressSpace& space, std::uint64_t va) override {
    return lookup(space, va);
  }
  Status read_physical(std::uint64_t gpa, std::span<std::byte> dst) override {
    return SoftBackend(ram_).read_physical(gpa, dst);
  }
  std::vector<RamRegion> ram_regions() const override { return ram_.regions(); }

 private:
  struct Entry {
    std::uint64_t root = ~0ull, vpage = 0;
    Translation t;
  };
  Expected<Translation> lookup(const AddressSpace& space, std::uint64_t va) {
    Entry& e = tlb_[(va >> 12) % tlb_.size()];
    if (e.root != space.root || e.vpage != (va & ~(e.t.page_size - 1))) {
      Expected<Translation> t = imee::translate(ram_, space, va);
      if (!t) return t;
      e = {space.root, va & ~(t->page_size - 1), *t};
      e.t.gpa &= ~(t->page_size - 1);
    }
    Translation t = e.t;
    t.gpa = e.t.gpa | (va & (e.t.page_size - 1));
    return t;
  }
  const GuestRam& ram_;
  std::array<Entry, 64> tlb_{};
};

}  // namespace imee::bench
