// The kvm backend: an ImEE built from user space on this host's stock KVM, over the target's
// shared RAM (no kernel patch).
//
// A one-vCPU VM maps the target's RAM as read-only memslots at the target's own GPAs, plus a
// local range at the top of the guest-physical space holding the agent page, its data area and
// the local page tables. The memslot page behind the agent's home (the blind spot) is replaced
// by the agent page; since KVM cannot make a page execute-only, a read that returns the agent's
// bytes (a canary fills its unused bytes) is confirmed by a software translation and retried
// after relocation. A KVM without EPT/NPT (shadow paging) may cache translations of page tables
// the target changes behind its back; see agent/README.md.
// How reads are served, and what falls back to software: agent_backend.hpp.
#pragma once

#include <string>

#include "imee/agent_backend.hpp"

namespace imee {

class KvmBackend final : public AgentBackend {
 public:
  // Builds the ImEE over `ram` (which must outlive it, and be mapped read-only in this process,
  // so that KVM cannot set Accessed/Dirty bits in it) with the agent at `home`. Throws
  // imee::Exception if KVM is unusable or the home is unsuitable.
  KvmBackend(const GuestRam& ram, const AgentHome& home);

  // Whether this host's KVM can run it; `why` says why not.
  static bool available(std::string* why = nullptr);
};

}  // namespace imee
