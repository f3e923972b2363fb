// The kernel ImEE's ioctls (kernel/include/uapi/linux/imee.h) and its session semantics, on
// synthetic targets: KVM VMs created here over hand-built page tables. They need the patched
// kvm-intel, so they run in the VT-x lab (tests/vtx-lab, IMEE_REQUIRE_KERNEL=1: no skipping
// there) and skip elsewhere.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <linux/imee.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "../support/host_memory.hpp"
#include "../support/imee_required.hpp"
#include "../support/page_table_builder.hpp"
#include "../support/ram_diff.hpp"
#include "../support/readonly_ram.hpp"
#include "../support/test_vm.hpp"
#include "imee/kernel_backend.hpp"
#include "imee/soft_backend.hpp"

namespace imee {
namespace {

using test::PageTableBuilder;
using test::ReadOnlyRam;
constexpr std::uint64_t MiB = 1ull << 20;
constexpr std::uint64_t P = PageTableBuilder::P, A = PageTableBuilder::A;
constexpr std::uint64_t kHomeVa = 0xffffffff81000000ull;
constexpr std::uint64_t kHomeGpa = 4 * MiB;
constexpr std::uint64_t kDataVa = 0xffff888000000000ull;
constexpr std::uint64_t kDataGpa = 8 * MiB;
constexpr std::uint64_t kLocalGpa = 1ull << 39;  // the test shells' memory
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25  // Linux 6.1 (uapi asm-generic/mman-common.h); glibc 2.36 lacks it
#endif

using test::Fd;
using Vm = test::TestVm;

// The CPU's virtualization, from /proc/cpuinfo (the oracle for what IMEE_QUERY must report): the
// ImEE runs on Intel VMX with EPT or on AMD SVM with NPT.
bool cpu_is_amd() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("flags", 0) == 0) return (" " + line + " ").find(" svm ") != std::string::npos;
  return false;
}
// The vendor KVM module, whose refcnt counts VMs.
const char* kvm_vendor_module() {
  return cpu_is_amd() ? "kvm_amd" : "kvm_intel";
}
// NPT has no execute-only entries: the agent's home is readable (IMEE_FEATURE_AGENT_READABLE).
bool agent_readable() {
  Fd kvm(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
  imee_query q{};
  return ::ioctl(kvm.fd, IMEE_QUERY, &q) == 0 && (q.features & IMEE_FEATURE_AGENT_READABLE);
}

// A synthetic target: 16 MiB, kernel text at kHomeVa, data at kDataVa.
struct Synthetic {
  PageTableBuilder builder{16 * MiB, 4};
  std::unique_ptr<ReadOnlyRam> ram;
  std::unique_ptr<GuestRam> guest;
  Synthetic() {
    builder.map(kHomeVa, kHomeGpa, 2 * MiB, P | A | pte::kDirty);
    builder.map(kDataVa, kDataGpa, 2 * MiB, P | A | PageTableBuilder::NX);
    for (std::uint64_t i = 0; i < 2 * MiB; i += 8) {
      const std::uint64_t v = i * 0x9e3779b97f4a7c15ull;
      std::memcpy(builder.bytes().data() + kDataGpa + i, &v, 8);
    }
    ram = std::make_unique<ReadOnlyRam>(builder.ram());
    guest = std::make_unique<GuestRam>(GuestRam::view(ram->bytes()));
  }
  AddressSpace space() const { return {builder.root(), PagingMode::k4Level, true}; }
};

class KernelImee : public ::testing::Test {
 protected:
  void SetUp() override {
    IMEE_NEED_BACKEND("kernel");
    kvm_ = Fd(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
    ASSERT_GE(kvm_.fd, 0);
    local_ = static_cast<std::byte*>(
        ::mmap(nullptr, kLocalBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(local_, MAP_FAILED);
    target_ =
        std::make_unique<Vm>(kvm_.fd, 1, 0, t_.ram->bytes().data(), t_.ram->bytes().size(), true);
  }
  void TearDown() override {
    if (local_ != nullptr && local_ != MAP_FAILED) ::munmap(local_, kLocalBytes);
  }

  std::unique_ptr<Vm> shell(int nvcpus = 1, std::uint64_t gpa = kLocalGpa) {
    return std::make_unique<Vm>(kvm_.fd, nvcpus, gpa, local_, kLocalBytes, false);
  }
  imee_launch args(int target_fd, int shell_fd) const {
    imee_launch a{};
    a.version = IMEE_VERSION;
    a.vm_fd = target_fd;
    a.shell_fd = shell_fd;
    a.imee_fd = -1;
    a.agent_gpa = kHomeGpa;
    a.agent_local_gpa = kLocalGpa;
    return a;
  }
  // IMEE_LAUNCH's errno (0 on success; the new fd is then closed unless `keep`).
  int launch(imee_launch a, Fd* keep = nullptr) {
    const int r = ::ioctl(kvm_.fd, IMEE_LAUNCH, &a);
    if (r < 0) return errno;
    if (keep != nullptr)
      *keep = Fd(r);
    else
      ::close(r);
    return 0;
  }

  static constexpr std::uint64_t kLocalBytes = 64 * 1024;
  Synthetic t_;
  Fd kvm_;
  std::byte* local_ = nullptr;
  std::unique_ptr<Vm> target_;
};

TEST_F(KernelImee, LaunchValidatesEveryArgument) {
  auto s = shell();
  const int tfd = target_->vm.fd, sfd = s->vm.fd;
  ASSERT_EQ(launch(args(tfd, sfd)), 0) << "a valid launch";

  auto with = [&](auto edit) {
    imee_launch a = args(tfd, sfd);
    edit(a);
    return launch(a);
  };
  EXPECT_EQ(with([](imee_launch& a) { a.version = 0; }), EPROTONOSUPPORT);
  EXPECT_EQ(with([](imee_launch& a) { a.version = 2; }), EPROTONOSUPPORT);
  EXPECT_EQ(with([](imee_launch& a) { a.flags = 1u << 5; }), EINVAL);
  EXPECT_EQ(with([](imee_launch& a) { a.reserved[2] = 1; }), EINVAL);
  EXPECT_EQ(with([](imee_launch& a) { a.imee_fd = 3; }), EINVAL);
  EXPECT_EQ(with([](imee_launch& a) { a.agent_gpa += 8; }), EINVAL);
  EXPECT_EQ(with([](imee_launch& a) { a.agent_local_gpa += 1; }), EINVAL);
  EXPECT_EQ(with([](imee_launch& a) { a.agent_gpa = 1ull << 52; }), EINVAL);
  EXPECT_EQ(with([](imee_launch& a) { a.agent_gpa = a.agent_local_gpa; }), EINVAL);
  // the agent's page must be shell memory, its home must not be
  EXPECT_EQ(with([](imee_launch& a) { a.agent_local_gpa = 2 * MiB; }), EINVAL);
  EXPECT_EQ(with([](imee_launch& a) { a.agent_gpa = kLocalGpa + 4096; }), EINVAL);
  // bad target fds: none, closed, not KVM, /dev/kvm itself, a vCPU
  const int closed = ::dup(tfd);
  ::close(closed);
  Fd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  for (int fd : {-1, closed, null.fd, kvm_.fd, target_->vcpus[0].fd, 100000})
    EXPECT_EQ(with([&](imee_launch& a) { a.vm_fd = fd; }), EBADF) << "vm_fd " << fd;
  for (int fd : {-1, closed, null.fd, kvm_.fd, s->vcpus[0].fd})
    EXPECT_EQ(with([&](imee_launch& a) { a.shell_fd = fd; }), EBADF) << "shell_fd " << fd;
  // vCPUs: the target's must exist; the shell needs exactly one that never ran
  for (std::uint32_t index : {1u, 64u, 0xffffffffu})
    EXPECT_EQ(with([&](imee_launch& a) { a.vcpu_index = index; }), EINVAL) << index;
  Vm no_vcpu(kvm_.fd, 0, 0, t_.ram->bytes().data(), 16 * MiB, true);
  EXPECT_EQ(with([&](imee_launch& a) { a.vm_fd = no_vcpu.vm.fd; }), EINVAL);
  auto two = shell(2);
  EXPECT_EQ(with([&](imee_launch& a) { a.shell_fd = two->vm.fd; }), EINVAL);
  EXPECT_EQ(with([&](imee_launch& a) { a.shell_fd = tfd; }), EINVAL) << "shell == target";
  // a shell whose memory hides target memory
  auto overlapping = shell(1, 8 * MiB);
  EXPECT_EQ(with([&](imee_launch& a) {
              a.shell_fd = overlapping->vm.fd;
              a.agent_local_gpa = 8 * MiB;
            }),
            EINVAL);
  // one ImEE per shell; a shell is not a target
  Fd live;
  ASSERT_EQ(launch(args(tfd, sfd), &live), 0);
  EXPECT_EQ(launch(args(tfd, sfd)), EBUSY);
  auto other = shell();
  EXPECT_EQ(with([&](imee_launch& a) {
              a.vm_fd = sfd;
              a.shell_fd = other->vm.fd;
            }),
            EBUSY);
  // retarget: imee_fd must be an ImEE, shell_fd -1
  EXPECT_EQ(with([&](imee_launch& a) {
              a.flags = IMEE_LAUNCH_RETARGET;
              a.imee_fd = live.fd;
            }),
            EINVAL);
  for (int fd : {-1, tfd, null.fd})
    EXPECT_EQ(with([&](imee_launch& a) {
                a.flags = IMEE_LAUNCH_RETARGET;
                a.shell_fd = -1;
                a.imee_fd = fd;
              }),
              EBADF);
  EXPECT_EQ(::ioctl(kvm_.fd, IMEE_LAUNCH, nullptr), -1);
  EXPECT_EQ(errno, EFAULT);
}

TEST_F(KernelImee, ActivateValidatesItsArgument) {
  auto s = shell();
  Fd imee;
  ASSERT_EQ(launch(args(target_->vm.fd, s->vm.fd), &imee), 0);
  auto activate = [&](imee_activate a) {
    return ::ioctl(imee.fd, IMEE_ACTIVATE, &a) == 0 ? 0 : errno;
  };
  imee_activate a{};
  a.version = IMEE_VERSION;
  a.mode = IMEE_ACTIVATE_BATCH;
  imee_activate bad = a;
  bad.version = 0;
  EXPECT_EQ(activate(bad), EPROTONOSUPPORT);
  for (std::uint32_t mode : {0u, 3u, 0x80000000u}) {
    bad = a;
    bad.mode = mode;
    EXPECT_EQ(activate(bad), EINVAL) << mode;
  }
  // flags is a bit set: IMEE_ACTIVATE_READ_TARGET_CR3 (bit 0) is valid, every other bit is not
  for (std::uint32_t flags :
       {~IMEE_ACTIVATE_VALID_FLAGS, 1u << 1, 1u << 31, IMEE_ACTIVATE_READ_TARGET_CR3 | (1u << 1)}) {
    bad = a;
    bad.flags = flags;
    EXPECT_EQ(activate(bad), EINVAL) << std::hex << flags;
  }
  for (std::size_t i = 0; i < std::size(a.reserved); ++i) {
    bad = a;
    bad.reserved[i] = 1ull << (i * 8);
    EXPECT_EQ(activate(bad), EINVAL) << "reserved[" << i << "]";
  }
  EXPECT_EQ(::ioctl(imee.fd, IMEE_ACTIVATE, nullptr), -1);
  EXPECT_EQ(errno, EFAULT);
  EXPECT_EQ(::ioctl(imee.fd, IMEE_LAUNCH, nullptr), -1);
  EXPECT_EQ(errno, ENOTTY);
  EXPECT_EQ(::ioctl(imee.fd, KVM_CREATE_VCPU, 0), -1);
  EXPECT_EQ(errno, ENOTTY);
  // A valid activation of an empty shell: its vCPU starts in real mode at a GPA without memory
  // and must stop with a typed fault, not hang.
  ASSERT_EQ(::ioctl(imee.fd, IMEE_ACTIVATE, &a), 0) << std::strerror(errno);
  EXPECT_EQ(a.status, static_cast<std::uint32_t>(IMEE_RESULT_FAULT));
  EXPECT_NE(a.fault_kind, static_cast<std::uint32_t>(IMEE_FAULT_NONE));
  EXPECT_GE(a.exits, 1u);
}

// Random IMEE_LAUNCH and IMEE_ACTIVATE arguments: every call gets an answer from a small set
// of errnos (or succeeds), and the machine is fine afterwards (the lab checks the kernel log).
TEST_F(KernelImee, RandomArgumentsGetErrorsNotCrashes) {
  auto s = shell();
  Fd imee;
  ASSERT_EQ(launch(args(target_->vm.fd, s->vm.fd), &imee), 0);
  Fd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  const int fds[] = {-1,      0,       target_->vm.fd,       s->vm.fd, imee.fd,
                     kvm_.fd, null.fd, target_->vcpus[0].fd, 4242,     -77};
  const std::set<int> allowed{0, EPROTONOSUPPORT, EINVAL, EBADF, EBUSY, EFAULT, EIO, ENOTTY};
  std::mt19937_64 rng(12345);
  const int calls = std::getenv("IMEE_IOCTL_FUZZ_CALLS")
                        ? std::atoi(std::getenv("IMEE_IOCTL_FUZZ_CALLS"))
                        : 10000;
  int launched = 0, refused = 0;
  for (int i = 0; i < calls; ++i) {
    imee_launch a{};
    auto* words = reinterpret_cast<std::uint64_t*>(&a);
    for (std::size_t w = 0; w < sizeof a / 8; ++w) words[w] = rng();
    if (rng() % 2) {  // often close to valid, so deeper checks are reached too
      a = args(fds[rng() % std::size(fds)], fds[rng() % std::size(fds)]);
      if (rng() % 3 == 0) a.flags = static_cast<std::uint32_t>(rng() % 4);
      if (rng() % 3 == 0) a.imee_fd = fds[rng() % std::size(fds)];
      if (rng() % 3 == 0) a.agent_gpa = (rng() % 64) << 20;
      if (rng() % 4 == 0) a.vcpu_index = static_cast<std::uint32_t>(rng() % 3);
    }
    const int r = launch(a);
    ASSERT_TRUE(allowed.count(r)) << "IMEE_LAUNCH call " << i << ": " << std::strerror(r);
    (r == 0 ? launched : refused)++;
  }
  RecordProperty("launch_calls", calls);
  EXPECT_GT(refused, calls / 2);
  std::printf("random IMEE_LAUNCH: %d calls, %d launched, %d refused\n", calls, launched, refused);
}

// x86 machine code pieces for the flat-mode agents below.
std::vector<std::uint8_t> le32(std::uint32_t v) {
  return {static_cast<std::uint8_t>(v), static_cast<std::uint8_t>(v >> 8),
          static_cast<std::uint8_t>(v >> 16), static_cast<std::uint8_t>(v >> 24)};
}
std::vector<std::uint8_t> cat(std::initializer_list<std::vector<std::uint8_t>> parts) {
  std::vector<std::uint8_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}
// mov eax, [addr] (64-bit mode: ModRM + SIB, absolute disp32)
std::vector<std::uint8_t> load(std::uint32_t addr) {
  return cat({{0x8b, 0x04, 0x25}, le32(addr)});
}
// mov eax, [gpa]; mov [0x3000], eax; hlt
std::vector<std::uint8_t> load_and_halt(std::uint32_t gpa) {
  return cat({load(gpa), {0x89, 0x04, 0x25}, le32(0x3000), {0xf4}});
}

// KVM's supported CPUID on `vcpu`, as libimee's shell gets it: long mode and NX need it. The ioctl
// numbers encode the kernel's 8-byte struct kvm_cpuid2 header: C++ sees 12 bytes (kvm_vm.cpp).
void set_supported_cpuid(int kvm, int vcpu) {
  constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, std::uint64_t);
  constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, std::uint64_t);
  std::vector<std::uint64_t> cpuid;
  for (std::uint32_t n = 64;; n *= 2) {  // E2BIG until the buffer is large enough
    cpuid.assign(1 + n * sizeof(kvm_cpuid_entry2) / 8, 0);
    reinterpret_cast<kvm_cpuid2*>(cpuid.data())->nent = n;
    if (::ioctl(kvm, kGetSupportedCpuid, cpuid.data()) == 0) break;
    if (errno != E2BIG || n >= 4096)
      throw std::runtime_error(std::string("KVM_GET_SUPPORTED_CPUID: ") + std::strerror(errno));
  }
  if (::ioctl(vcpu, kSetCpuid2, cpuid.data()) != 0)
    throw std::runtime_error(std::string("KVM_SET_CPUID2: ") + std::strerror(errno));
}

constexpr std::uint64_t kEferLongMode = 0x500;  // LME, LMA
constexpr std::uint64_t kEferNx = 0x800;
constexpr std::uint64_t kCr0 = 0x80010031;  // PG, WP, NE, ET, PE

// 64-bit ring 0, flat segments, paging with `cr3` (4-level, CR4.PAE only), empty descriptor tables
// at 0x3800 (every exception of an ImEE's vCPU is intercepted before it would use them).
void enter_flat_long_mode(int vcpu, std::uint64_t cr3, std::uint64_t efer = kEferLongMode) {
  kvm_sregs sregs{};
  if (::ioctl(vcpu, KVM_GET_SREGS, &sregs) != 0) throw std::runtime_error("KVM_GET_SREGS");
  kvm_segment code{};
  code.limit = 0xffffffff;
  code.selector = 8;
  code.type = 11;
  code.present = code.s = code.l = code.g = 1;
  kvm_segment data = code;
  data.selector = 16;
  data.type = 3;
  data.l = 0;
  data.db = 1;
  sregs.cs = code;
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
  sregs.tr = kvm_segment{};  // a 64-bit busy TSS and no LDT, as long mode requires
  sregs.tr.limit = 0x67;
  sregs.tr.type = 11;
  sregs.tr.present = 1;
  sregs.ldt = kvm_segment{};
  sregs.ldt.type = 2;
  sregs.ldt.unusable = 1;
  sregs.gdt.base = sregs.idt.base = 0x3800;
  sregs.gdt.limit = sregs.idt.limit = 0xff;
  sregs.cr0 = kCr0;
  sregs.cr3 = cr3;
  sregs.cr4 = 0x20;  // PAE
  sregs.efer = efer;
  if (::ioctl(vcpu, KVM_SET_SREGS, &sregs) != 0)
    throw std::runtime_error(std::string("KVM_SET_SREGS: ") + std::strerror(errno));
}

// IMEE_GET_STATS of an ImEE fd (all zero, and a test failure, if it fails).
imee_stats stats_of(int imee_fd) {
  imee_stats s{};
  s.version = IMEE_VERSION;
  EXPECT_EQ(::ioctl(imee_fd, IMEE_GET_STATS, &s), 0) << std::strerror(errno);
  return s;
}

// An ImEE whose agent is not ours but the test's: 64-bit mode over identity page tables for the
// first 4 GiB (linear address = guest-physical address), code at shell GPA 0x1000, so each
// access goes straight to the ImEE's EPT. The shell is `local` at GPA 0 (code 0x1000, agent page
// 0x2000, output and stack 0x3000, page tables 0x4000-0x9fff, free for the tests 0xa000 on);
// agent_gpa is `agent_gpa`.
class FlatAgent {
 public:
  FlatAgent(int kvm, int target_vm, std::byte* local, std::uint64_t local_bytes,
            std::uint64_t agent_gpa)
      : kvm_(kvm), shell_(kvm, 1, 0, local, local_bytes, false), local_(local) {
    auto* table = reinterpret_cast<std::uint64_t*>(local);
    constexpr std::uint64_t kPresentWritable = 3, kAccessed = 1 << 5, kDirty = 1 << 6,
                            kLarge = 1 << 7;
    table[0x4000 / 8] = 0x5000 | kPresentWritable | kAccessed;  // PML4[0] -> PDPT
    for (std::uint64_t i = 0; i < 4; ++i) {
      table[0x5000 / 8 + i] = (0x6000 + i * 0x1000) | kPresentWritable | kAccessed;
      for (std::uint64_t j = 0; j < 512; ++j)  // 2 MiB pages
        table[(0x6000 + i * 0x1000) / 8 + j] =
            ((i * 512 + j) << 21) | kPresentWritable | kAccessed | kDirty | kLarge;
    }
    set_supported_cpuid(kvm, vcpu());
    enter_flat_long_mode(vcpu(), 0x4000);
    imee_launch a{};
    a.version = IMEE_VERSION;
    a.vm_fd = target_vm;
    a.shell_fd = shell_.vm.fd;
    a.imee_fd = -1;
    a.agent_gpa = agent_gpa;
    a.agent_local_gpa = 0x2000;
    imee_ = Fd(::ioctl(kvm, IMEE_LAUNCH, &a));
    if (imee_.fd < 0) throw std::runtime_error(std::string("IMEE_LAUNCH: ") + std::strerror(errno));
  }

  // The program at 0x1000, and the vCPU at its start (or at `rip`).
  void install(const std::vector<std::uint8_t>& program) {
    std::memcpy(local_ + 0x1000, program.data(), program.size());
  }
  void restart(std::uint64_t rip = 0x1000) {
    kvm_regs regs{};
    regs.rip = rip;
    // IF=1 on AMD: Bochs' AMD model masks host interrupts for a guest entered with IF=0, so a
    // spinning agent would never exit there (agent/README.md); nothing injects an interrupt.
    regs.rflags = cpu_is_amd() ? 0x202 : 2;
    regs.rsp = 0x3000;
    EXPECT_EQ(::ioctl(vcpu(), KVM_SET_REGS, &regs), 0);
  }
  // IMEE_ACTIVATE: 0 and the result in `out`, or the errno.
  int activate(imee_activate* out, std::uint32_t mode = IMEE_ACTIVATE_BATCH,
               std::uint32_t flags = 0) const {
    *out = imee_activate{};
    out->version = IMEE_VERSION;
    out->mode = mode;
    out->flags = flags;
    return ::ioctl(imee_.fd, IMEE_ACTIVATE, out) == 0 ? 0 : errno;
  }
  imee_activate run(const std::vector<std::uint8_t>& program) {
    install(program);
    restart();
    imee_activate act{};
    EXPECT_EQ(activate(&act), 0) << std::strerror(errno);
    return act;
  }
  // The value load_and_halt() stored, or the fault kind | 0x10000000 if it stopped.
  std::uint64_t load(std::uint32_t gpa) {
    std::memset(local_ + 0x3000, 0xcc, 4);
    const imee_activate r = run(load_and_halt(gpa));
    if (r.status != IMEE_RESULT_DONE) return 0x10000000ull | r.fault_kind;
    std::uint32_t v = 0;
    std::memcpy(&v, local_ + 0x3000, 4);
    return v;
  }
  // IMEE_LAUNCH_RETARGET to `target_vm` (vCPU 0), the agent's home at `agent_gpa`: the errno.
  int retarget(int target_vm, std::uint64_t agent_gpa) {
    imee_launch a{};
    a.version = IMEE_VERSION;
    a.flags = IMEE_LAUNCH_RETARGET;
    a.vm_fd = target_vm;
    a.shell_fd = -1;
    a.imee_fd = imee_.fd;
    a.agent_gpa = agent_gpa;
    a.agent_local_gpa = 0x2000;
    return ::ioctl(kvm_, IMEE_LAUNCH, &a) == 0 ? 0 : errno;
  }

  int imee_fd() const { return imee_.fd; }
  int vcpu() const { return shell_.vcpus[0].fd; }

 private:
  int kvm_;
  Vm shell_;
  Fd imee_;
  std::byte* local_;
};

// A hostile agent: writing or executing target memory, reading the agent's own home page or
// memory that is nobody's, and exceptions all stop the activation with their typed fault; the
// target's RAM is unchanged; a plain read of target memory completes. On AMD (NPT: no
// execute-only entries) a read of the home is not a fault: it returns the agent's own bytes.
TEST_F(KernelImee, HostileAgentIsStoppedByTheEpt) {
  constexpr std::uint64_t kTargetGpa = 64 * MiB, kAgentGpa = kTargetGpa + 8192;
  Vm target(kvm_.fd, 1, kTargetGpa, t_.ram->bytes().data(), t_.ram->bytes().size(), true);
  FlatAgent agent(kvm_.fd, target.vm.fd, local_, kLocalBytes, kAgentGpa);
  auto run = [&](const std::vector<std::uint8_t>& p) { return agent.run(p); };
  const test::RamSnapshot before({t_.ram->bytes()});
  const std::uint32_t target_data = kTargetGpa + kDataGpa + 64;

  // a read of target memory completes
  imee_activate r = run(load_and_halt(target_data));
  EXPECT_EQ(r.status, static_cast<std::uint32_t>(IMEE_RESULT_DONE)) << r.fault_kind;
  std::uint32_t got = 0, want = 0;
  std::memcpy(&got, local_ + 0x3000, 4);
  std::memcpy(&want, t_.ram->bytes().data() + kDataGpa + 64, 4);
  EXPECT_EQ(got, want);

  struct Case {
    const char* what;
    std::vector<std::uint8_t> program;
    std::uint32_t kind;
    std::uint64_t addr;
  };
  const Case cases[] = {
      // mov dword [target], 0xdeadbeef
      {"write to target memory",
       cat({{0xc7, 0x04, 0x25}, le32(target_data), le32(0xdeadbeef), {0xf4}}), IMEE_FAULT_FORBIDDEN,
       target_data & ~0xfffull},
      // mov eax, target; jmp rax
      {"execute target memory", cat({{0xb8}, le32(kTargetGpa + kHomeGpa), {0xff, 0xe0}}),
       IMEE_FAULT_FORBIDDEN, kTargetGpa + kHomeGpa},
      // mov eax, [agent home]
      {"read the agent's home", cat({load(kAgentGpa + 16), {0xf4}}), IMEE_FAULT_BLIND_SPOT,
       kAgentGpa + 16},
      // mov eax, [1 GiB]: nobody's memory
      {"read memory that is nobody's", cat({load(1u << 30), {0xf4}}), IMEE_FAULT_NO_GPA, 1u << 30},
      // ud2
      {"an exception", {0x0f, 0x0b}, IMEE_FAULT_EXCEPTION, 0},
  };
  const bool readable_home = agent_readable();
  constexpr std::uint32_t kAgentMark = 0x5aa5c33c;
  for (const Case& c : cases) {
    if (readable_home && c.kind == IMEE_FAULT_BLIND_SPOT) {
      // The agent's page is the shell's 0x2000 (FlatAgent): the read returns its bytes, never
      // the target's at that GPA.
      std::memcpy(local_ + 0x2000 + 16, &kAgentMark, 4);
      std::uint32_t target_bytes = 0;
      std::memcpy(&target_bytes, t_.ram->bytes().data() + (kAgentGpa - kTargetGpa) + 16, 4);
      ASSERT_NE(target_bytes, kAgentMark) << "the case must tell the two apart";
      r = run(load_and_halt(kAgentGpa + 16));
      EXPECT_EQ(r.status, static_cast<std::uint32_t>(IMEE_RESULT_DONE)) << c.what << r.fault_kind;
      std::uint32_t got_home = 0;
      std::memcpy(&got_home, local_ + 0x3000, 4);
      EXPECT_EQ(got_home, kAgentMark) << c.what << ": the agent's bytes (NPT)";
      continue;
    }
    r = run(c.program);
    EXPECT_EQ(r.status, static_cast<std::uint32_t>(IMEE_RESULT_FAULT)) << c.what;
    EXPECT_EQ(r.fault_kind, c.kind) << c.what;
    if (c.kind != IMEE_FAULT_EXCEPTION) {
      EXPECT_EQ(r.fault_addr & ~0xfffull, c.addr & ~0xfffull)
          << c.what << std::hex << " 0x" << r.fault_addr;
    } else {
      EXPECT_EQ(r.fault_info & 0xff, 6u) << "#UD";
    }
  }
  test::expect_ram_unchanged(before);

  // An agent that never halts is interrupted by a signal, and the ImEE stays usable. The loop is
  // `1: pause; jmp 1b` (like the agent's poll loop): a bare `jmp $` stopped Bochs' L1 entirely
  // (no interrupt reached it any more), an emulator matter that real VT-x does not share.
  struct sigaction quiet {
  }, old{};
  quiet.sa_handler = [](int) {};
  ASSERT_EQ(::sigaction(SIGALRM, &quiet, &old), 0);
  itimerval in50ms{};
  in50ms.it_value.tv_usec = 50000;
  ::setitimer(ITIMER_REAL, &in50ms, nullptr);
  r = run({0xf3, 0x90, 0xeb, 0xfc});
  const itimerval off{};
  ::setitimer(ITIMER_REAL, &off, nullptr);
  ::sigaction(SIGALRM, &old, nullptr);
  EXPECT_EQ(r.status, static_cast<std::uint32_t>(IMEE_RESULT_INTERRUPTED));
  r = run(load_and_halt(target_data));
  EXPECT_EQ(r.status, static_cast<std::uint32_t>(IMEE_RESULT_DONE));
}

std::uint64_t pagemap_entry(const void* p) {
  return test::pagemap_entry("self", reinterpret_cast<std::uintptr_t>(p));
}
std::uint64_t pfn_of(const void* p) {  // 0 if not present
  const std::uint64_t e = pagemap_entry(p);
  return test::page_present(e) ? e & ((1ull << 55) - 1) : 0;
}
std::string read_line(const std::string& path) {
  std::string v;
  std::getline(std::ifstream(path), v);
  return v;
}
bool write_line(const std::string& path, const std::string& v) {
  std::ofstream out(path);
  out << v << '\n';
  out.flush();
  return static_cast<bool>(out);
}

// The host changes what backs the target's memory while an ImEE is live: pages dropped
// (madvise DONTNEED), replaced (mmap MAP_FIXED, copy-on-write after a fork), protected
// (mprotect), compacted, swapped out (MADV_PAGEOUT), merged by KSM and split again, collapsed
// into a huge page (each page copied, the old ones freed: what migration does): every read shows
// what the target holds now, never a page it no longer owns; memslots deleted, moved and
// re-created are followed too.
TEST_F(KernelImee, HostRemapsAndMemslotChangesAreFollowed) {
  constexpr std::uint64_t kTargetGpa = 64 * MiB, kBytes = 4 * MiB, kPage = 4096;
  // 2 MiB aligned (the huge-page collapse below), in 4 KiB pages until then
  auto* raw = static_cast<std::byte*>(::mmap(nullptr, kBytes + 2 * MiB, PROT_READ | PROT_WRITE,
                                             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(raw, MAP_FAILED);
  auto* mem = reinterpret_cast<std::byte*>((reinterpret_cast<std::uintptr_t>(raw) + 2 * MiB - 1) &
                                           ~(2 * MiB - 1));
  if (mem != raw) ::munmap(raw, mem - raw);
  ::munmap(mem + kBytes, raw + 2 * MiB - mem);
  ASSERT_EQ(::madvise(mem, kBytes, MADV_NOHUGEPAGE), 0);
  auto put = [&](std::uint64_t off, std::uint32_t v) { std::memcpy(mem + off, &v, 4); };
  for (std::uint64_t off = 0; off < kBytes; off += kPage) put(off + 16, 0xa0000000u | off / kPage);
  Vm target(kvm_.fd, 1, kTargetGpa, mem, kBytes, false);
  FlatAgent agent(kvm_.fd, target.vm.fd, local_, kLocalBytes, kTargetGpa + kBytes - kPage);
  const std::uint32_t at = kTargetGpa + 5 * kPage + 16;
  constexpr std::uint64_t kNoGpa = 0x10000000ull | IMEE_FAULT_NO_GPA;
  std::byte* const page5 = mem + 5 * kPage;

  EXPECT_EQ(agent.load(at), 0xa0000005u);
  ASSERT_EQ(::madvise(page5, kPage, MADV_DONTNEED), 0);
  EXPECT_EQ(agent.load(at), 0u) << "the page the ImEE mapped was dropped: it reads zeros now";
  put(5 * kPage + 16, 0xb0000005u);
  EXPECT_EQ(agent.load(at), 0xb0000005u) << "a new page was faulted in";
  void* again =
      ::mmap(mem, 2 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  ASSERT_EQ(again, static_cast<void*>(mem));
  ASSERT_EQ(::madvise(mem, 2 * MiB, MADV_NOHUGEPAGE), 0);
  put(5 * kPage + 16, 0xc0000005u);
  EXPECT_EQ(agent.load(at), 0xc0000005u) << "the VMM mapped new memory at the same address";
  ASSERT_EQ(::mprotect(mem, 2 * MiB, PROT_NONE), 0);
  EXPECT_EQ(agent.load(at), kNoGpa) << "the VMM's mapping allows no access";
  ASSERT_EQ(::mprotect(mem, 2 * MiB, PROT_READ | PROT_WRITE), 0);
  EXPECT_EQ(agent.load(at), 0xc0000005u);

  // Memory compaction moves movable pages; the page's PFN says whether it did.
  for (int round = 0; round < 3; ++round) {
    const std::uint64_t before = pfn_of(page5);
    write_line("/proc/sys/vm/compact_memory", "1");
    const std::uint64_t after = pfn_of(page5);
    EXPECT_EQ(agent.load(at), 0xc0000005u) << "after compaction round " << round;
    std::printf("compaction round %d: the target's page %s (pfn 0x%llx -> 0x%llx)\n", round,
                before == after ? "stayed" : "MOVED", static_cast<unsigned long long>(before),
                static_cast<unsigned long long>(after));
    put(5 * kPage + 16, 0xc0000005u);
  }

  // Swap-out: the page the ImEE maps goes to swap; the ImEE's next read brings it back.
  if (const std::string device = test::active_swap(); !device.empty()) {
    EXPECT_EQ(agent.load(at), 0xc0000005u);
    bool out = false;
    for (int attempt = 0; attempt < 3 && !out; ++attempt) {  // a page not yet on the LRU stays
      ASSERT_EQ(::madvise(page5, kPage, MADV_PAGEOUT), 0) << std::strerror(errno);
      out = test::page_swapped(pagemap_entry(page5));
      if (!out) write_line("/proc/sys/vm/compact_memory", "1");  // drains the LRU caches
    }
    std::printf("swap-out (%s): the target's page is %s\n", device.c_str(),
                out ? "in swap" : "STILL RESIDENT");
    EXPECT_TRUE(out) << "MADV_PAGEOUT did not swap the target's page out";
    EXPECT_EQ(agent.load(at), 0xc0000005u) << "read through the ImEE after the swap-out";
    EXPECT_NE(pfn_of(page5), 0u) << "the ImEE's read swapped the page back in";
  } else if (test::imee_required()) {
    ADD_FAILURE() << "no swap: the VT-x lab sets up zram swap for this test";
  } else {
    std::printf("swap-out not exercised: this machine has no swap\n");
  }

  // KSM: two identical pages merged into one shared page, the sharing broken by a write, the
  // merge undone.
  const std::string ksm = "/sys/kernel/mm/ksm/";
  if (::access((ksm + "run").c_str(), W_OK) == 0) {
    std::byte* const page7 = mem + 7 * kPage;
    std::memset(page7, 0x5a, 2 * kPage);  // pages 7 and 8
    const std::uint32_t at7 = at + 2 * kPage, at8 = at + 3 * kPage;
    EXPECT_EQ(agent.load(at7), 0x5a5a5a5au);
    EXPECT_EQ(agent.load(at8), 0x5a5a5a5au);
    ASSERT_EQ(::madvise(page7, 2 * kPage, MADV_MERGEABLE), 0) << std::strerror(errno);
    const std::string sleep_ms = read_line(ksm + "sleep_millisecs");
    const std::string to_scan = read_line(ksm + "pages_to_scan");
    ASSERT_TRUE(write_line(ksm + "sleep_millisecs", "0") &&
                write_line(ksm + "pages_to_scan", "1000") && write_line(ksm + "run", "1"));
    auto merged_now = [&] {
      const std::uint64_t pfn = pfn_of(page7);
      return pfn != 0 && pfn == pfn_of(page7 + kPage);
    };
    const auto start = std::chrono::steady_clock::now();
    while (!merged_now() && std::chrono::steady_clock::now() - start < std::chrono::seconds(10))
      ::usleep(1000);
    const bool merged = merged_now();
    std::printf("KSM: pages 7 and 8 %s (pfn 0x%llx, 0x%llx; %s full scans)\n",
                merged ? "merged" : "NOT MERGED", static_cast<unsigned long long>(pfn_of(page7)),
                static_cast<unsigned long long>(pfn_of(page7 + kPage)),
                read_line(ksm + "full_scans").c_str());
    EXPECT_TRUE(merged) << "ksmd did not merge two identical pages within 10 s";
    EXPECT_EQ(agent.load(at7), 0x5a5a5a5au) << "merged";
    EXPECT_EQ(agent.load(at8), 0x5a5a5a5au) << "merged";
    put(7 * kPage + 16, 0xf0000007u);  // copy-on-write: page 7 gets its own page again
    EXPECT_EQ(agent.load(at7), 0xf0000007u) << "page 7 after the write broke the sharing";
    EXPECT_EQ(agent.load(at8), 0x5a5a5a5au) << "page 8, still the KSM page";
    write_line(ksm + "run", "2");  // unmerge everything and stop
    EXPECT_EQ(agent.load(at8), 0x5a5a5a5au) << "page 8 after the unmerge";
    write_line(ksm + "sleep_millisecs", sleep_ms);
    write_line(ksm + "pages_to_scan", to_scan);
    write_line(ksm + "run", "0");
  } else if (test::imee_required()) {
    ADD_FAILURE() << "no KSM control (" << ksm << "run)";
  }

  // Huge-page collapse of the second 2 MiB: every page is copied into a new huge page and the
  // old ones are freed; the ImEE must read the copies.
  {
    std::byte* const half = mem + 2 * MiB;
    const std::uint32_t at2 = kTargetGpa + 2 * MiB + 5 * kPage + 16;
    EXPECT_EQ(agent.load(at2), 0xa0000000u | (512 + 5));
    const std::uint64_t before = pfn_of(half + 5 * kPage);
    ASSERT_EQ(::madvise(half, 2 * MiB, MADV_HUGEPAGE), 0);
    int r = -1;
    for (int attempt = 0; attempt < 3 && r != 0; ++attempt) {  // EAGAIN, or no free huge page yet
      r = ::madvise(half, 2 * MiB, MADV_COLLAPSE);
      if (r != 0) write_line("/proc/sys/vm/compact_memory", "1");
    }
    EXPECT_EQ(r, 0) << "MADV_COLLAPSE: " << std::strerror(errno);
    const std::uint64_t after = pfn_of(half + 5 * kPage);
    std::printf("huge-page collapse: the target's page 0x%llx -> 0x%llx\n",
                static_cast<unsigned long long>(before), static_cast<unsigned long long>(after));
    EXPECT_NE(after, before) << "the collapse copied the page";
    EXPECT_EQ(agent.load(at2), 0xa0000000u | (512 + 5)) << "after the collapse";
    EXPECT_EQ(agent.load(at2 + 300 * kPage), 0xa0000000u | (512 + 305)) << "after the collapse";
  }

  // Copy-on-write: after a fork the page is shared; the VMM's next write gives it a new page while
  // the old one lives on in the child, a page the target no longer owns. The ImEE must follow.
  EXPECT_EQ(agent.load(at), 0xc0000005u);  // the ImEE maps the page now
  const std::uint64_t shared_pfn = pfn_of(page5);
  int hold[2];
  ASSERT_EQ(::pipe(hold), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // keeps the old page alive until the parent is done
    ::close(hold[1]);
    char c;
    (void)!::read(hold[0], &c, 1);
    _exit(0);
  }
  put(5 * kPage + 16, 0xe0000005u);  // breaks the sharing
  const std::uint64_t own_pfn = pfn_of(page5);
  EXPECT_EQ(agent.load(at), 0xe0000005u)
      << "after copy-on-write: the VMM's new page, not the child's";
  std::printf("copy-on-write: the target's page 0x%llx -> 0x%llx\n",
              static_cast<unsigned long long>(shared_pfn),
              static_cast<unsigned long long>(own_pfn));
  if (shared_pfn != 0 && own_pfn != 0) {
    EXPECT_NE(own_pfn, shared_pfn);
  }
  ::close(hold[1]);
  ::waitpid(child, nullptr, 0);
  ::close(hold[0]);

  // memslots: delete, re-create over other memory, move
  auto slot = [&](std::uint64_t gpa, std::uint64_t size, void* host) {
    kvm_userspace_memory_region r{};
    r.guest_phys_addr = gpa;
    r.memory_size = size;
    r.userspace_addr = reinterpret_cast<std::uint64_t>(host);
    return ::ioctl(target.vm.fd, KVM_SET_USER_MEMORY_REGION, &r);
  };
  ASSERT_EQ(slot(kTargetGpa, 0, mem), 0);
  EXPECT_EQ(agent.load(at), kNoGpa) << "deleted memslot";
  std::vector<std::byte> other_storage(kBytes + kPage);
  auto* other = reinterpret_cast<std::byte*>(
      (reinterpret_cast<std::uintptr_t>(other_storage.data()) + kPage - 1) & ~(kPage - 1));
  std::uint32_t d = 0xd0000005u;
  std::memcpy(other + 5 * kPage + 16, &d, 4);
  ASSERT_EQ(slot(kTargetGpa, kBytes, other), 0);
  EXPECT_EQ(agent.load(at), 0xd0000005u) << "re-created over other memory";
  ASSERT_EQ(slot(kTargetGpa, 0, other), 0);
  ASSERT_EQ(slot(kTargetGpa + 16 * MiB, kBytes, other), 0);
  EXPECT_EQ(agent.load(at), kNoGpa) << "moved away";
  EXPECT_EQ(agent.load(at + 16 * MiB), 0xd0000005u) << "moved here";
  ::munmap(mem, kBytes);
}

// The target's VMM exits mid-session: the next read fails with a clear error, nothing hangs.
TEST_F(KernelImee, TargetExitEndsTheSessionCleanly) {
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // the "VMM": a VM over the same (shared) RAM, then wait to be killed
    try {
      target_.reset();  // inherited: the VMM holds its own VM only
      Vm vm(kvm_.fd, 1, 0, t_.ram->bytes().data(), t_.ram->bytes().size(), true);
      const char ok = 1;
      if (::write(ready[1], &ok, 1) != 1) _exit(1);
      ::pause();
    } catch (...) {
    }
    _exit(1);
  }
  ::close(ready[1]);
  char ok = 0;
  ASSERT_EQ(::read(ready[0], &ok, 1), 1);
  ::close(ready[0]);

  {
    KernelBackend imee(*t_.guest, {t_.space(), kHomeVa}, KernelVm{.qemu_pid = child});
    std::vector<std::byte> got(256), want(256);
    ASSERT_TRUE(imee.read(t_.space(), kDataVa + 4096, got).ok());
    ASSERT_TRUE(SoftBackend(*t_.guest).read(t_.space(), kDataVa + 4096, want).ok());
    EXPECT_EQ(got, want);
    ::kill(child, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    try {
      (void)imee.read(t_.space(), kDataVa + 8192, got);
      ADD_FAILURE() << "a read after the target's VMM exited must fail";
    } catch (const Exception& e) {
      EXPECT_NE(std::string(e.what()).find("gone"), std::string::npos) << e.what();
    }
  }
}

// kvm.imee_objects / kvm.imee_pages: what live ImEEs hold (kernel/imee/imee_main.c)
std::int64_t kvm_counter(const char* name) {
  std::ifstream in(std::string("/sys/module/kvm/parameters/") + name);
  std::int64_t v = -1;
  if (!(in >> v)) ADD_FAILURE() << "no counter /sys/module/kvm/parameters/" << name;
  return v;
}

std::uint64_t meminfo_kb(const char* field) {
  std::ifstream in("/proc/meminfo");
  std::string name;
  std::uint64_t kb = 0;
  while (in >> name >> kb) {
    if (name == std::string(field) + ":") return kb;
    in.ignore(64, '\n');
  }
  return 0;
}

// VmLck of this process (/proc/self/status): its locked_vm, what ImEEs charge pinned pages to.
std::int64_t vmlck_kb() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmLck:", 0) == 0) return std::atoll(line.c_str() + 6);
  return -1;
}

// /sys/module/NAME/refcnt: kvm_intel's (kvm_amd's) counts every KVM VM that exists (kvm_create_vm()
// takes a reference on kvm_chardev_ops.owner, kvm_destroy_vm() drops it) and the open KVM files. -1
// if the module has no such file (built in).
std::int64_t module_refcnt(const char* module) {
  std::ifstream in(std::string("/sys/module/") + module + "/refcnt");
  std::int64_t v = -1;
  return in >> v ? v : -1;
}

// Launch, use and close ImEEs many times (the fds in every order): kernel memory comes back, every
// shell VM is destroyed (the vendor module's references) and every pinned page uncharged (VmLck).
TEST_F(KernelImee, LaunchTeardownCyclesLeakNothing) {
  const int cycles =
      std::getenv("IMEE_TEARDOWN_CYCLES") ? std::atoi(std::getenv("IMEE_TEARDOWN_CYCLES")) : 50;
  auto cycle = [&](int i) {
    auto s = std::make_unique<Vm>(kvm_.fd, 1, kLocalGpa, local_, kLocalBytes, false);
    auto imee = std::make_unique<Fd>();
    ASSERT_EQ(launch(args(target_->vm.fd, s->vm.fd), imee.get()), 0);
    imee_activate a{};
    a.version = IMEE_VERSION;
    a.mode = IMEE_ACTIVATE_BATCH;
    ASSERT_EQ(::ioctl(imee->fd, IMEE_ACTIVATE, &a), 0);  // runs until its first fault
    if (i == 0) {  // the counters the leak check compares do count
      EXPECT_GE(kvm_counter("imee_objects"), 1);
      EXPECT_GE(kvm_counter("imee_pages"), 1) << "the EPT root at least";
    }
    switch (i % 3) {  // close order: ImEE then shell; shell then ImEE (still usable); scope end
      case 0:
        imee.reset();
        s.reset();
        break;
      case 1:
        s.reset();
        ASSERT_EQ(::ioctl(imee->fd, IMEE_ACTIVATE, &a), 0) << "the ImEE keeps its shell";
        imee.reset();
        break;
      default:
        break;
    }
  };
  for (int i = 0; i < 20; ++i) cycle(i);  // warm caches and slabs
  const std::uint64_t slab = meminfo_kb("Slab"), avail = meminfo_kb("MemAvailable");
  const std::int64_t objects = kvm_counter("imee_objects"), pages = kvm_counter("imee_pages");
  const char* vendor_module = kvm_vendor_module();
  const std::int64_t vms = module_refcnt(vendor_module), locked = vmlck_kb();
  for (int i = 0; i < cycles; ++i) cycle(i);
  const std::int64_t vms_after = module_refcnt(vendor_module), locked_after = vmlck_kb();
  const std::int64_t slab_growth =
      static_cast<std::int64_t>(meminfo_kb("Slab")) - static_cast<std::int64_t>(slab);
  const std::int64_t avail_drop =
      static_cast<std::int64_t>(avail) - static_cast<std::int64_t>(meminfo_kb("MemAvailable"));
  const std::int64_t objects_after = kvm_counter("imee_objects");
  const std::int64_t pages_after = kvm_counter("imee_pages");
  std::printf(
      "%d launch/teardown cycles: ImEEs %lld -> %lld, ImEE pages %lld -> %lld, Slab %+lld kB, "
      "MemAvailable %+lld kB\n",
      cycles, static_cast<long long>(objects), static_cast<long long>(objects_after),
      static_cast<long long>(pages), static_cast<long long>(pages_after),
      static_cast<long long>(slab_growth), static_cast<long long>(-avail_drop));
  RecordProperty("teardown_cycles", cycles);
  // The module counts what ImEEs hold (their structs; EPT tables and pinned pages): exactly what
  // was there before. Slab also holds the shells' KVM objects (a leaked vCPU is ~10 kB).
  // MemAvailable is reported, not judged: the lab's guests run beside the test and move it by
  // megabytes.
  std::printf("  %s references %lld -> %lld, VmLck %lld -> %lld kB\n", vendor_module,
              static_cast<long long>(vms), static_cast<long long>(vms_after),
              static_cast<long long>(locked), static_cast<long long>(locked_after));
  EXPECT_EQ(objects_after, objects) << "ImEEs leaked";
  EXPECT_EQ(pages_after, pages) << "pages leaked";
  // Each cycle's shell VM is gone once its ImEE and its fds are (the ImEE holds a VM reference):
  // nothing else in L1 creates or destroys VMs meanwhile (the lab's QEMUs keep theirs).
  EXPECT_GE(vms, 0) << "no /sys/module/" << vendor_module << "/refcnt";
  EXPECT_EQ(vms_after, vms) << "shell VMs leaked";
  EXPECT_GE(locked, 0) << "no VmLck in /proc/self/status";
  EXPECT_EQ(locked_after, locked) << "pinned shell pages still charged to RLIMIT_MEMLOCK";
  EXPECT_LT(slab_growth, cycles * 4 / 2 + 512);
}

// The tool dies while its ImEE is in guest mode (poll mode): the target is untouched and a new
// ImEE on it works.
TEST_F(KernelImee, ToolKilledMidPollLeavesTheTargetUsable) {
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    try {
      KernelBackend imee(*t_.guest, {t_.space(), kHomeVa}, KernelVm{.vm_fd = target_->vm.fd});
      imee.start_polling();
      std::vector<std::byte> buf(64);
      if (!imee.read(t_.space(), kDataVa, buf).ok()) _exit(2);
      const char ok = 1;
      if (::write(ready[1], &ok, 1) != 1) _exit(3);
      ::pause();
    } catch (...) {
    }
    _exit(1);
  }
  ::close(ready[1]);
  char ok = 0;
  ASSERT_EQ(::read(ready[0], &ok, 1), 1) << "the child's ImEE did not serve a read";
  ::close(ready[0]);
  ::usleep(20000);  // let the poll-mode agent spin
  ::kill(child, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFSIGNALED(status));

  KernelBackend again(*t_.guest, {t_.space(), kHomeVa}, KernelVm{.vm_fd = target_->vm.fd});
  std::vector<std::byte> got(512), want(512);
  ASSERT_TRUE(again.read(t_.space(), kDataVa + 100, got).ok());
  ASSERT_TRUE(SoftBackend(*t_.guest).read(t_.space(), kDataVa + 100, want).ok());
  EXPECT_EQ(got, want);
}

// Poll mode: once the EPT holds the pages, reads cost the ImEE vCPU no VM exits: exactly 0 EPT
// violations and 0 exceptions, and every read answered by the ImEE. Every exit that remains is
// accounted for by its VMX exit reason (the module counts each one): external interrupts (host
// timer ticks and IPIs: with one CPU in the lab, the reader and the vCPU thread take turns, and
// the vCPU leaves guest mode when a tick ends its turn), PAUSE (pause-loop exiting: the agent
// spins on its doorbell while no request is posted, and KVM hands the CPU to the reader) and the
// one HLT that ends the activation when polling stops. None is caused by a read; any other reason
// fails the test. (Measured in the lab, 6.1 and 6.12 alike: ~150 PAUSE, 1 HLT, 0 interrupts.)
TEST_F(KernelImee, PollModeReadsCauseNoExits) {
  if (test::kernel_walk_copies())
    GTEST_SKIP() << "this CPU's nested walks write every guest page-table entry they read (AMD): "
                    "poll mode has no activation end to check page-table copies at, so each "
                    "walk stops (NEEDS_A_BIT) and software answers (kernel/README.md, \"Guest "
                    "page-table walks\")";
  KernelBackend imee(*t_.guest, {t_.space(), kHomeVa}, KernelVm{.vm_fd = target_->vm.fd});
  SoftBackend soft(*t_.guest);
  constexpr int kBatches = 50, kPerBatch = 80;
  std::vector<std::vector<std::byte>> bufs(kPerBatch, std::vector<std::byte>(64));
  auto batch = [&](int round) {
    std::vector<ReadRequest> reqs;
    for (int i = 0; i < kPerBatch; ++i)
      reqs.push_back(
          {t_.space(), kDataVa + ((round * kPerBatch + i) % 512) * 4096 + 8, bufs[i], {}});
    imee.read_batch(reqs);
    for (const ReadRequest& r : reqs) ASSERT_TRUE(r.status.ok());
  };
  imee.start_polling();
  for (int b = 0; b < 8; ++b) batch(b);  // warm up: every page once (EPT violations)
  imee.stop_polling();
  const BackendStats before = imee.stats();
  imee.start_polling();
  for (int b = 0; b < kBatches; ++b) batch(b);
  imee.stop_polling();
  const BackendStats after = imee.stats();
  const std::uint64_t exits = after.vm_exits - before.vm_exits;
  const std::uint64_t interrupts = after.exits_interrupt - before.exits_interrupt;
  const std::uint64_t other = after.exits_other - before.exits_other;
  const int reads = kBatches * kPerBatch;
  std::printf(
      "poll mode: %d reads, %llu VM exits of the ImEE vCPU (%llu EPT violations, %llu "
      "exceptions, %llu external interrupts, %llu other)\n",
      reads, static_cast<unsigned long long>(exits),
      static_cast<unsigned long long>(after.exits_ept_violation - before.exits_ept_violation),
      static_cast<unsigned long long>(after.exits_exception - before.exits_exception),
      static_cast<unsigned long long>(interrupts), static_cast<unsigned long long>(other));
  RecordProperty("poll_reads", reads);
  RecordProperty("poll_exits", static_cast<int>(exits));
  EXPECT_EQ(after.exits_ept_violation, before.exits_ept_violation) << "a read faulted a page in";
  EXPECT_EQ(after.exits_exception, before.exits_exception);
  EXPECT_EQ(exits, interrupts + other);
  BackendStats delta;
  for (std::size_t r = 0; r < delta.exit_reasons.size(); ++r)
    delta.exit_reasons[r] = after.exit_reasons[r] - before.exit_reasons[r];
  std::printf("poll mode: exits by reason: %s\n", exit_reasons_text(delta).c_str());
  constexpr std::size_t kExternalInterrupt = 1, kHlt = 12, kPause = 40;
  EXPECT_EQ(delta.exit_reasons[kExternalInterrupt], interrupts)
      << "the module's two counts of host interrupts disagree";
  EXPECT_EQ(delta.exit_reasons[kHlt], 1u) << "the agent halts once: when polling stops";
  EXPECT_EQ(delta.exit_reasons[kPause] + delta.exit_reasons[kHlt], other)
      << "an exit other than an interrupt, PAUSE or the final HLT: " << exit_reasons_text(delta);
  std::uint64_t counted = 0;
  for (std::uint64_t n : delta.exit_reasons) counted += n;
  EXPECT_EQ(counted, exits) << "exits of a reason >= IMEE_EXIT_REASONS";
  EXPECT_EQ(after.imee_reads - before.imee_reads, static_cast<std::uint64_t>(reads));
  EXPECT_EQ(after.software_rereads, before.software_rereads);
  std::vector<std::byte> want(64);  // bufs[0]: the first read of the last batch
  const std::uint64_t last = kDataVa + (((kBatches - 1) * kPerBatch) % 512) * 4096 + 8;
  ASSERT_TRUE(soft.read(t_.space(), last, want).ok());
  EXPECT_EQ(bufs[0], want);
}

// ---------------------------------------------------------------------------------------------
// The hardening of issue 12 (kernel/README.md "Race and ABI tests"): races with the target's
// VMM, ABI checks, statistics, memlock accounting.

constexpr std::uint64_t kPage = 4096;

std::int64_t env_count(const char* name, std::int64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoll(v) : fallback;
}

// A kvm module parameter (/sys/module/kvm/parameters/NAME) changed for one test and restored
// however the test ends.
class KvmParam {
 public:
  explicit KvmParam(const char* name)
      : path_(std::string("/sys/module/kvm/parameters/") + name), saved_(read_line(path_)) {}
  ~KvmParam() {
    if (!saved_.empty()) write_line(path_, saved_);
  }
  KvmParam(const KvmParam&) = delete;
  KvmParam& operator=(const KvmParam&) = delete;
  bool exists() const { return !saved_.empty(); }
  bool set(unsigned value) const { return write_line(path_, std::to_string(value)); }

 private:
  std::string path_, saved_;
};

// The scheduler state of one of our threads ('R', 'S', 'D', ...; '?' if it is gone).
char thread_state(pid_t tid) {
  const std::string stat = read_line("/proc/self/task/" + std::to_string(tid) + "/stat");
  const std::size_t paren = stat.rfind(')');  // the name may hold spaces and parentheses
  return paren != std::string::npos && paren + 2 < stat.size() ? stat[paren + 2] : '?';
}

// A 64-bit word of the shell's memory that the agent and the test share.
std::atomic_ref<std::uint64_t> shared_word(std::byte* local, std::uint64_t gpa) {
  return std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(local + gpa));
}

// A forked "VMM": its own KVM VM (one vCPU, never run) whose RAM is private anonymous memory of
// that process holding vmm_word(page) in every 8 bytes of each page. The test gets the VM fd over
// a socket (SCM_RIGHTS); the VMM then waits to be killed (or exits when the test's end of the
// socket closes). Killed and reaped on destruction if still alive.
std::uint64_t vmm_word(std::uint64_t page) {
  return 0x5eedull << 48 | page << 32 | 0x0bad0000u | page;
}

class Vmm {
 public:
  Vmm(int kvm, std::uint64_t gpa, std::uint64_t pages) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(sv[0]);
      ::_exit(serve(kvm, gpa, pages, sv[1]));
    }
    ::close(sv[1]);
    sock_ = Fd(sv[0]);
    if (pid_ > 0) vm_ = Fd(receive_fd(sock_.fd));
  }
  ~Vmm() { kill_and_reap(); }
  Vmm(const Vmm&) = delete;
  Vmm& operator=(const Vmm&) = delete;

  int vm() const { return vm_.fd; }
  // SIGKILL and waitpid: when this returns, the VMM's mm has exited (exit_mm() runs before the
  // exit is reported), so KVM's MMU notifier has called release.
  void kill_and_reap() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  static int serve(int kvm, std::uint64_t gpa, std::uint64_t pages, int sock) {
    auto* mem = static_cast<std::uint64_t*>(
        ::mmap(nullptr, pages * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (mem == MAP_FAILED) return 2;
    for (std::uint64_t p = 0; p < pages; ++p)
      for (std::uint64_t w = 0; w < kPage / 8; ++w) mem[p * kPage / 8 + w] = vmm_word(p);
    const int vm = ::ioctl(kvm, KVM_CREATE_VM, 0);
    kvm_userspace_memory_region slot{};
    slot.guest_phys_addr = gpa;
    slot.memory_size = pages * kPage;
    slot.userspace_addr = reinterpret_cast<std::uint64_t>(mem);
    if (vm < 0 || ::ioctl(vm, KVM_SET_USER_MEMORY_REGION, &slot) != 0 ||
        ::ioctl(vm, KVM_CREATE_VCPU, 0) < 0)
      return 3;
    char byte = 0;
    iovec iov{&byte, 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &vm, sizeof vm);
    if (::sendmsg(sock, &msg, 0) != 1) return 4;
    (void)!::read(sock, &byte, 1);  // until killed, or the test is gone
    return 0;
  }
  static int receive_fd(int sock) {
    char byte = 0;
    iovec iov{&byte, 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    if (::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) != 1) return -1;
    const cmsghdr* c = CMSG_FIRSTHDR(&msg);
    if (c == nullptr || c->cmsg_type != SCM_RIGHTS) return -1;
    int fd = -1;
    std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
  }

  pid_t pid_ = -1;
  Fd sock_, vm_;
};

// Agent program: load the 8 bytes at the start of each of `pages` pages from `gpa` on, storing
// the i-th at shell 0xb000 + 8 i, then halt. Each load of a page not yet mapped is one EPT
// violation, i.e. one imee_map_target().
std::vector<std::uint8_t> sweep(std::uint32_t gpa, std::uint32_t pages) {
  return cat({{0xb9},
              le32(gpa),                                         // mov ecx, gpa
              {0x31, 0xf6},                                      // xor esi, esi
              {0x48, 0x8b, 0x11},                                // 1: mov rdx, [rcx]
              {0x48, 0x89, 0x14, 0xf5, 0x00, 0xb0, 0x00, 0x00},  // mov [rsi*8 + 0xb000], rdx
              {0x48, 0x81, 0xc1, 0x00, 0x10, 0x00, 0x00},        // add rcx, 4096
              {0xff, 0xc6, 0x81, 0xfe},                          // inc esi; cmp esi, pages
              le32(pages),
              {0x72, 0xe4, 0xf4}});  // jb 1b; hlt
}
constexpr std::uint64_t kSweepOut = 0xb000;

// The target's VMM is killed while an activation maps one of its pages (the page taken with
// get_user_pages_remote(), not yet installed): that page must never be mapped -- after the VMM's
// mm exits it is freed, and an EPT entry would give the ImEE a page of whoever gets it next. The
// activation must end TARGET_GONE without having read a byte of it. Deterministic through
// kvm.imee_test_map_delay_ms: the kill lands while the activating thread sleeps between taking
// the page and installing it (seen as state 'S' of that thread: nothing else in that path sleeps
// interruptibly). Then, without the delay, the VMM killed at a random point of a sweep over its
// pages: every byte read is the VMM's. One ImEE for all rounds, retargeted to each new VMM (after
// TARGET_GONE that is how a session goes on); the module's counters are back after its close.
TEST_F(KernelImee, VmmExitWhileMappingNeverMapsTheDyingPage) {
  constexpr std::uint64_t kVmmGpa = 64 * MiB, kVmmPages = 256;
  constexpr std::uint64_t kAgentGpa = 1ull << 31;  // outside the VMM's RAM: no read touches it
  constexpr std::uint64_t kUnread = 0xccccccccccccccccull;
  constexpr unsigned kDelayMs = 150;  // the kill comes within ~1 ms of the sleep (polled)
  const std::int64_t delayed = env_count("IMEE_VMM_EXIT_DELAYED", 10);
  const std::int64_t stressed = env_count("IMEE_VMM_EXIT_STRESS", 20);
  KvmParam delay("imee_test_map_delay_ms");
  ASSERT_TRUE(delay.exists()) << "no /sys/module/kvm/parameters/imee_test_map_delay_ms";
  ASSERT_TRUE(delay.set(0));
  const std::int64_t objects = kvm_counter("imee_objects"), pages = kvm_counter("imee_pages");
  std::mt19937 rng(20261127);
  int gone_in_delay = 0, gone_mid_sweep = 0, completed_first = 0;
  {
    std::optional<FlatAgent> agent;
    for (std::int64_t i = 0; i < delayed + stressed; ++i) {
      SCOPED_TRACE("round " + std::to_string(i));
      const bool with_delay = i < delayed;
      Vmm vmm(kvm_.fd, kVmmGpa, kVmmPages);
      ASSERT_GE(vmm.vm(), 0) << "the VMM did not hand over its VM fd";
      if (!agent)
        agent.emplace(kvm_.fd, vmm.vm(), local_, kLocalBytes, kAgentGpa);
      else
        ASSERT_EQ(agent->retarget(vmm.vm(), kAgentGpa), 0) << std::strerror(errno);
      // alive, page 0 reads the VMM's bytes (this also maps the shell's pages the sweep uses)
      ASSERT_EQ(agent->load(kVmmGpa + 16), vmm_word(0) & 0xffffffffu);

      const imee_stats before = stats_of(agent->imee_fd());
      std::memset(local_ + kSweepOut, 0xcc, kVmmPages * 8);
      agent->install(sweep(kVmmGpa + kPage, kVmmPages - 1));  // pages 1..255: none mapped yet
      agent->restart();
      if (with_delay) {
        ASSERT_TRUE(delay.set(kDelayMs));
      }
      std::atomic<pid_t> tid{0};
      std::atomic<bool> finished{false};
      imee_activate result{};
      int error = 0;
      std::thread reader([&] {
        tid = ::gettid();
        error = agent->activate(&result);
        finished = true;
      });
      bool in_window = false;
      const auto start = std::chrono::steady_clock::now();
      const std::uint64_t kill_after = rng() % (kVmmPages - 1);  // pages mapped (no delay)
      while (!finished && std::chrono::steady_clock::now() - start < std::chrono::seconds(2)) {
        if (with_delay
                ? tid != 0 && thread_state(tid) == 'S'
                : stats_of(agent->imee_fd()).target_maps - before.target_maps >= kill_after) {
          in_window = true;
          break;
        }
        ::usleep(200);
      }
      vmm.kill_and_reap();
      reader.join();
      if (with_delay) {
        ASSERT_TRUE(delay.set(0));
      }
      ASSERT_EQ(error, 0) << std::strerror(error);
      const imee_stats after = stats_of(agent->imee_fd());

      // What the agent stored: the VMM's words for a prefix of the pages, nothing after it.
      std::uint64_t stored = 0;
      for (std::uint64_t p = 1; p < kVmmPages; ++p) {
        const std::uint64_t w = shared_word(local_, kSweepOut + (p - 1) * 8).load();
        if (w == kUnread) break;
        ASSERT_EQ(w, vmm_word(p)) << "page " << p << ": bytes that were never the VMM's";
        ++stored;
      }
      for (std::uint64_t p = stored + 1; p < kVmmPages; ++p)
        ASSERT_EQ(shared_word(local_, kSweepOut + (p - 1) * 8).load(), kUnread)
            << "page " << p << " read after the sweep stopped";

      if (with_delay) {
        EXPECT_TRUE(in_window) << "the activation never slept in the map delay";
        EXPECT_EQ(result.status, static_cast<std::uint32_t>(IMEE_RESULT_TARGET_GONE));
        EXPECT_EQ(stored, 0u) << "the page taken before the VMM's exit was mapped and read";
        // exactly the one page taken before the exit was refused, and none was installed
        EXPECT_EQ(after.map_retries - before.map_retries, 1u);
        EXPECT_EQ(after.target_maps, before.target_maps);
        gone_in_delay += result.status == IMEE_RESULT_TARGET_GONE;
      } else if (result.status == IMEE_RESULT_DONE) {
        EXPECT_EQ(stored, kVmmPages - 1) << "DONE: the sweep read every page";
        ++completed_first;
      } else {
        EXPECT_EQ(result.status, static_cast<std::uint32_t>(IMEE_RESULT_TARGET_GONE))
            << "fault kind " << result.fault_kind;
        ++gone_mid_sweep;
      }
      // every later activation says so too
      agent->restart();
      imee_activate again{};
      ASSERT_EQ(agent->activate(&again), 0);
      EXPECT_EQ(again.status, static_cast<std::uint32_t>(IMEE_RESULT_TARGET_GONE));
    }
  }
  std::printf(
      "VMM killed while mapping: %lld rounds; %lld with a %u ms map delay (%d ended TARGET_GONE, "
      "the page refused), %lld without (%d ended TARGET_GONE mid-sweep, %d completed first)\n",
      static_cast<long long>(delayed + stressed), static_cast<long long>(delayed), kDelayMs,
      gone_in_delay, static_cast<long long>(stressed), gone_mid_sweep, completed_first);
  RecordProperty("vmm_exit_rounds", static_cast<int>(delayed + stressed));
  EXPECT_EQ(kvm_counter("imee_objects"), objects) << "ImEEs leaked";
  EXPECT_EQ(kvm_counter("imee_pages"), pages) << "pages leaked";
}

// A poll-mode agent with a mailbox in the shell's page 0xa000: it spins (pause) until the doorbell
// differs from `completed`; then, unless `stop` is set, it loads the 8 bytes at each of the
// kPollReads GPAs (one `mov rdx, [rcx]`, the only access to target memory) into the results,
// writes the doorbell's value to `completed` and spins again. With `stop` set it completes and
// halts (IMEE_RESULT_DONE).
constexpr std::uint64_t kPollDoorbell = 0xa000, kPollCompleted = 0xa008, kPollStop = 0xa010,
                        kPollGpas = 0xa100, kPollResults = 0xa200;
constexpr std::uint64_t kPollReads = 8;
constexpr std::uint64_t kPollLoadRip = 0x1000 + 0x2b, kPollSkipRip = 0x1000 + 0x36;
std::vector<std::uint8_t> poll_agent() {
  return {
      0x48, 0x8b, 0x04, 0x25, 0x00, 0xa0, 0x00, 0x00,        // 00 loop: mov rax, [doorbell]
      0x48, 0x3b, 0x04, 0x25, 0x08, 0xa0, 0x00, 0x00,        // 08 cmp rax, [completed]
      0x75, 0x04,                                            // 10 jne serve
      0xf3, 0x90,                                            // 12 pause
      0xeb, 0xea,                                            // 14 jmp loop
      0x48, 0x83, 0x3c, 0x25, 0x10, 0xa0, 0x00, 0x00, 0x00,  // 16 serve: cmp qword [stop], 0
      0x75, 0x26,                                            // 1f jne halt
      0x31, 0xf6,                                            // 21 xor esi, esi
      0x48, 0x8b, 0x0c, 0xf5, 0x00, 0xa1, 0x00, 0x00,        // 23 next: mov rcx, [rsi*8 + gpas]
      0x48, 0x8b, 0x11,                                      // 2b mov rdx, [rcx] (kPollLoadRip)
      0x48, 0x89, 0x14, 0xf5, 0x00, 0xa2, 0x00, 0x00,        // 2e mov [rsi*8 + results], rdx
      0xff, 0xc6,                                            // 36 inc esi (kPollSkipRip)
      0x83, 0xfe, 0x08,                                      // 38 cmp esi, kPollReads
      0x72, 0xe6,                                            // 3b jb next
      0x48, 0x89, 0x04, 0x25, 0x08, 0xa0, 0x00, 0x00,        // 3d mov [completed], rax
      0xeb, 0xb9,                                            // 45 jmp loop
      0x48, 0x89, 0x04, 0x25, 0x08, 0xa0, 0x00, 0x00,        // 47 halt: mov [completed], rax
      0xf4,                                                  // 4f hlt
  };
}

// The word that fills page `page` of the racing test's target in generation `gen`.
std::uint64_t gen_word(std::uint64_t page, std::uint64_t gen) {
  return 0x6e6eull << 48 | page << 32 | gen;
}

// A poll-mode ImEE reads the target's pages with no exit per read, while the host, round after
// round, drops them (MADV_DONTNEED) and rewrites them, replaces the memslot's memory (delete and
// re-create over other memory) and moves the memslot. Every page holds gen_word(page, gen) for
// the round's generation; a version counter (odd while a round changes things, gen = version / 2
// when even) brackets each batch of reads. A read whose batch saw no change must return exactly
// the current word; one that overlapped a change may return a word of a generation in that
// window, 0 (a dropped page before its rewrite) or a typed fault (NO_GPA: the memslot was gone
// or elsewhere); anything else -- an older generation, foreign bytes -- is a page the target no
// longer owned.
TEST_F(KernelImee, InvalidationsRacingPollModeNeverShowStaleBytes) {
  constexpr std::uint64_t kPages = kPollReads, kBytes = kPages * kPage;
  constexpr std::uint64_t kBase[2] = {64 * MiB, 96 * MiB};
  constexpr std::uint64_t kUnread = 0xccccccccccccccccull;
  const std::int64_t rounds = env_count("IMEE_POLL_RACE_ROUNDS", 150);
  std::byte* mem[2];
  for (std::byte*& m : mem) {
    m = static_cast<std::byte*>(
        ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(m, MAP_FAILED);
  }
  auto fill = [&](std::byte* m, std::uint64_t gen) {
    for (std::uint64_t p = 0; p < kPages; ++p)
      for (std::uint64_t w = 0; w < kPage / 8; ++w)
        reinterpret_cast<std::uint64_t*>(m + p * kPage)[w] = gen_word(p, gen);
  };
  fill(mem[0], 0);
  Vm target(kvm_.fd, 1, kBase[0], mem[0], kBytes, false);
  auto set_slot = [&](std::uint64_t gpa, std::uint64_t size, std::byte* host) {
    kvm_userspace_memory_region r{};
    r.guest_phys_addr = gpa;
    r.memory_size = size;
    r.userspace_addr = reinterpret_cast<std::uint64_t>(host);
    return ::ioctl(target.vm.fd, KVM_SET_USER_MEMORY_REGION, &r) == 0 ? 0 : errno;
  };
  FlatAgent agent(kvm_.fd, target.vm.fd, local_, kLocalBytes, 1ull << 31);
  auto word = [&](std::uint64_t gpa) { return shared_word(local_, gpa); };
  word(kPollDoorbell).store(0);
  word(kPollCompleted).store(0);
  word(kPollStop).store(0);
  agent.install(poll_agent());
  agent.restart();

  std::atomic<std::uint64_t> version{0}, base{kBase[0]};
  std::atomic<bool> writer_done{false}, vcpu_done{false}, abort_vcpu{false};
  std::array<std::atomic<std::uint32_t>, kPollReads> fault_kind{};
  std::mutex failures_lock;
  std::vector<std::string> failures;
  std::atomic<int> failure_count{0};
  auto fail = [&](const std::string& what) {
    if (failure_count++ < 10) {
      std::lock_guard<std::mutex> hold(failures_lock);
      failures.push_back(what);
    }
  };
  std::uint64_t typed_faults = 0, batches = 0, stable_batches = 0;

  // The ImEE's vCPU: poll-mode activations until the agent halts. A NO_GPA fault at the load
  // answers that read with its typed error, and the agent goes on with the next one.
  struct sigaction quiet {
  }, old_action{};
  quiet.sa_handler = [](int) {};
  ASSERT_EQ(::sigaction(SIGUSR1, &quiet, &old_action), 0);
  std::thread vcpu([&] {
    for (;;) {
      imee_activate a{};
      if (const int e = agent.activate(&a, IMEE_ACTIVATE_POLL); e != 0) {
        fail(std::string("IMEE_ACTIVATE: ") + std::strerror(e));
        break;
      }
      if (a.status == IMEE_RESULT_DONE) break;
      if (a.status == IMEE_RESULT_INTERRUPTED) {
        if (abort_vcpu) break;
        continue;
      }
      kvm_regs regs{};
      ::ioctl(agent.vcpu(), KVM_GET_REGS, &regs);
      if (a.status == IMEE_RESULT_FAULT && a.fault_kind == IMEE_FAULT_NO_GPA &&
          regs.rip == kPollLoadRip && regs.rsi < kPollReads) {
        fault_kind[regs.rsi].store(a.fault_kind);
        ++typed_faults;
        regs.rip = kPollSkipRip;
        ::ioctl(agent.vcpu(), KVM_SET_REGS, &regs);
        continue;
      }
      fail("activation ended with status " + std::to_string(a.status) + ", fault kind " +
           std::to_string(a.fault_kind) + " at GPA 0x" + std::to_string(a.fault_addr) + ", RIP " +
           std::to_string(regs.rip));
      break;
    }
    vcpu_done = true;
  });

  // The reader: batches of kPollReads reads (page i at a varying offset), each checked against
  // the versions before and after it.
  std::thread reader([&] {
    std::uint64_t seq = 0;
    while (!writer_done && !vcpu_done) {
      const std::uint64_t v1 = version.load(), at = base.load(), offset = (seq * 8) % kPage;
      for (std::uint64_t i = 0; i < kPollReads; ++i) {
        word(kPollGpas + 8 * i).store(at + i * kPage + offset);
        word(kPollResults + 8 * i).store(kUnread);
        fault_kind[i].store(0);
      }
      word(kPollDoorbell).store(++seq, std::memory_order_release);
      while (word(kPollCompleted).load(std::memory_order_acquire) != seq && !vcpu_done)
        ::usleep(50);  // one CPU in the lab: let the vCPU thread serve
      if (vcpu_done) break;
      const std::uint64_t v2 = version.load();
      const bool stable = v1 == v2 && v1 % 2 == 0;
      const std::uint64_t lo = v1 / 2, hi = (v2 + 1) / 2;  // generations the window saw
      for (std::uint64_t i = 0; i < kPollReads; ++i) {
        const std::uint64_t got = word(kPollResults + 8 * i).load();
        const std::string where = "batch " + std::to_string(seq) + " page " + std::to_string(i) +
                                  " versions " + std::to_string(v1) + ".." + std::to_string(v2);
        if (fault_kind[i].load() != 0) {
          if (stable) fail(where + ": a fault while nothing changed");
        } else if (got == kUnread) {
          fail(where + ": neither a value nor a fault");
        } else if (got == 0) {
          if (stable) fail(where + ": zeros while nothing changed");
        } else if (got >> 32 != gen_word(i, 0) >> 32 || (got & 0xffffffffu) < lo ||
                   (got & 0xffffffffu) > hi) {
          char hex[20];
          std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(got));
          fail(where + ": stale or foreign bytes " + hex);
        }
      }
      ++batches;
      stable_batches += stable;
    }
    word(kPollStop).store(1);
    word(kPollDoorbell).store(++seq, std::memory_order_release);
  });

  // The host, round after round. Generation r + 1 is in every page when round r ends.
  int current = 0, slot_at = 0;
  for (std::int64_t r = 0; r < rounds && failure_count == 0 && !vcpu_done; ++r) {
    version.fetch_add(1);  // odd: changing
    const std::uint64_t gen = static_cast<std::uint64_t>(r) + 1;
    int e = 0;
    switch (r % 3) {
      case 0:  // the pages go (the ImEE must drop them before they are freed), new ones come
        e = ::madvise(mem[current], kBytes, MADV_DONTNEED) == 0 ? 0 : errno;
        fill(mem[current], gen);
        break;
      case 1:  // the memslot is deleted and re-created over the other memory
        fill(mem[1 - current], gen);
        e = set_slot(kBase[slot_at], 0, mem[current]);
        current = 1 - current;
        if (e == 0) e = set_slot(kBase[slot_at], kBytes, mem[current]);
        break;
      default:  // the memslot moves (same memory, other GPA)
        fill(mem[current], gen);
        slot_at = 1 - slot_at;
        e = set_slot(kBase[slot_at], kBytes, mem[current]);
        base = kBase[slot_at];
        break;
    }
    version.fetch_add(1);  // even: stable, generation gen
    if (e != 0) fail("round " + std::to_string(r) + ": " + std::strerror(e));
    ::usleep(300);  // reads with nothing changing, too
  }
  writer_done = true;
  reader.join();
  for (int i = 0; i < 5000 && !vcpu_done; ++i) ::usleep(1000);
  for (int i = 0; !vcpu_done; ++i) {  // the agent did not halt: interrupt the activation
    abort_vcpu = true;
    ::pthread_kill(vcpu.native_handle(), SIGUSR1);
    ::usleep(1000);
    if (i == 0) fail("the poll-mode agent did not halt when told to");
  }
  vcpu.join();
  ::sigaction(SIGUSR1, &old_action, nullptr);
  const imee_stats st = stats_of(agent.imee_fd());
  std::printf(
      "poll mode vs invalidations: %lld rounds, %llu batches of %llu reads (%llu with nothing "
      "changing), %llu typed faults; %llu target maps, %llu map retries, %llu invalidations\n",
      static_cast<long long>(rounds), static_cast<unsigned long long>(batches),
      static_cast<unsigned long long>(kPollReads), static_cast<unsigned long long>(stable_batches),
      static_cast<unsigned long long>(typed_faults),
      static_cast<unsigned long long>(st.target_maps),
      static_cast<unsigned long long>(st.map_retries),
      static_cast<unsigned long long>(st.invalidations));
  RecordProperty("poll_race_rounds", static_cast<int>(rounds));
  for (const std::string& f : failures) ADD_FAILURE() << f;
  EXPECT_EQ(failure_count.load(), 0);
  EXPECT_GT(batches, 0u);
  // every round invalidated the target's pages at least once (the notifier for DONTNEED, the
  // memslot invalidation phase for delete and move; a re-create invalidates nothing)
  EXPECT_GE(st.invalidations, static_cast<std::uint64_t>(rounds));
  for (std::byte* m : mem) ::munmap(m, kBytes);
}

// One counter of a vCPU's KVM binary statistics (KVM_GET_STATS_FD: header, descriptors, data).
class VcpuStat {
 public:
  VcpuStat(int vcpu_fd, const std::string& name)
      : fd_(::ioctl(vcpu_fd, KVM_GET_STATS_FD, nullptr)) {
    // struct kvm_stats_desc before its name: flags, exponent, size, offset, bucket_size (16 bytes
    // in C; C++ sees 20: __DECLARE_FLEX_ARRAY's empty struct), the offset at byte 8
    constexpr std::size_t kDescFixed = 16, kDescOffset = 8;
    kvm_stats_header h{};
    if (fd_.fd < 0 || ::pread(fd_.fd, &h, sizeof h, 0) != static_cast<ssize_t>(sizeof h)) return;
    const std::size_t size = kDescFixed + h.name_size;
    std::vector<char> desc(size);
    for (std::uint32_t i = 0; i < h.num_desc; ++i) {
      if (::pread(fd_.fd, desc.data(), size, h.desc_offset + i * size) !=
          static_cast<ssize_t>(size))
        return;
      const char* n = desc.data() + kDescFixed;
      if (std::string(n, ::strnlen(n, h.name_size)) != name) continue;
      std::uint32_t offset = 0;  // bytes into the data block
      std::memcpy(&offset, desc.data() + kDescOffset, sizeof offset);
      offset_ = static_cast<off_t>(h.data_offset) + offset;
      return;
    }
  }
  bool found() const { return offset_ >= 0; }
  std::uint64_t read() const {
    std::uint64_t v = ~0ull;
    EXPECT_EQ(::pread(fd_.fd, &v, sizeof v, offset_), static_cast<ssize_t>(sizeof v));
    return v;
  }

 private:
  Fd fd_;
  off_t offset_ = -1;
};

// An activation must not disturb the target: without IMEE_ACTIVATE_READ_TARGET_CR3 it does not
// touch the target's vCPU at all (target_cr3 and target_paging 0); with it, it reads the CR3 and
// paging mode that vCPU has -- here what the test set with KVM_SET_SREGS (KVM marks CR3
// available then, so it is not stale) -- and kicks the vCPU only if it is in guest mode. The
// target's vCPU stays out of guest mode (never run), the case the kernel makes deterministic:
// its exit count (KVM's binary stats) must not move by a single exit over 10,000 activations
// that each read the target (IMEE_UNDISTURBED_ACTIVATIONS), with or without the flag.
// A running target vCPU would prove nothing more in the lab: L1 has one CPU, so while an
// activation runs the target's vCPU thread is never in guest mode, and no kick could happen.
TEST_F(KernelImee, ActivationDoesNotDisturbTheTarget) {
  constexpr std::uint64_t kTargetGpa = 64 * MiB, kTargetCr3 = 0x345000;
  const std::int64_t n = env_count("IMEE_UNDISTURBED_ACTIVATIONS", 10000);
  Vm target(kvm_.fd, 1, kTargetGpa, t_.ram->bytes().data(), t_.ram->bytes().size(), true);
  const int target_vcpu = target.vcpus[0].fd;
  set_supported_cpuid(kvm_.fd, target_vcpu);  // long mode and NX are valid EFER bits then
  enter_flat_long_mode(target_vcpu, kTargetCr3, kEferLongMode | kEferNx);
  const VcpuStat exits(target_vcpu, "exits");
  ASSERT_TRUE(exits.found()) << "no \"exits\" in the target vCPU's KVM_GET_STATS_FD";
  FlatAgent agent(kvm_.fd, target.vm.fd, local_, kLocalBytes, kTargetGpa + kHomeGpa);
  agent.install(load_and_halt(kTargetGpa + kDataGpa + 64));
  std::uint32_t want = 0;
  std::memcpy(&want, t_.ram->bytes().data() + kDataGpa + 64, 4);

  // n activations that each read the target's data; how many reported something else
  auto activations = [&](std::uint32_t flags, std::uint64_t cr3, std::uint32_t paging) {
    std::int64_t wrong = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      std::memset(local_ + 0x3000, 0xcc, 4);
      agent.restart();
      imee_activate a{};
      const int e = agent.activate(&a, IMEE_ACTIVATE_BATCH, flags);
      std::uint32_t got = 0;
      std::memcpy(&got, local_ + 0x3000, 4);
      if (e != 0 || a.status != IMEE_RESULT_DONE || got != want || a.target_cr3 != cr3 ||
          a.target_paging != paging) {
        if (wrong++ < 3)
          ADD_FAILURE() << "activation " << i << " (flags " << flags << "): " << std::strerror(e)
                        << ", status " << a.status << std::hex << ", read 0x" << got
                        << ", target_cr3 0x" << a.target_cr3 << ", target_paging 0x"
                        << a.target_paging;
      }
    }
    return wrong;
  };
  const std::uint64_t before = exits.read();
  EXPECT_EQ(activations(0, 0, 0), 0) << "without the flag: target_cr3 and target_paging are 0";
  const std::uint64_t after_plain = exits.read();
  EXPECT_EQ(activations(IMEE_ACTIVATE_READ_TARGET_CR3, kTargetCr3,
                        IMEE_PAGING_LONG | IMEE_PAGING_NXE | IMEE_PAGING_WP),
            0)
      << "with the flag: the CR3 and paging mode KVM_SET_SREGS gave, not stale";
  const std::uint64_t after_flag = exits.read();
  std::printf(
      "target vCPU exits: %llu, after %lld activations %llu, after %lld with the flag %llu\n",
      static_cast<unsigned long long>(before), static_cast<long long>(n),
      static_cast<unsigned long long>(after_plain), static_cast<long long>(n),
      static_cast<unsigned long long>(after_flag));
  RecordProperty("undisturbed_activations", static_cast<int>(2 * n));
  EXPECT_EQ(before, 0u) << "the target's vCPU never ran";
  EXPECT_EQ(after_plain, before) << "activations without the flag made the target exit";
  EXPECT_EQ(after_flag, before) << "a vCPU outside guest mode was kicked";
}

// What the child of PinnedPagesAreChargedToMemlock saw (sent to the parent through a pipe).
struct MemlockReport {
  char error[200] = {};  // empty if every step ran
  std::int64_t vmlck_start = -1, vmlck_refused = -1, vmlck_run = -1, vmlck_closed = -1;
  int refused_errno = -1;
  std::uint64_t pinned_refused = ~0ull, pinned_run = ~0ull;
  std::uint32_t status_run = 0, value = 0;
};

// Clears `cap` from this thread's effective, permitted and inheritable sets.
bool drop_capability(int cap) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (::syscall(SYS_capget, &header, data) != 0) return false;
  const std::uint32_t bit = 1u << (cap % 32);
  data[cap / 32].effective &= ~bit;
  data[cap / 32].permitted &= ~bit;
  data[cap / 32].inheritable &= ~bit;
  if (::syscall(SYS_capset, &header, data) != 0) return false;
  return ::syscall(SYS_capget, &header, data) == 0 && (data[cap / 32].effective & bit) == 0;
}

