// The kernel backend: the ImEE of the patched kvm-intel or kvm-amd runs the agent
// (imee/kernel_backend.hpp).
#include "imee/kernel_backend.hpp"

#include <fcntl.h>

#include <algorithm>
#include <atomic>
#include <iterator>

#include "agent_core.hpp"
#include "agent_runner.hpp"
#include "imee_ioctl.hpp"

namespace imee {

// The kernel backend's runner: the patched module's ImEE maps the target through its own EPT
// (Intel) or NPT (AMD) and runs the agent with IMEE_ACTIVATE.
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
  // EPT maps the home execute-only: a read of it faults (IMEE_FAULT_BLIND_SPOT). NPT has no
  // execute-only entries (IMEE_FEATURE_AGENT_READABLE): reads are found by the canary instead.
  bool home_faults_on_read() const override { return home_faults_on_read_; }
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
  std::atomic<std::uint64_t> walk_copies_{0}, walk_copies_changed_{0};
  const bool home_faults_on_read_ = !(kernel::imee_features() & IMEE_FEATURE_AGENT_READABLE);
};

void KernelImeeRunner::set_target(const KernelVm& vm) {
  kvm::Fd fd;
  if (vm.vm_fd < 0) {
    fd = kernel::qemu_vm_fd(vm.qemu_pid);
  } else {
    fd = kvm::Fd(::fcntl(vm.vm_fd, F_DUPFD_CLOEXEC, 0));
    if (!fd)
      throw Exception("kernel: the target's VM fd " + std::to_string(vm.vm_fd) + " is not open");
  }
  target_vm_ = std::move(fd);
  target_vcpu_ = vm.vcpu_index;
  activate_flags_ = vm.read_target_cr3 ? IMEE_ACTIVATE_READ_TARGET_CR3 : 0;
  target_gone_ = false;
}

void KernelImeeRunner::map_target(AgentShell& shell, const GuestRam&) {
  if (!imee_)
    imee_ = kernel::launch(shell.vm(), target_vm_.get(), target_vcpu_, shell.home_gpa(),
                           shell.agent_local_gpa());
  else
    kernel::retarget(imee_.get(), target_vm_.get(), target_vcpu_, shell.home_gpa(),
                     shell.agent_local_gpa());
}

bool KernelImeeRunner::run_batch(AgentShell& shell) {
  ++shell.stats.runs;
  return run(shell, IMEE_ACTIVATE_BATCH);
}

// An activation ended with a fault before the agent touched anything it must not. The agent was
// serving the request whose slot r15 points to: that one goes to software (a blind spot: to a
// retry after relocation), the ones before it are done, and the restarted agent serves the rest
// (served and failed requests get length 0, so it skips them).
bool KernelImeeRunner::absorb_fault(AgentShell& shell, const imee_activate& a) {
  const auto current = shell.request_at(shell.vm().regs().r15);
  if (!current) return false;  // not inside a request: the agent itself went astray
  const bool reserved_bit = a.fault_kind == IMEE_FAULT_EXCEPTION &&
                            IMEE_FAULT_INFO_VECTOR(a.fault_info) == kPageFault &&
                            (IMEE_FAULT_INFO_ERROR(a.fault_info) & kPfReservedBit) != 0;
  shell.hit[*current].store(a.fault_kind == IMEE_FAULT_BLIND_SPOT    ? Hit::kBlindSpot
                            : a.fault_kind == IMEE_FAULT_NEEDS_A_BIT ? Hit::kAccessedBit
                            : reserved_bit                           ? Hit::kPagingFeature
                                                                     : Hit::kFault);
  for (std::size_t i = 0; i <= *current; ++i) {
    imee_request& s = shell.slot(i);
    if (i < *current && s.len != 0 && s.status == IMEE_STATUS_OK && s.done == s.len)
      shell.served[i] = 1;
    s.len = 0;
  }
  shell.restart();
  return true;
}

// An activation's walks used copies of target page-table pages that no longer equal the
// target's (IMEE_FEATURE_WALK_COPIES): a translation or a byte of the batch may be the copy's.
// Every request of the batch goes to software (a request that already failed keeps its reason);
// the agent's later results for them are not used.
static void distrust_batch(AgentShell& shell) {
  for (std::size_t i = 0; i < shell.header().count; ++i) {
    Hit expected = Hit::kNone;
    shell.hit[i].compare_exchange_strong(expected, Hit::kWalkCopy);
    shell.served[i] = 0;
  }
}

