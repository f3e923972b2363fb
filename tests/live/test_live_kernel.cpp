// The kernel backend across two live guests (the VT-x lab's two L2 VMs): one ImEE retargeted
// from one guest to the other and back, each time reading exactly what the software walk reads
// in that guest; the CR3 an activation reports is the target vCPU's; a guest page the host swaps
// out under a live ImEE reads the same. Runs in the VT-x lab (IMEE_TOOL_BACKEND=kernel,
// IMEE_LAB_SECOND = the second guest's directory); skips elsewhere.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

#include "../support/host_memory.hpp"
#include "../support/imee_required.hpp"
#include "imee/kernel_backend.hpp"
#include "imee/linux.hpp"
#include "imee/paging.hpp"
#include "lab_guest.hpp"

namespace imee::test {
namespace {

// One guest, seen through the software walk: where its kernel is, its task list.
struct Guest {
  explicit Guest(const LabGuest& g) : lab(g), session(g.open_session()) {}
  const GuestRam& ram() const { return session->target()->ram(); }
  LabGuest lab;
  std::unique_ptr<LinuxSession> session;
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
void expect_reads_like_soft(KernelBackend& imee, Guest& g) {
  LinuxSession through(imee, g.session->profile(), g.session->kernel());
  std::vector<std::pair<int, std::string>> want, got;
  for (const Task& t : read_tasks(*g.session)) want.emplace_back(t.pid, t.comm);
  for (const Task& t : read_tasks(through)) got.emplace_back(t.pid, t.comm);
  EXPECT_GE(want.size(), 40u);
  EXPECT_EQ(got, want) << g.lab.dir;
  for (const char* symbol : {"linux_banner", "init_task", "sys_call_table"}) {
    const std::uint64_t va = g.session->symbol(symbol);
    Expected<std::vector<std::byte>> a = g.session->read(va, 3000), b = through.read(va, 3000);
    ASSERT_TRUE(a && b) << symbol;
    EXPECT_EQ(*a, *b) << symbol;
  }
}

TEST(LiveKernel, RetargetMovesOneImeeBetweenTwoGuests) {
  IMEE_NEED_BACKEND("kernel");
  const std::string second = env_or("IMEE_LAB_SECOND", "");
  if (second.empty()) {
    if (imee_required()) FAIL() << "IMEE_LAB_SECOND (the second guest) is not set";
    GTEST_SKIP() << "needs two guests under the patched kvm-intel (IMEE_LAB_SECOND)";
  }
  const LabGuest first = LabGuest::first();
  Guest a(first), b(LabGuest{second, 4, first.kernel});
  Pause pa(a.lab), pb(b.lab);

  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  KernelBackend imee(a.ram(), a.session->agent_home(), a.lab.kernel_vm());
  const auto t1 = Clock::now();
  expect_reads_like_soft(imee, a);

  const auto t2 = Clock::now();
  imee.retarget(b.ram(), b.lab.kernel_vm(), b.session->agent_home());
  const auto t3 = Clock::now();
  expect_reads_like_soft(imee, b);

  imee.retarget(a.ram(), a.lab.kernel_vm(), a.session->agent_home());
  expect_reads_like_soft(imee, a);
  // Every read of the three comparisons succeeds: the ImEE answered each, software none.
  const BackendStats st = imee.stats();
  EXPECT_GT(st.imee_reads, 100u);
  EXPECT_EQ(st.software_rereads, 0u) << "the ImEE, not software, must have answered";

  auto us = [](auto d) { return std::chrono::duration<double, std::micro>(d).count(); };
  std::printf("launch (new shell VM + IMEE_LAUNCH) %.0f us, retarget %.0f us (L1 clock)\n",
              us(t1 - t0), us(t3 - t2));
}

TEST(LiveKernel, ActivationReportsTheTargetVcpusCr3) {
  IMEE_NEED_BACKEND("kernel");
  Guest g(LabGuest::first());
  std::vector<std::byte> buf(64);
  {  // by default an activation leaves the target alone: it reads nothing of its vCPU
    KernelBackend imee(g.ram(), g.session->agent_home(), g.lab.kernel_vm());
    ASSERT_TRUE(imee.read(g.session->kernel_space(), g.session->symbol("linux_banner"), buf).ok());
    EXPECT_EQ(imee.target_vcpu().cr3, 0u);
    EXPECT_FALSE(imee.target_vcpu().long_mode);
  }
  KernelVm vm = g.lab.kernel_vm();
  vm.read_target_cr3 = true;  // the opt-in
  KernelBackend imee(g.ram(), g.session->agent_home(), vm);
  // The CR3 is cached at the target vCPU's VM exits while an ImEE exists; an idle guest's vCPU
  // may sleep in HLT since before this one (its CR3 then reported stale). A word on the guest's
  // channel makes it run, and exit, now.
  EXPECT_TRUE(g.lab.query("ping cr3").starts_with("pong cr3"));
  ASSERT_TRUE(imee.read(g.session->kernel_space(), g.session->symbol("linux_banner"), buf).ok());
  const KernelBackend::TargetVcpu vcpu = imee.target_vcpu();
  EXPECT_TRUE(vcpu.long_mode);
  EXPECT_TRUE(vcpu.nxe);
  EXPECT_TRUE(vcpu.wp);
  EXPECT_FALSE(vcpu.la57) << "a 4-level guest";
  EXPECT_FALSE(vcpu.stale);
  // Whatever task the vCPU ran, its CR3 (KPTI user bit and PCID cleared) maps the kernel as
  // init_top_pgt does.
  const AddressSpace current{vcpu.cr3 & ~0x1fffull & pte::kAddressMask, PagingMode::k4Level, true};
  const std::uint64_t text = g.session->symbol("_text");
  Expected<Translation> want = translate(g.ram(), g.session->kernel_space(), text);
  Expected<Translation> got = translate(g.ram(), current, text);
  ASSERT_TRUE(want && got) << std::hex << vcpu.cr3;
  EXPECT_EQ(got->gpa, want->gpa);
}

// Where QEMU (pid) maps the guest's RAM file `ram` (a canonical path, as /proc/PID/maps shows
// it): the host address of `gpa` (0 if not found).
std::uint64_t qemu_hva(const std::string& pid, const std::string& ram, std::uint64_t gpa) {
  std::ifstream maps("/proc/" + pid + "/maps");
  for (std::string line; std::getline(maps, line);) {
    if (line.size() < ram.size() || line.compare(line.size() - ram.size(), ram.size(), ram) != 0)
      continue;
    std::uint64_t start = 0, end = 0, offset = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx %*s %lx", &start, &end, &offset) == 3 && gpa >= offset &&
        gpa - offset < end - start)
      return start + (gpa - offset);
  }
  return 0;
}

// L1 swaps a page of the live guest out from under a live ImEE: process_madvise(MADV_PAGEOUT)
// into the guest's QEMU (zram swap in the lab). The guest is paused, so only the ImEE's own read
// can bring the page back: it must, with the same bytes. L2's RAM is in 2 MiB pages: the first
// pageout may only split the huge page and unmap it from QEMU, another host change the ImEE must
// follow; the ImEE's read maps it back in 4 KiB, and the next pageout swaps it.
TEST(LiveKernel, GuestPageSwappedOutByTheHostReadsTheSame) {
  IMEE_NEED_BACKEND("kernel");
  if (active_swap().empty()) {
    if (imee_required()) FAIL() << "no swap: the VT-x lab's run.sh sets up zram swap";
    GTEST_SKIP() << "needs swap in the host";
  }
  Guest g(LabGuest::first());
  const std::string qemu = g.lab.qemu_pid();
  Pause paused(g.lab);
  KernelBackend imee(g.ram(), g.session->agent_home(), g.lab.kernel_vm());
  const std::uint64_t va = g.session->symbol("linux_banner");
  const Expected<Translation> t = g.session->backend().translate(g.session->kernel_space(), va);
  ASSERT_TRUE(t);
  const std::uint64_t gpa = t->gpa & ~0xfffull;
  std::vector<std::byte> banner(64), again(64);
  ASSERT_TRUE(imee.read(g.session->kernel_space(), va, banner).ok());
  ASSERT_EQ(std::memcmp(banner.data(), "Linux version ", 14), 0);

  // This process maps the RAM file too (the software walk): pageout leaves pages that two
  // processes map alone, so this one lets go of the page. mincore() here then says whether the
  // page is still in memory at all.
  auto* ours = const_cast<std::byte*>(g.ram().host(gpa, 4096));
  ASSERT_NE(ours, nullptr);
  ASSERT_EQ(::madvise(ours, 4096, MADV_DONTNEED), 0);
  auto in_memory = [&] {
    unsigned char v = 0;
    return ::mincore(ours, 4096, &v) == 0 && (v & 1) != 0;
  };
  const std::uint64_t hva = qemu_hva(qemu, std::filesystem::canonical(g.lab.ram()), gpa);
  ASSERT_NE(hva, 0u) << "QEMU does not map " << g.lab.ram();
  auto qemu_maps_it = [&] { return page_present(pagemap_entry(qemu, hva)); };
  struct PidFd {
    int fd;
    ~PidFd() {
      if (fd >= 0) ::close(fd);
    }
  } pidfd{static_cast<int>(::syscall(SYS_pidfd_open, std::stoi(qemu), 0))};
  ASSERT_GE(pidfd.fd, 0) << std::strerror(errno);
  bool swapped = false;
  for (int attempt = 0; attempt < 4 && !swapped; ++attempt) {
    iovec page{reinterpret_cast<void*>(hva), 4096};
    ASSERT_EQ(::syscall(SYS_process_madvise, pidfd.fd, &page, 1, MADV_PAGEOUT, 0), 4096)
        << std::strerror(errno);
    swapped = !in_memory();
    const bool mapped = qemu_maps_it();
    std::printf("pageout %d: the page is %s, %s by QEMU\n", attempt,
                swapped ? "in swap" : "in memory", mapped ? "mapped" : "NOT mapped");
    if (swapped) {
      EXPECT_FALSE(mapped);
    }
    ASSERT_TRUE(imee.read(g.session->kernel_space(), va, again).ok());
    EXPECT_EQ(again, banner) << "after pageout " << attempt;
    EXPECT_TRUE(in_memory() && qemu_maps_it())
        << "the ImEE's read (the guest is paused) brought the page back";
  }
  EXPECT_TRUE(swapped) << "the page never left memory";
}

}  // namespace
}  // namespace imee::test