// The child's side: without CAP_IPC_LOCK and with RLIMIT_MEMLOCK one page above what it has
// locked, an activation that must pin a second shell page fails; with the limit raised the same
// activation goes on.
MemlockReport memlock_child(int kvm, std::byte* local, std::uint64_t local_bytes,
                            std::span<const std::byte> ram) {
  constexpr std::uint64_t kTargetGpa = 64 * MiB;
  MemlockReport r;
  auto failed = [&r](const std::string& what) {
    std::snprintf(r.error, sizeof r.error, "%s: %s", what.c_str(), std::strerror(errno));
    return r;
  };
  r.vmlck_start = vmlck_kb();
  if (!drop_capability(CAP_IPC_LOCK)) return failed("dropping CAP_IPC_LOCK");
  rlimit original{};
  if (::getrlimit(RLIMIT_MEMLOCK, &original) != 0) return failed("getrlimit");
  const rlim_t one_page_more = static_cast<rlim_t>(r.vmlck_start) * 1024 + kPage;
  rlimit tight = original, roomy = original;
  tight.rlim_cur = one_page_more;
  if (roomy.rlim_cur != RLIM_INFINITY && roomy.rlim_cur < one_page_more + 64 * kPage)
    roomy.rlim_cur = one_page_more + 64 * kPage;
  if (roomy.rlim_max != RLIM_INFINITY && roomy.rlim_max < roomy.rlim_cur)
    roomy.rlim_max = roomy.rlim_cur;  // root keeps CAP_SYS_RESOURCE
  try {
    Vm target(kvm, 1, kTargetGpa, ram.data(), ram.size(), true);
    FlatAgent agent(kvm, target.vm.fd, local, local_bytes, kTargetGpa + kHomeGpa);
    agent.install(load_and_halt(kTargetGpa + kDataGpa + 64));
    agent.restart();
    std::memset(local + 0x3000, 0xcc, 4);
    if (::setrlimit(RLIMIT_MEMLOCK, &tight) != 0) return failed("setrlimit(one page)");
    imee_activate a{};
    r.refused_errno = agent.activate(&a);
    r.vmlck_refused = vmlck_kb();
    r.pinned_refused = stats_of(agent.imee_fd()).pinned_pages;
    if (::setrlimit(RLIMIT_MEMLOCK, &roomy) != 0) return failed("setrlimit(raised)");
    // no restart: the vCPU waits at the instruction that needed the page
    if (agent.activate(&a) != 0) return failed("IMEE_ACTIVATE with the limit raised");
    r.status_run = a.status;
    std::memcpy(&r.value, local + 0x3000, 4);
    r.vmlck_run = vmlck_kb();
    r.pinned_run = stats_of(agent.imee_fd()).pinned_pages;
  } catch (const std::exception& e) {
    return failed(e.what());
  }
  r.vmlck_closed = vmlck_kb();
  return r;
}

