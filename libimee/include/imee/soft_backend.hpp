// The software backend: walks the guest's page tables in mapped guest RAM on every read.
// It is the baseline, the fallback when no ImEE is available, and the test oracle.
#pragma once

#include "imee/backend.hpp"
#include "imee/guest_ram.hpp"

namespace imee {

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
