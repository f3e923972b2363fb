// The kernel backend's runner: the patched module's ImEE maps the target through its own EPT
// and runs the agent with IMEE_ACTIVATE (imee/kernel_backend.hpp).
#pragma once

#include <atomic>
#include <cstdint>

#include "agent_runner.hpp"
#include "imee/kernel_backend.hpp"
#include "imee_ioctl.hpp"

namespace imee {

class KernelImeeRunner final : public AgentRunner {
 public:
  explicit KernelImeeRunner(const KernelVm& vm) { set_target(vm); }

  // The VM the next map_target launches on (or retargets to).
  void set_target(const KernelVm& vm);
  KernelBackend::TargetVcpu target_vcpu() const;

  void check_ram(const AgentShell&, const GuestRam&) const override {}
  void map_target(AgentShell& shell, const GuestRam& ram) override;
  bool run_batch(AgentShell& shell) override;
  bool run_polled(AgentShell& shell) override { return run(shell, IMEE_ACTIVATE_POLL); }
  // The ImEE maps the home execute-only: a read of it faults (IMEE_FAULT_BLIND_SPOT).
  bool home_faults_on_read() const override { return true; }
  bool target_gone() const override { return target_gone_; }
  void add_stats(BackendStats& stats) const override;

 private:
  bool run(AgentShell& shell, std::uint32_t mode);
  bool absorb_fault(AgentShell& shell, const imee_activate& a);

  kvm::Fd target_vm_;  // our duplicate of the target's VM fd
  std::uint32_t target_vcpu_ = 0;
  std::uint32_t activate_flags_ = 0;
  kvm::Fd imee_;  // once launched
  std::atomic<std::uint64_t> last_cr3_{0};
  std::atomic<std::uint32_t> last_paging_{0};
  std::atomic<bool> target_gone_{false};
};

}  // namespace imee