// The shell pages an ImEE pins are charged to the locked memory of the process that made the
// shell (VmLck, RLIMIT_MEMLOCK) while the ImEE lives: over the limit the activation fails with
// ENOMEM and can be resumed once the limit is raised. In a child process, which drops
// CAP_IPC_LOCK (it bypasses the limit) and starts with nothing locked (fork's mm_init()).
TEST_F(KernelImee, PinnedPagesAreChargedToMemlock) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(pipe_fds[0]);
    const MemlockReport r = memlock_child(kvm_.fd, local_, kLocalBytes, t_.ram->bytes());
    const bool sent = ::write(pipe_fds[1], &r, sizeof r) == static_cast<ssize_t>(sizeof r);
    ::_exit(sent ? 0 : 1);
  }
  ::close(pipe_fds[1]);
  MemlockReport r;
  std::size_t got = 0;
  for (ssize_t n; got < sizeof r &&
                  (n = ::read(pipe_fds[0], reinterpret_cast<char*>(&r) + got, sizeof r - got)) > 0;)
    got += static_cast<std::size_t>(n);
  ::close(pipe_fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_EQ(got, sizeof r) << "the child died (status 0x" << std::hex << status << ")";
  ASSERT_STREQ(r.error, "");
  std::uint32_t want = 0;
  std::memcpy(&want, t_.ram->bytes().data() + kDataGpa + 64, 4);
  std::printf(
      "memlock: VmLck %lld kB at the start, %lld kB at the refused pin (%llu pinned), %lld kB "
      "running (%llu pinned), %lld kB after close\n",
      static_cast<long long>(r.vmlck_start), static_cast<long long>(r.vmlck_refused),
      static_cast<unsigned long long>(r.pinned_refused), static_cast<long long>(r.vmlck_run),
      static_cast<unsigned long long>(r.pinned_run), static_cast<long long>(r.vmlck_closed));
  EXPECT_EQ(r.vmlck_start, 0) << "a forked child starts with nothing locked";
  EXPECT_EQ(r.refused_errno, ENOMEM) << std::strerror(r.refused_errno);
  // the first shell page fit under the limit and was charged, the second was refused
  EXPECT_EQ(r.pinned_refused, 1u);
  EXPECT_EQ(r.vmlck_refused - r.vmlck_start, 4);
  EXPECT_EQ(r.status_run, static_cast<std::uint32_t>(IMEE_RESULT_DONE));
  EXPECT_EQ(r.value, want) << "the resumed activation read the target";
  // code, the three page-table pages, the output page at least
  EXPECT_GE(r.pinned_run, 5u);
  EXPECT_EQ(r.vmlck_run - r.vmlck_start, static_cast<std::int64_t>(r.pinned_run) * 4)
      << "VmLck = IMEE_GET_STATS pinned_pages x 4 kB";
  EXPECT_EQ(r.vmlck_closed, 0) << "pinned pages still charged after close";
}

