// The software backend: walks the guest's page tables in mapped guest RAM on every read.
// It is the baseline, the fallback when no ImEE is available, and the test oracle.
#pragma once

#include <cstring>

#include "imee/backend.hpp"
#include "imee/guest_ram.hpp"
#include "imee/paging.hpp"

namespace imee {

// Copies [va, va+dst.size()) out of `ram`, one page (of whatever size) at a time, translating
// each with `translate(va) -> Expected<Translation>`. Shared by every software path.
template <class TranslateFn>
Status copy_translated(const GuestRam& ram, std::uint64_t va, std::span<std::byte> dst,
                       TranslateFn&& translate) {
  if (Status s = check_range(va, dst.size()); !s) return s;
  std::size_t done = 0;
  while (done < dst.size()) {
    const std::uint64_t cur = va + done;
    Expected<Translation> t = translate(cur);
    if (!t) return t.error();
    const std::uint64_t in_page = t->page_size - (cur & (t->page_size - 1));
    const std::size_t n = in_page < dst.size() - done ? in_page : dst.size() - done;
    const std::byte* src = ram.host(t->gpa, n);
    if (src == nullptr) return Error{Fault::kBeyondRam, cur, t->gpa, 0};
    std::memcpy(dst.data() + done, src, n);
    done += n;
  }
  return {};
}

class SoftBackend final : public MemoryBackend {
 public:
  explicit SoftBackend(const GuestRam& ram) : ram_(ram) {}

  std::string_view name() const override { return "soft"; }
  Status read(const AddressSpace& space, std::uint64_t va, std::span<std::byte> dst) override;
  void read_batch(std::span<ReadRequest> requests) override;
  Expected<Translation> translate(const AddressSpace& space, std::uint64_t va) override;
  Status read_physical(std::uint64_t gpa, std::span<std::byte> dst) override;
  std::vector<RamRegion> ram_regions() const override { return ram_.regions(); }

 private:
  const GuestRam& ram_;
};

}  // namespace imee
