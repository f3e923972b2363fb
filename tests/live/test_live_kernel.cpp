// The kernel backend across two live guests (the VT-x lab's two L2 VMs): one ImEE retargeted
// from one guest to the other and back, each time reading exactly what the software walk reads
// in that guest; and the CR3 an activation reports is the target vCPU's. Runs in the VT-x lab
// (IMEE_TOOL_BACKEND=kernel, IMEE_LAB_SECOND = the second guest's directory); skips elsewhere.
#include <gtest/gtest.h>

#include <chrono>
#include <optional>

#include "imee/kvm_backend.hpp"
#include "imee/linux.hpp"
#include "imee/session.hpp"
#include "imee/soft_backend.hpp"
#include "imee/target.hpp"
#include "lab_guest.hpp"

namespace imee::test {
namespace {

// One guest, seen through the software walk: where its kernel is, its task list.
struct Guest {
  explicit Guest(const LabGuest& g)
      : lab(g),
        target(Target::open({.ram_path = g.ram()})),
        soft(target.ram()),
        session(soft, g.linux_profile()) {}
  LabGuest lab;
  Target target;
  SoftBackend soft;
  Session session;

  KvmBackend::KernelTarget vm() const { return {.qemu_pid = std::stoi(lab.qemu_pid())}; }
  std::uint64_t home() const { return session.symbol("entry_SYSCALL_64"); }
};

struct Pause {
  explicit Pause(const LabGuest& g) : dir(g.dir) {
    EXPECT_EQ(run(LabGuest::script() + " pause " + dir).status, 0);
  }
  ~Pause() { EXPECT_EQ(run(LabGuest::script() + " resume " + dir).status, 0); }
  std::string dir;
};

// The ImEE reads `g` as the software walk does: the task list (pid, comm) and kernel bytes. The
// lab's second guest is a live clone of the first with three more tasks, so the task lists tell
// which guest was read.
void expect_reads_like_soft(KvmBackend& imee, Guest& g) {
  Session through(imee, g.session.profile(), g.session.kernel());
  std::vector<std::pair<int, std::string>> want, got;
  for (const Task& t : read_tasks(g.session)) want.emplace_back(t.pid, t.comm);
  for (const Task& t : read_tasks(through)) got.emplace_back(t.pid, t.comm);
  EXPECT_GE(want.size(), 40u);
  EXPECT_EQ(got, want) << g.lab.dir;
  for (const char* symbol : {"linux_banner", "init_task", "sys_call_table"}) {
    const std::uint64_t va = g.session.symbol(symbol);
    Expected<std::vector<std::byte>> a = g.session.read(va, 3000), b = through.read(va, 3000);
    ASSERT_TRUE(a && b) << symbol;
    EXPECT_EQ(*a, *b) << symbol;
  }
}

TEST(LiveKernel, RetargetMovesOneImeeBetweenTwoGuests) {
  std::string why;
  if (!KvmBackend::available(&why, true)) {
    if (LabGuest::must_run()) FAIL() << why;
    GTEST_SKIP() << "needs the patched kvm-intel (tests/vtx-lab runs this): " << why;
  }
  const std::string second = env_or("IMEE_LAB_SECOND", "");
  if (second.empty()) {
    if (LabGuest::must_run()) FAIL() << "IMEE_LAB_SECOND (the second guest) is not set";
    GTEST_SKIP() << "needs two guests under the patched kvm-intel (IMEE_LAB_SECOND)";
  }
  Guest a(LabGuest::get(4)), b(LabGuest{second, 4});
  Pause pa(a.lab), pb(b.lab);

  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  KvmBackend imee(a.target.ram(), a.session.kernel_space(), a.home(), a.vm());
  const auto t1 = Clock::now();
  expect_reads_like_soft(imee, a);

  const auto t2 = Clock::now();
  imee.retarget(b.target.ram(), b.vm(), b.session.kernel_space(), b.home());
  const auto t3 = Clock::now();
  expect_reads_like_soft(imee, b);

  imee.retarget(a.target.ram(), a.vm(), a.session.kernel_space(), a.home());
  expect_reads_like_soft(imee, a);
  EXPECT_GT(imee.stats().agent_requests, 100u) << "the agent, not software, must have read";

  auto us = [](auto d) { return std::chrono::duration<double, std::micro>(d).count(); };
  std::printf("launch (new shell VM + IMEE_LAUNCH) %.0f us, retarget %.0f us (L1 clock)\n",
              us(t1 - t0), us(t3 - t2));
}

TEST(LiveKernel, ActivationReportsTheTargetVcpusCr3) {
  std::string why;
  if (!KvmBackend::available(&why, true)) {
    if (LabGuest::must_run()) FAIL() << why;
    GTEST_SKIP() << "needs the patched kvm-intel (tests/vtx-lab runs this): " << why;
  }
  Guest g(LabGuest::get(4));
  KvmBackend imee(g.target.ram(), g.session.kernel_space(), g.home(), g.vm());
  std::vector<std::byte> buf(64);
  ASSERT_TRUE(imee.read(g.session.kernel_space(), g.session.symbol("linux_banner"), buf).ok());
  const KvmBackend::TargetVcpu vcpu = imee.target_vcpu();
  EXPECT_TRUE(vcpu.long_mode);
  EXPECT_TRUE(vcpu.nxe);
  EXPECT_TRUE(vcpu.wp);
  EXPECT_FALSE(vcpu.la57) << "a 4-level guest";
  EXPECT_FALSE(vcpu.stale);
  // Whatever task the vCPU ran, its CR3 (KPTI user bit and PCID cleared) maps the kernel as
  // init_top_pgt does.
  const AddressSpace current{vcpu.cr3 & ~0x1fffull & pte::kAddressMask, PagingMode::k4Level, true};
  const std::uint64_t text = g.session.symbol("_text");
  Expected<Translation> want = translate(g.target.ram(), g.session.kernel_space(), text);
  Expected<Translation> got = translate(g.target.ram(), current, text);
  ASSERT_TRUE(want && got) << std::hex << vcpu.cr3;
  EXPECT_EQ(got->gpa, want->gpa);
}

}  // namespace
}  // namespace imee::test