// IMEE_QUERY on /dev/kvm: magic, version, every feature of this module (the host bit too: the lab
// runs ImEEs), the EPT's reach; in-fields that must be 0 are checked, out-fields ignored.
TEST_F(KernelImee, QueryReportsVersionAndFeatures) {
  auto query = [&](imee_query* q) { return ::ioctl(kvm_.fd, IMEE_QUERY, q) == 0 ? 0 : errno; };
  imee_query q{};
  q.version = 0x7777;  // ignored: a newer library may ask an older kernel
  q.magic = 1;         // out-only fields are ignored on input
  q.features = ~0ull;
  q.max_gpa = 5;
  ASSERT_EQ(query(&q), 0) << std::strerror(errno);
  EXPECT_EQ(q.magic, IMEE_MAGIC);
  EXPECT_EQ(q.version, static_cast<std::uint32_t>(IMEE_VERSION));
  const std::uint64_t vendor =
      cpu_is_amd() ? IMEE_FEATURE_SVM_NPT | IMEE_FEATURE_AGENT_READABLE | IMEE_FEATURE_WALK_COPIES
                   : IMEE_FEATURE_VMX_EPT;
  EXPECT_EQ(q.features, IMEE_FEATURE_HOST | IMEE_FEATURE_RETARGET | IMEE_FEATURE_READ_TARGET_CR3 |
                            IMEE_FEATURE_STATS | IMEE_FEATURE_EXIT_COUNTS | IMEE_FEATURE_MEMLOCK |
                            IMEE_FEATURE_EXIT_REASONS | vendor)
      << "the vendor bits must match /proc/cpuinfo (" << (cpu_is_amd() ? "svm" : "vmx") << ")";
  EXPECT_EQ(q.max_gpa, 1ull << 48) << "4-level EPT/NPT";
  EXPECT_EQ(q.flags, 0u);
  EXPECT_EQ(q.pad, 0u);
  for (std::uint64_t r : q.reserved) EXPECT_EQ(r, 0u);

  auto with = [&](auto edit) {
    imee_query bad{};
    edit(bad);
    return query(&bad);
  };
  EXPECT_EQ(with([](imee_query& b) { b.flags = 1; }), EINVAL);
  EXPECT_EQ(with([](imee_query& b) { b.flags = 1u << 31; }), EINVAL);
  EXPECT_EQ(with([](imee_query& b) { b.pad = 1; }), EINVAL);
  for (std::size_t i = 0; i < std::size(q.reserved); ++i)
    EXPECT_EQ(with([i](imee_query& b) { b.reserved[i] = 1; }), EINVAL) << "reserved[" << i << "]";
  EXPECT_EQ(::ioctl(kvm_.fd, IMEE_QUERY, nullptr), -1);
  EXPECT_EQ(errno, EFAULT);
}

