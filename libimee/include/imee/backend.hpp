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

#include "imee/address_space.hpp"
#include "imee/error.hpp"
#include "imee/guest_ram.hpp"

namespace imee {

inline constexpr std::uint64_t kMaxReadLength = 256ull << 20;  // per request

// What a backend did, for --stats and for tests that must name who answered. The software
// backend counts nothing; the ImEE backends count every path a read took.
struct BackendStats {
  std::uint64_t runs = 0;               // KVM_RUN calls or activations (batch), doorbells (poll)
  std::uint64_t agent_requests = 0;     // requests the agent served
  std::uint64_t agent_faults = 0;       // exceptions the agent reported
  std::uint64_t mmio_exits = 0;         // kvm: accesses to a GPA without RAM, or writes to RO slots
  std::uint64_t software_requests = 0;  // requests answered by the software walker
  std::uint64_t blind_spot_hits = 0;    // reads that resolved to the agent's home GPA
  std::uint64_t relocations = 0;        // agent moves to another home
  std::uint64_t vcpu_resets = 0;        // unexpected exits after which the vCPU was restarted
  std::uint64_t agent_polls = 0;        // doorbell checks by the agent in poll mode
  std::uint64_t vm_exits = 0;           // kernel: VM exits of the ImEE vCPU
  std::uint64_t kernel_faults = 0;      // kernel: activations ended by a fault
};

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
  virtual BackendStats stats() const { return {}; }
};

// Checks a request's range: not wrapping, not longer than kMaxReadLength.
Status check_range(std::uint64_t va, std::size_t len);

}  // namespace imee