// Activations until the agent halts (batch done, or poll mode stopped). Returns false if the
// agent failed as a whole.
bool KernelImeeRunner::run(AgentShell& shell, std::uint32_t mode) {
  for (int interrupts = 0;;) {
    const imee_activate a = kernel::activate(imee_.get(), mode, activate_flags_);
    last_cr3_.store(a.target_cr3, std::memory_order_relaxed);
    last_paging_.store(a.target_paging, std::memory_order_relaxed);
    walk_copies_.fetch_add(a.walk_copies, std::memory_order_relaxed);
    walk_copies_changed_.fetch_add(a.walk_copies_changed, std::memory_order_relaxed);
    if (a.walk_copies_changed != 0) distrust_batch(shell);
    switch (a.status) {
      case IMEE_RESULT_DONE:
        return true;
      case IMEE_RESULT_INTERRUPTED:
        if (mode == IMEE_ACTIVATE_BATCH && ++interrupts > 1000) return false;
        continue;
      case IMEE_RESULT_FAULT:
        if (absorb_fault(shell, a)) continue;
        return false;
      case IMEE_RESULT_TARGET_GONE:
        target_gone_ = true;
        return false;
      default:
        return false;
    }
  }
}

// The module's own counts: what the ImEE vCPU did, as the kernel saw it.
void KernelImeeRunner::add_stats(BackendStats& stats) const {
  if (!imee_) return;
  const imee_stats k = kernel::stats(imee_.get());
  stats.vm_exits = k.exits;
  stats.exits_ept_violation = k.exits_ept_violation;
  stats.exits_exception = k.exits_exception;
  stats.exits_interrupt = k.exits_interrupt;
  stats.exits_other = k.exits_other;
  stats.fault_activations = k.results[IMEE_RESULT_FAULT];
  stats.walk_copies = walk_copies_.load(std::memory_order_relaxed);
  stats.walk_copies_changed = walk_copies_changed_.load(std::memory_order_relaxed);
  std::copy(std::begin(k.fault_vectors), std::end(k.fault_vectors),
            stats.exception_vectors.begin());
  static_assert(IMEE_EXIT_REASONS == std::tuple_size_v<decltype(stats.exit_reasons)>);
  std::copy(std::begin(k.exit_reasons), std::end(k.exit_reasons), stats.exit_reasons.begin());
}

KernelBackend::TargetVcpu KernelImeeRunner::target_vcpu() const {
  const std::uint32_t p = last_paging_.load(std::memory_order_relaxed);
  return {.cr3 = last_cr3_.load(std::memory_order_relaxed),
          .long_mode = (p & IMEE_PAGING_LONG) != 0,
          .la57 = (p & IMEE_PAGING_LA57) != 0,
          .nxe = (p & IMEE_PAGING_NXE) != 0,
          .wp = (p & IMEE_PAGING_WP) != 0,
          .pcide = (p & IMEE_PAGING_PCIDE) != 0,
          .stale = (p & IMEE_PAGING_STALE) != 0};
}

namespace {

std::unique_ptr<AgentCore> launch_core(const GuestRam& ram, const AgentHome& home,
                                       const KernelVm& vm) {
  std::string why;
  if (!KernelBackend::available(&why)) throw Exception("kernel: " + why);
  return std::make_unique<AgentCore>("kernel", std::make_unique<KernelImeeRunner>(vm), ram, home);
}

}  // namespace

KernelBackend::KernelBackend(const GuestRam& ram, const AgentHome& home, const KernelVm& vm)
    : AgentBackend(launch_core(ram, home, vm)) {}

bool KernelBackend::available(std::string* why) {
  const kvm::Capabilities& caps = kvm::capabilities();
  const std::string reason = caps.usable ? kernel::imee_missing() : caps.why_not;
  if (why != nullptr) *why = reason;
  return reason.empty();
}

KernelImeeRunner& KernelBackend::runner() const {
  // The core's runner is the one launch_core gave it.
  return static_cast<KernelImeeRunner&>(core().runner());
}

void KernelBackend::retarget(const GuestRam& ram, const KernelVm& vm, const AgentHome& home) {
  AgentCore& c = core();
  AgentCore::PollPause pause(c);
  c.check_ram(ram);
  runner().set_target(vm);
  c.set_ram(ram);
  c.move_home(home);
}

KernelBackend::TargetVcpu KernelBackend::target_vcpu() const {
  return runner().target_vcpu();
}

}  // namespace imee