// IMEE_GET_STATS: its argument checks, and counters that add up exactly: activations by result,
// faults by kind and vector, exits by reason (per activation and since launch), each shell page
// pinned once. The hostile agent raises #UD n times.
TEST_F(KernelImee, StatsCountExitsAndFaults) {
  constexpr std::uint64_t kTargetGpa = 64 * MiB;
  const std::int64_t n = env_count("IMEE_STATS_UD_FAULTS", 25);
  Vm target(kvm_.fd, 1, kTargetGpa, t_.ram->bytes().data(), t_.ram->bytes().size(), true);
  FlatAgent agent(kvm_.fd, target.vm.fd, local_, kLocalBytes, kTargetGpa + kHomeGpa);
  const int fd = agent.imee_fd();

  auto get = [fd](auto edit) {
    imee_stats s{};
    s.version = IMEE_VERSION;
    edit(s);
    return ::ioctl(fd, IMEE_GET_STATS, &s) == 0 ? 0 : errno;
  };
  EXPECT_EQ(get([](imee_stats&) {}), 0);
  EXPECT_EQ(get([](imee_stats& s) { s.version = 0; }), EPROTONOSUPPORT);
  EXPECT_EQ(get([](imee_stats& s) { s.version = IMEE_VERSION + 1; }), EPROTONOSUPPORT);
  EXPECT_EQ(get([](imee_stats& s) { s.flags = 1; }), EINVAL);
  EXPECT_EQ(get([](imee_stats& s) { s.flags = 1u << 31; }), EINVAL);
  EXPECT_EQ(get([](imee_stats& s) { s.reserved[0] = 1; }), EINVAL);
  EXPECT_EQ(get([](imee_stats& s) { s.reserved[1] = 1; }), EINVAL);
  EXPECT_EQ(::ioctl(fd, IMEE_GET_STATS, nullptr), -1);
  EXPECT_EQ(errno, EFAULT);

  const imee_stats fresh = stats_of(fd);
  EXPECT_EQ(fresh.version, static_cast<std::uint32_t>(IMEE_VERSION));
  EXPECT_EQ(fresh.activations, 0u);
  EXPECT_EQ(fresh.exits, 0u);
  EXPECT_EQ(fresh.pinned_pages, 0u);
  EXPECT_GE(fresh.ept_pages, 1u) << "the root";

  auto parts = [](const auto& a) {
    return a.exits_ept_violation + a.exits_exception + a.exits_interrupt + a.exits_other;
  };
  std::uint64_t exits = 0, ept = 0, exceptions = 0, interrupts = 0, other = 0;
  auto add = [&](const imee_activate& a) {
    EXPECT_EQ(parts(a), a.exits) << "an activation's exits by reason add up to its exits";
    exits += a.exits;
    ept += a.exits_ept_violation;
    exceptions += a.exits_exception;
    interrupts += a.exits_interrupt;
    other += a.exits_other;
  };
  imee_activate r = agent.run(load_and_halt(kTargetGpa + kDataGpa + 64));
  EXPECT_EQ(r.status, static_cast<std::uint32_t>(IMEE_RESULT_DONE));
  EXPECT_EQ(r.exits_exception, 0u);
  EXPECT_GE(r.exits_ept_violation, 1u) << "the target page at least";
  add(r);
  for (std::int64_t i = 0; i < n; ++i) {
    r = agent.run({0x0f, 0x0b});  // ud2
    ASSERT_EQ(r.status, static_cast<std::uint32_t>(IMEE_RESULT_FAULT)) << i;
    ASSERT_EQ(r.fault_kind, static_cast<std::uint32_t>(IMEE_FAULT_EXCEPTION)) << i;
    EXPECT_EQ(r.fault_info, 6u) << "#UD, no error code";
    EXPECT_EQ(r.fault_addr, 0u);
    EXPECT_EQ(r.exits_exception, 1u) << "the #UD, intercepted";
    add(r);
  }
  const imee_stats st = stats_of(fd);
  const auto count = static_cast<std::uint64_t>(n);
  EXPECT_EQ(st.activations, count + 1);
  for (std::uint32_t k = 0; k < std::size(st.results); ++k)
    EXPECT_EQ(st.results[k], k == IMEE_RESULT_DONE    ? 1
                             : k == IMEE_RESULT_FAULT ? count
                                                      : 0)
        << "results[" << k << "]";
  for (std::uint32_t k = 0; k < std::size(st.faults); ++k)
    EXPECT_EQ(st.faults[k], k == IMEE_FAULT_EXCEPTION ? count : 0) << "faults[" << k << "]";
  for (std::uint32_t v = 0; v < std::size(st.fault_vectors); ++v)
    EXPECT_EQ(st.fault_vectors[v], v == 6 ? count : 0) << "fault_vectors[" << v << "]";
  EXPECT_EQ(parts(st), st.exits);
  EXPECT_EQ(st.exits, exits) << "the sum of the activations' exits";
  EXPECT_EQ(st.exits_ept_violation, ept);
  EXPECT_EQ(st.exits_exception, count);
  EXPECT_EQ(st.exits_interrupt, interrupts);
  EXPECT_EQ(st.exits_other, other);
  EXPECT_GE(st.target_maps, 1u);
  // a shell page is pinned at its first map and never unmapped before close (only target GFNs
  // are invalidated): code, three page-table pages, the output page at least
  EXPECT_EQ(st.pinned_pages, st.local_maps);
  EXPECT_GE(st.pinned_pages, 5u);
  EXPECT_GE(st.ept_pages, 4u) << "root and one table per level below it";
  EXPECT_EQ(st.flags, 0u);
  for (std::uint64_t v : st.reserved) EXPECT_EQ(v, 0u);
  std::printf(
      "stats after %lld #UD: %llu activations, %llu exits (%llu EPT violations, %llu "
      "exceptions, %llu interrupts, %llu other), %llu pinned, %llu EPT pages\n",
      static_cast<long long>(n), static_cast<unsigned long long>(st.activations),
      static_cast<unsigned long long>(st.exits),
      static_cast<unsigned long long>(st.exits_ept_violation),
      static_cast<unsigned long long>(st.exits_exception),
      static_cast<unsigned long long>(st.exits_interrupt),
      static_cast<unsigned long long>(st.exits_other),
      static_cast<unsigned long long>(st.pinned_pages),
      static_cast<unsigned long long>(st.ept_pages));
}

}  // namespace
}  // namespace imee
