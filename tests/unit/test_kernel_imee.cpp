// The kernel ImEE's ioctls (kernel/include/uapi/linux/imee.h) and its session semantics, on
// synthetic targets: KVM VMs created here over hand-built page tables. They need the patched
// kvm-intel, so they run in the VT-x lab (tests/vtx-lab, IMEE_REQUIRE_KERNEL=1: no skipping
// there) and skip elsewhere.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/imee.h>
#include <linux/kvm.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <random>
#include <set>
#include <vector>

#include "../support/page_table_builder.hpp"
#include "../support/readonly_ram.hpp"
#include "imee/kvm_backend.hpp"
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

#define REQUIRE_KERNEL_IMEE()                                                              \
  do {                                                                                     \
    std::string why;                                                                       \
    if (!KvmBackend::available(&why, true)) {                                              \
      if (std::getenv("IMEE_REQUIRE_KERNEL") != nullptr) FAIL() << why;                    \
      GTEST_SKIP() << "needs the patched kvm-intel (tests/vtx-lab runs this): " << why;    \
    }                                                                                      \
  } while (0)

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(Fd&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd, o.fd);
    return *this;
  }
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// A KVM VM with `vcpus` vCPUs and one memslot of `bytes` at `gpa`.
struct Vm {
  Fd vm;
  std::vector<Fd> vcpus;
  Vm(int kvm, int nvcpus, std::uint64_t gpa, const void* host, std::uint64_t bytes,
     bool readonly) {
    vm = Fd(::ioctl(kvm, KVM_CREATE_VM, 0));
    if (vm.fd < 0) throw std::runtime_error("KVM_CREATE_VM");
    if (bytes != 0) {
      kvm_userspace_memory_region slot{};
      slot.flags = readonly ? KVM_MEM_READONLY : 0;
      slot.guest_phys_addr = gpa;
      slot.memory_size = bytes;
      slot.userspace_addr = reinterpret_cast<std::uint64_t>(host);
      if (::ioctl(vm.fd, KVM_SET_USER_MEMORY_REGION, &slot) != 0)
        throw std::runtime_error("KVM_SET_USER_MEMORY_REGION");
    }
    for (int i = 0; i < nvcpus; ++i) vcpus.emplace_back(::ioctl(vm.fd, KVM_CREATE_VCPU, i));
  }
};

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
    REQUIRE_KERNEL_IMEE();
    kvm_ = Fd(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
    ASSERT_GE(kvm_.fd, 0);
    local_ = static_cast<std::byte*>(::mmap(nullptr, kLocalBytes, PROT_READ | PROT_WRITE,
                                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(local_, MAP_FAILED);
    target_ = std::make_unique<Vm>(kvm_.fd, 1, 0, t_.ram->bytes().data(), t_.ram->bytes().size(),
                                   true);
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
  bad = a;
  bad.flags = 1;
  EXPECT_EQ(activate(bad), EINVAL);
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
  const int fds[] = {-1, 0, target_->vm.fd, s->vm.fd, imee.fd, kvm_.fd, null.fd,
                     target_->vcpus[0].fd, 4242, -77};
  const std::set<int> allowed{0, EPROTONOSUPPORT, EINVAL, EBADF, EBUSY, EFAULT, EIO, ENOTTY};
  std::mt19937_64 rng(12345);
  const int calls = std::getenv("IMEE_IOCTL_FUZZ_CALLS") ? std::atoi(std::getenv("IMEE_IOCTL_FUZZ_CALLS")) : 10000;
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

// The target's VMM exits mid-session: the next read fails with a clear error, nothing hangs.
TEST_F(KernelImee, TargetExitEndsTheSessionCleanly) {
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // the "VMM": a VM over the same (shared) RAM, then wait to be killed
    try {
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
    KvmBackend imee(*t_.guest, t_.space(), kHomeVa, KvmBackend::KernelTarget{.qemu_pid = child});
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

// Poll mode: once the EPT holds the pages, reads cost the ImEE vCPU no VM exits. The exits that
// remain come from the host's scheduler (one CPU in the lab: the reader and the vCPU thread
// take turns, and the vCPU leaves guest mode when its turn ends), not from the reads.
TEST_F(KernelImee, PollModeReadsCauseNoExits) {
  KvmBackend imee(*t_.guest, t_.space(), kHomeVa,
                  KvmBackend::KernelTarget{.vm_fd = target_->vm.fd});
  SoftBackend soft(*t_.guest);
  constexpr int kBatches = 50, kPerBatch = 80;
  std::vector<std::vector<std::byte>> bufs(kPerBatch, std::vector<std::byte>(64));
  auto batch = [&](int round) {
    std::vector<ReadRequest> reqs;
    for (int i = 0; i < kPerBatch; ++i)
      reqs.push_back({t_.space(), kDataVa + ((round * kPerBatch + i) % 512) * 4096 + 8, bufs[i], {}});
    imee.read_batch(reqs);
    for (const ReadRequest& r : reqs) ASSERT_TRUE(r.status.ok());
  };
  imee.start_polling();
  for (int b = 0; b < 8; ++b) batch(b);  // warm up: every page once (EPT violations)
  imee.stop_polling();
  const std::uint64_t before = imee.stats().vm_exits;
  imee.start_polling();
  for (int b = 0; b < kBatches; ++b) batch(b);
  imee.stop_polling();
  const std::uint64_t exits = imee.stats().vm_exits - before;
  const int reads = kBatches * kPerBatch;
  std::printf("poll mode: %d reads, %llu VM exits of the ImEE vCPU (%.4f per read)\n", reads,
              static_cast<unsigned long long>(exits), static_cast<double>(exits) / reads);
  RecordProperty("poll_reads", reads);
  RecordProperty("poll_exits", static_cast<int>(exits));
  EXPECT_LT(exits * 20, static_cast<std::uint64_t>(reads)) << "reads must not exit";
  std::vector<std::byte> want(64);
  ASSERT_TRUE(soft.read(t_.space(), kDataVa + 8, want).ok());
  EXPECT_EQ(bufs[0], want);
}

}  // namespace
}  // namespace imee
