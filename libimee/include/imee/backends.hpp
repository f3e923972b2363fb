// Choosing a backend by name, as the tools' --backend does.
#pragma once

#include <memory>
#include <string>

#include "imee/agent_backend.hpp"
#include "imee/backend.hpp"
#include "imee/target.hpp"

namespace imee {

// "soft" (software walk), "kvm" (ImEE on this host's stock KVM), "kernel" (the patched
// kvm-intel's or kvm-amd's ImEE; needs the target's QEMU pid) and "auto": kernel where the patched
// module is loaded and the target is a QEMU process, else kvm, where KVM runs on hardware
// virtualization (vmx/svm); soft otherwise, since a software-emulated KVM is orders of magnitude
// slower than the software walk. `why` (optional) says what auto chose. The ImEE backends put their
// agent at `home`.
std::unique_ptr<MemoryBackend> make_backend(const std::string& name, const Target& target,
                                            const AgentHome& home, std::string* why = nullptr);

}  // namespace imee
