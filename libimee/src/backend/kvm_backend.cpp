// The kvm backend: the agent runs in a VM of this host's stock KVM whose read-only memslots are
// the target's RAM (imee/kvm_backend.hpp).
#include "imee/kvm_backend.hpp"

#include <cstdio>
#include <cstring>
#include <fstream>

#include "agent_core.hpp"

namespace imee {

namespace {

constexpr std::uint64_t kPage = IMEE_PAGE_SIZE;

// Memslots after the shell's local one (0): the agent's home page in target space, then two per
// target region (below and above the home page; a region without it uses only the first).
constexpr std::uint32_t kSlotHome = 1;
constexpr std::uint32_t kSlotTarget = 2;

// Whether any byte of [p, p+len) is mapped writable in this process. A read-only memslot is
// not enough on its own: KVM's shadow walker skips Accessed/Dirty updates in read-only slots,
// but under EPT the CPU sets them itself, and KVM (arch/x86/kvm/mmu/paging_tmpl.h) notes that it
// "will simply overwrite the read-only memory". With a PROT_READ host mapping KVM can only map
// the pages read-only, so such a write faults instead (and becomes an MMIO exit).
bool host_range_writable(const void* p, std::uint64_t len) {
  const auto begin = reinterpret_cast<std::uintptr_t>(p), end = begin + len;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    std::uintptr_t lo = 0, hi = 0;
    char perms[5] = {};
    if (std::sscanf(line.c_str(), "%lx-%lx %4s", &lo, &hi, perms) != 3) continue;
    if (lo < end && begin < hi && perms[1] == 'w') return true;
  }
  return false;
}

class MemslotRunner final : public AgentRunner {
 public:
  void check_ram(const AgentShell& shell, const GuestRam& ram) const override {
    for (const RamRegion& r : ram.regions())
      if (host_range_writable(ram.host(r.gpa, r.size), r.size))
        shell.fail(
            "target RAM is mapped writable in this process; the ImEE needs a read-only "
            "(PROT_READ) mapping so that KVM cannot set Accessed/Dirty bits in it");
  }

  // Target RAM as read-only slots at its own GPAs, with a hole at the home page, which the
  // agent page fills (read-write: exception frames land on the agent's stack in either space).
  void map_target(AgentShell& shell, const GuestRam& ram) override {
    kvm::Vm& vm = shell.vm();
    const std::uint64_t home_gpa = shell.home_gpa();
    const std::vector<RamRegion> regions = ram.regions();
    vm.set_memslot(kSlotHome, 0, 0, nullptr, false);
    for (std::uint32_t i = 0; i < regions.size(); ++i) {
      vm.set_memslot(kSlotTarget + 2 * i, 0, 0, nullptr, true);
      vm.set_memslot(kSlotTarget + 2 * i + 1, 0, 0, nullptr, true);
    }
    for (std::uint32_t i = 0; i < regions.size(); ++i) {
      const RamRegion& r = regions[i];
      const std::uint64_t size = r.size & ~(kPage - 1);  // a partial last page stays unbacked
      const std::byte* host = ram.host(r.gpa, r.size);
      const bool has_home = home_gpa >= r.gpa && home_gpa < r.gpa + size;
      const std::uint64_t below = has_home ? home_gpa - r.gpa : size;
      if (below > 0) vm.set_memslot(kSlotTarget + 2 * i, r.gpa, below, host, true);
      if (has_home && below + kPage < size)
        vm.set_memslot(kSlotTarget + 2 * i + 1, home_gpa + kPage, size - below - kPage,
                       host + below + kPage, true);
    }
    vm.set_memslot(kSlotHome, home_gpa, kPage, shell.agent_page(), false);
  }

  // One KVM_RUN serves the posted batch; the agent halts when it is done.
  bool run_batch(AgentShell& shell) override {
    for (int spins = 0;; ++spins) {
      const std::uint32_t reason = shell.vm().run();
      ++shell.stats.runs;
      if (reason == KVM_EXIT_HLT) return true;
      if (reason == KVM_EXIT_MMIO) {
        handle_mmio(shell);
        continue;
      }
      if (reason == KVM_EXIT_INTR && spins < 1000) continue;
      return false;  // shutdown (triple fault), internal error, ...: the caller restarts the agent
    }
  }

  bool run_polled(AgentShell& shell) override {
    for (;;) {
      const std::uint32_t reason = shell.vm().run();
      if (reason == KVM_EXIT_MMIO) {
        handle_mmio(shell);
        continue;
      }
      if (reason == KVM_EXIT_INTR) continue;
      return reason == KVM_EXIT_HLT;
    }
  }

  // Memslots cannot make the home execute-only: a read of it returns the agent page.
  bool home_faults_on_read() const override { return false; }

  void add_stats(BackendStats& stats) const override {
    stats.mmio_exits = mmio_exits_.load(std::memory_order_relaxed);
  }

 private:
  // An access the agent made to a GPA without a memslot (beyond RAM), or a write to a read-only
  // one: the MMU setting an Accessed/Dirty bit in target RAM (the agent itself writes only its
  // own pages). Mark the request being served (r15 points to its slot) for the software path,
  // and let the access complete with all-ones: its bytes will not be used.
  void handle_mmio(AgentShell& shell) {
    kvm_run& run = shell.vm().run_state();
    mmio_exits_.fetch_add(1, std::memory_order_relaxed);
    if (!run.mmio.is_write) std::memset(run.mmio.data, 0xff, sizeof run.mmio.data);
    if (const auto i = shell.request_at(shell.vm().regs().r15))
      shell.hit[*i].store(run.mmio.is_write ? Hit::kAccessedBit : Hit::kFault);
    else
      shell.broken = true;  // not inside a request: the agent itself went astray
  }

  std::atomic<std::uint64_t> mmio_exits_{0};  // counted on the poll thread too
};

}  // namespace

KvmBackend::KvmBackend(const GuestRam& ram, const AgentHome& home)
    : AgentBackend(
          std::make_unique<AgentCore>("kvm", std::make_unique<MemslotRunner>(), ram, home)) {}

bool KvmBackend::available(std::string* why) {
  const kvm::Capabilities& caps = kvm::capabilities();
  if (why != nullptr) *why = caps.usable ? "" : caps.why_not;
  return caps.usable;
}

}  // namespace imee
