// The ioctls of the ImEE of the patched kvm-intel or kvm-amd (kernel/include/uapi/linux/imee.h;
// kernel/API.md).
// Every call is checked; a failure throws imee::Exception naming the call and errno.
#pragma once

#include <linux/imee.h>
#include <sys/types.h>

#include <cstdint>
#include <string>

#include "kvm_vm.hpp"

namespace imee::kernel {

// Empty if /dev/kvm answers IMEE_QUERY as an ImEE kernel of our ABI version, else why not
// (stock KVM, no KVM, another version, a CPU that cannot run ImEEs).
std::string imee_missing();
// IMEE_QUERY's features (IMEE_FEATURE_*), 0 without an ImEE kernel.
std::uint64_t imee_features();

// IMEE_LAUNCH: turns `shell` (whose vCPU never ran) into an ImEE on the VM behind
// `target_vm_fd`, the agent at target GPA `agent_gpa` (shell page `agent_local_gpa`).
kvm::Fd launch(const kvm::Vm& shell, int target_vm_fd, std::uint32_t vcpu_index,
               std::uint64_t agent_gpa, std::uint64_t agent_local_gpa);
// IMEE_LAUNCH with IMEE_LAUNCH_RETARGET: moves `imee` to another target (or agent home).
void retarget(int imee, int target_vm_fd, std::uint32_t vcpu_index, std::uint64_t agent_gpa,
              std::uint64_t agent_local_gpa);
// IMEE_ACTIVATE (`flags`: IMEE_ACTIVATE_*). Errors (not faults: those are in the result) throw.
imee_activate activate(int imee, std::uint32_t mode, std::uint32_t flags);
// IMEE_GET_STATS: the module's counters for `imee` since launch.
imee_stats stats(int imee);

// A duplicate of QEMU process `pid`'s KVM VM fd (pidfd_getfd(2): needs ptrace rights on it).
kvm::Fd qemu_vm_fd(pid_t pid);

}  // namespace imee::kernel
