// The one memory-access interface. Every backend (soft, kvm, kernel) answers the same calls with
// the same bytes and the same typed errors; tools never know which one runs.
#pragma once

#include <array>
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

// Who answered, for --stats and for tests that must name it. The software backend counts
// nothing; the ImEE backends count every read request (a ReadRequest) once, by who answered it:
// the ImEE, or the software walk re-reading it whole, for the first reason it had to.
struct BackendStats {
  std::uint64_t imee_reads = 0;        // answered by the ImEE's agent, all of it
  std::uint64_t software_rereads = 0;  // re-read by the software walk: the sum of the seven below
  std::uint64_t reread_fault = 0;      // the agent faulted (#PF, #GP, GPA not RAM)
  std::uint64_t reread_accessed_bit = 0;  // the MMU would have set an A/D bit in target RAM
  std::uint64_t reread_blind_spot = 0;    // resolved to the agent's home again after relocating
  std::uint64_t reread_no_la57 = 0;       // a 5-level address space; this KVM offers no LA57
  // A reserved-bit #PF: the target uses a paging feature the ImEE's vCPU lacks (1 GiB pages,
  // on a KVM that offers none: AgentBackend::host_paging()).
  std::uint64_t reread_paging_feature = 0;
  std::uint64_t reread_agent_failed = 0;  // the agent as a whole failed (its vCPU was reset)
  // kernel, AMD: in a batch whose walks' page-table copies no longer equalled the target's pages
  // when the activation ended (walk_copies_changed below), so no answer of it was used.
  std::uint64_t reread_walk_copy = 0;

  std::uint64_t runs = 0;             // KVM_RUN calls or activations (batch), doorbells (poll)
  std::uint64_t agent_jobs = 0;       // pieces of requests (<= 64 KiB) posted to the agent
  std::uint64_t agent_faults = 0;     // exceptions the agent reported
  std::uint64_t mmio_exits = 0;       // kvm: accesses to a GPA without RAM, or writes to RO slots
  std::uint64_t blind_spot_hits = 0;  // reads that resolved to the agent's home GPA
  std::uint64_t relocations = 0;      // agent moves to another home
  std::uint64_t vcpu_resets = 0;      // unexpected exits after which the vCPU was restarted
  std::uint64_t agent_polls = 0;      // doorbell checks by the agent in poll mode

  // kernel: the module's own counts (IMEE_GET_STATS): VM exits of the ImEE vCPU by reason, and
  // activations ended by a fault (IMEE_RESULT_FAULT), of them by an exception, by vector.
  std::uint64_t vm_exits = 0, exits_ept_violation = 0, exits_exception = 0, exits_interrupt = 0,
                exits_other = 0;
  std::uint64_t fault_activations = 0;
  std::array<std::uint64_t, 32> exception_vectors{};
  // The same exits by VMX basic exit reason (index; SDM Vol. 3C Appendix C), e.g. 1 external
  // interrupt, 40 PAUSE (pause-loop exiting), 48 EPT violation.
  std::array<std::uint64_t, 80> exit_reasons{};
  // kernel, AMD (IMEE_FEATURE_WALK_COPIES): target page-table pages the ImEE gave its walks as
  // private copies, and of them those that no longer equalled the target's page when the
  // activation ended (its batch was then re-read in software: reread_walk_copy).
  std::uint64_t walk_copies = 0, walk_copies_changed = 0;
};

// "1 external interrupt: 12, 40 PAUSE: 3" for the nonzero entries of exit_reasons.
std::string exit_reasons_text(const BackendStats& stats);

// "N reads by the ImEE, M re-read by software (by reason)": who answered, in one line.
std::string who_answered(const BackendStats& stats);

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
