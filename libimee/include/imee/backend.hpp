// The one memory-access interface. Every backend (soft, kvm, kernel) answers the same calls with
// the same bytes and the same typed errors; tools never know which one runs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "imee/error.hpp"
#include "imee/guest_ram.hpp"
#include "imee/paging.hpp"

namespace imee {

inline constexpr std::uint64_t kMaxReadLength = 256ull << 20;  // per request

struct ReadRequest {
  AddressSpace space;
  std::uint64_t va = 0;
  std::span<std::byte> dst;
  Status status;  // filled in by read_batch
};

class MemoryBackend {
 public:
  virtual ~MemoryBackend() = default;
  virtual std::string_view name() const = 0;

  // Reads dst.size() bytes at `va` in `space`. On a fault the error names the first failing VA;
  // the bytes of dst before it are filled, the rest are unspecified.
  virtual Status read(const AddressSpace& space, std::uint64_t va, std::span<std::byte> dst) = 0;
  // Many small reads in one call. Each request gets its own status.
  virtual void read_batch(std::span<ReadRequest> requests) = 0;
  virtual Expected<Translation> translate(const AddressSpace& space, std::uint64_t va) = 0;
  virtual Status read_physical(std::uint64_t gpa, std::span<std::byte> dst) = 0;
  // Where the target has RAM, in guest-physical terms.
  virtual std::vector<RamRegion> ram_regions() const = 0;
};

// Checks a request's range: not wrapping, not longer than kMaxReadLength.
Status check_range(std::uint64_t va, std::size_t len);

}  // namespace imee
