// The kvm backend: an ImEE built from user space on stock KVM, over the target's shared RAM.
//
// A one-vCPU VM maps the target's RAM as read-only memslots at the target's own GPAs, plus a
// local range at the top of the guest-physical space holding the agent page, its data area and
// the local page tables. The agent (agent/agent.S) switches CR3 between the target's tables and
// its local ones, so the MMU — not a software walker — translates every read. The agent lives
// at a "home" VA the target maps; the memslot page behind it (the blind spot) is replaced by
// the agent page.
//
// What the hardware path does not answer, the software walker does, so that every result is
// the one SoftBackend gives (same bytes, same Error):
//  - a request that faults inside the ImEE (#PF, #GP, an access beyond RAM, an Accessed/Dirty
//    bit the CPU would have to set in read-only target RAM) is re-read whole in software;
//  - a read that resolved to the blind spot is retried after the agent moves to another home;
//  - 5-level address spaces when KVM offers no LA57 to its guests;
//  - translate() and read_physical() (software walk / memcpy from GuestRam).
// Stats counts each of them.
//
// Consistency: the ImEE vCPU runs with CR4.PGE=0 and no PCID, so every CR3 write flushes its
// TLB. A KVM without EPT/NPT (shadow paging) may still cache translations of page tables the
// target changes behind its back; see agent/README.md.
//
// The same class is the kernel backend when given a KernelTarget: the ImEE of the patched
// kvm-intel (kernel/), launched on the target's own KVM VM fd. The shell VM, local pages and
// agent are the same; target RAM is not mapped by memslots but by the ImEE's EPT (read-only,
// no-execute, the agent's home page execute-only), the agent runs through IMEE_ACTIVATE, and
// every exception or refused access ends the activation with a typed fault: the request being
// served goes to the software walker (a blind spot: to a retry after relocation) and the agent
// restarts with the rest of the batch. GuestRam is still needed for that software path.
//
// Not thread-safe: one caller at a time (poll mode runs the vCPU on an internal thread).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "imee/backend.hpp"

namespace imee {

class KvmBackend final : public MemoryBackend {
 public:
  struct Stats {
    std::uint64_t runs = 0;               // KVM_RUN calls (batch mode) or doorbells (poll mode)
    std::uint64_t agent_requests = 0;     // requests the agent served
    std::uint64_t agent_faults = 0;       // exceptions the agent reported
    std::uint64_t mmio_exits = 0;         // accesses to a GPA without RAM, or writes to RO slots
    std::uint64_t software_requests = 0;  // requests answered by the software walker
    std::uint64_t blind_spot_hits = 0;    // reads that resolved to the agent's home GPA
    std::uint64_t relocations = 0;        // agent moves to another home
    std::uint64_t vcpu_resets = 0;        // unexpected exits after which the vCPU was restarted
    std::uint64_t agent_polls = 0;        // doorbell checks by the agent in poll mode
    std::uint64_t vm_exits = 0;           // kernel backend: VM exits of the ImEE vCPU
    std::uint64_t kernel_faults = 0;      // kernel backend: activations ended by a fault
  };

  // The kernel backend's target: a KVM VM fd (the backend keeps a duplicate) or, with vm_fd -1,
  // the QEMU process whose VM fd the backend takes (pidfd_getfd(2)); and the vCPU whose CR3 the
  // ImEE reports.
  struct KernelTarget {
    int vm_fd = -1;
    int qemu_pid = 0;
    std::uint32_t vcpu_index = 0;
  };

  // Builds the ImEE over `ram` (which must outlive it). The agent's home is the page holding
  // `home_va` in `home_space`: a page the target maps executable for the kernel, such as the one
  // MSR_LSTAR points to. Throws imee::Exception if KVM is unusable or the home is unsuitable.
  KvmBackend(const GuestRam& ram, const AddressSpace& home_space, std::uint64_t home_va);
  // The kernel backend (see above).
  KvmBackend(const GuestRam& ram, const AddressSpace& home_space, std::uint64_t home_va,
             const KernelTarget& target);
  ~KvmBackend() override;
  KvmBackend(const KvmBackend&) = delete;
  KvmBackend& operator=(const KvmBackend&) = delete;

  // Whether this host can run the backend (`kernel`: the kernel backend); `why` says why not.
  static bool available(std::string* why = nullptr, bool kernel = false);

  std::string_view name() const override;
  Status read(const AddressSpace& space, std::uint64_t va, std::span<std::byte> dst) override;
  void read_batch(std::span<ReadRequest> requests) override;
  // Software walk: the ImEE has no cheaper way to report a translation (documented above).
  Expected<Translation> translate(const AddressSpace& space, std::uint64_t va) override;
  Status read_physical(std::uint64_t gpa, std::span<std::byte> dst) override;
  std::vector<RamRegion> ram_regions() const override;

  // Moves the agent to the page holding `va` in `space`. Throws imee::Exception if that page is
  // not mapped executable in RAM the ImEE can use.
  void set_agent_home(const AddressSpace& space, std::uint64_t va);
  std::uint64_t agent_home_va() const;
  std::uint64_t agent_home_gpa() const;

  // Poll mode: the vCPU stays in guest mode on an internal thread and reads are posted through
  // the shared data area, with no system call per read. stop_polling() returns to batch mode.
  void start_polling();
  void stop_polling();
  bool polling() const;

  // Kernel backend: moves the ImEE to another target VM (IMEE_LAUNCH_RETARGET: no new VM, no
  // new pages), `ram` (which must outlive it) being that target's RAM.
  void retarget(const GuestRam& ram, const KernelTarget& target, const AddressSpace& home_space,
                std::uint64_t home_va);
  // Kernel backend: the target vCPU's state as the last activation read it.
  struct TargetVcpu {
    std::uint64_t cr3 = 0;  // as loaded: KPTI and PCID bits included
    bool long_mode = false, la57 = false, nxe = false, wp = false, pcide = false;
    bool stale = false;  // the vCPU did not leave guest mode in time: CR3 of its last exit
  };
  TargetVcpu target_vcpu() const;

  const Stats& stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace imee
