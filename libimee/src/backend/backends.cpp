#include "imee/backends.hpp"

#include <fstream>

#include "imee/kernel_backend.hpp"
#include "imee/kvm_backend.hpp"
#include "imee/soft_backend.hpp"

namespace imee {

namespace {

bool host_has_hardware_virtualization() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line))
    if (line.starts_with("flags"))
      return line.find(" vmx") != std::string::npos || line.find(" svm") != std::string::npos;
  return false;
}

}  // namespace

std::unique_ptr<MemoryBackend> make_backend(const std::string& name, const Target& target,
                                            const AgentHome& home, std::string* why) {
  std::string reason;
  std::string chosen = name;
  if (name == "auto") {
    chosen = "soft";
    if (!host_has_hardware_virtualization())
      reason = "soft: this host's CPU has no VT-x/AMD-V, so an ImEE would run emulated";
    else if (!KvmBackend::available(&reason))
      reason = "soft: KVM is not usable (" + reason + ")";
    else if (target.qemu_pid() && KernelBackend::available()) {
      chosen = "kernel";
      reason = "kernel: the ImEE of this host's patched kvm-intel or kvm-amd";
    } else {
      chosen = "kvm";
      reason = "kvm: KVM on hardware virtualization";
    }
  }
  if (why != nullptr) *why = reason;
  if (chosen == "soft") return std::make_unique<SoftBackend>(target.ram());
  if (chosen == "kvm") {
    if (!KvmBackend::available(&reason))
      throw Exception("the kvm backend is not available: " + reason);
    return std::make_unique<KvmBackend>(target.ram(), home);
  }
  if (chosen == "kernel") {
    if (!KernelBackend::available(&reason))
      throw Exception("the kernel backend is not available: " + reason);
    if (!target.qemu_pid())
      throw Exception("the kernel backend needs the target's QEMU process (--pid)");
    return std::make_unique<KernelBackend>(target.ram(), home,
                                           KernelVm{.qemu_pid = *target.qemu_pid()});
  }
  throw Exception("unknown backend '" + name + "' (available: soft, kvm, kernel, auto)");
}

}  // namespace imee
