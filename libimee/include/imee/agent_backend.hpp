// What the two ImEE backends share: an agent (agent/agent.S) that switches CR3 between the
// target's page tables and its own, so the MMU, not a software walker, translates every read.
//
// The agent lives at a "home" VA the target maps supervisor-executable (libimee uses the page of
// the kernel's syscall entry, mapped in every address space even under KPTI); the target page
// behind it is the blind spot. What the hardware path does not answer, the software walker does,
// so that every result is the one SoftBackend gives (same bytes, same Error):
//  - a request that faults inside the ImEE (#PF, #GP, an access beyond RAM, an Accessed/Dirty
//    bit the CPU would have to set in read-only target RAM) is re-read whole in software;
//  - a read that resolved to the blind spot is retried after the agent moves to another home;
//  - 5-level address spaces when KVM offers no LA57 to its guests;
//  - translate() and read_physical() (software walk / memcpy from GuestRam).
// stats() counts each of them.
//
// Consistency: the ImEE vCPU runs with CR4.PGE=0 and no PCID, so every CR3 write flushes its
// TLB (see agent/README.md).
//
// Not thread-safe: one caller at a time (poll mode runs the vCPU on an internal thread).
#pragma once

#include <cstdint>
#include <memory>

#include "imee/backend.hpp"

namespace imee {

// Where an ImEE's agent lives: the page holding `va` in `space`.
struct AgentHome {
  AddressSpace space;
  std::uint64_t va = 0;
};

class AgentCore;  // libimee/src/backend/agent_core.hpp

class AgentBackend : public MemoryBackend {
 public:
  ~AgentBackend() override;
  AgentBackend(const AgentBackend&) = delete;
  AgentBackend& operator=(const AgentBackend&) = delete;

  std::string_view name() const override;
  Status read(const AddressSpace& space, std::uint64_t va, std::span<std::byte> dst) override;
  void read_batch(std::span<ReadRequest> requests) override;
  // Software walk: the ImEE has no cheaper way to report a translation.
  Expected<Translation> translate(const AddressSpace& space, std::uint64_t va) override;
  Status read_physical(std::uint64_t gpa, std::span<std::byte> dst) override;
  std::vector<RamRegion> ram_regions() const override;
  BackendStats stats() const override;

  // Moves the agent to `home`. Throws imee::Exception if that page is not mapped executable in
  // RAM the ImEE can use.
  void set_agent_home(const AgentHome& home);
  std::uint64_t agent_home_va() const;
  std::uint64_t agent_home_gpa() const;

  // What this host's KVM lets the ImEE's vCPU translate. Reads that need more (a 5-level address
  // space, a 1 GiB page) are answered by the software walk, and counted (stats()).
  struct Paging {
    bool la57 = false;
    bool gbpages = false;
  };
  static Paging host_paging();

  // Poll mode: the vCPU stays in guest mode on an internal thread and reads are posted through
  // the shared data area, with no system call per read. stop_polling() returns to batch mode.
  void start_polling();
  void stop_polling();
  bool polling() const;

 protected:
  explicit AgentBackend(std::unique_ptr<AgentCore> core);
  AgentCore& core() const { return *core_; }

 private:
  std::unique_ptr<AgentCore> core_;
};

}  // namespace imee
