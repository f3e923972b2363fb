// The kernel backend: the ImEE of the patched kvm-intel or kvm-amd (kernel/), launched on the
// target's own KVM VM fd; which one, IMEE_QUERY's features say.
//
// The shell VM, local pages and agent are the kvm backend's, but target RAM is not mapped by
// memslots: the ImEE's own EPT (NPT on AMD) maps it read-only and no-execute, the agent's home
// page execute-only (so a read of the blind spot faults; NPT has no execute-only entries, so
// there the agent page's canary finds such reads, as in the kvm backend), and it is kept coherent
// with the target by
// KVM's MMU notifier. The agent runs through IMEE_ACTIVATE, and every exception or refused
// access ends the activation with a typed fault: the request being served goes to the software
// walker (a blind spot: to a retry after relocation) and the agent restarts with the rest of the
// batch. GuestRam is still needed for that software path.
// How reads are served, and what falls back to software: agent_backend.hpp.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "imee/agent_backend.hpp"

namespace imee {

// The target: a KVM VM fd (the backend keeps a duplicate) or, with vm_fd -1, the QEMU process
// whose VM fd the backend takes (pidfd_getfd(2)).
struct KernelVm {
  int vm_fd = -1;
  pid_t qemu_pid = 0;
  // Opt-in: each activation also reads vCPU `vcpu_index`'s CR3 and paging mode (target_vcpu()).
  // It kicks that vCPU out of guest mode (a VM exit in the target per activation) and may wait
  // for it; by default an activation leaves the target alone: the agent uses the CR3 each read
  // names (the Linux layer knows it).
  bool read_target_cr3 = false;
  std::uint32_t vcpu_index = 0;
};

class KernelImeeRunner;  // libimee/src/backend/kernel_backend.cpp

class KernelBackend final : public AgentBackend {
 public:
  // Launches the ImEE on `vm`, over `ram` (the target's RAM, which must outlive it), with the
  // agent at `home`. Throws imee::Exception if the patched module is missing or launch fails.
  KernelBackend(const GuestRam& ram, const AgentHome& home, const KernelVm& vm);

  // Whether this host's KVM is the patched one; `why` says why not.
  static bool available(std::string* why = nullptr);

  // Moves the ImEE to another target VM (IMEE_LAUNCH_RETARGET: no new VM, no new pages), `ram`
  // (which must outlive it) being that target's RAM.
  void retarget(const GuestRam& ram, const KernelVm& vm, const AgentHome& home);

  // The target vCPU's state as the last activation read it (KernelVm::read_target_cr3; all zero
  // without it).
  struct TargetVcpu {
    std::uint64_t cr3 = 0;  // as loaded: KPTI and PCID bits included
    bool long_mode = false, la57 = false, nxe = false, wp = false, pcide = false;
    bool stale = false;  // the vCPU did not leave guest mode in time: CR3 of its last exit
  };
  TargetVcpu target_vcpu() const;

 private:
  KernelImeeRunner& runner() const;
};

}  // namespace imee
