#include "imee_ioctl.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "imee/error.hpp"

namespace imee::kernel {

namespace {

[[noreturn]] void fail(const std::string& what) {
  throw Exception("kernel: " + what + ": " + std::strerror(errno));
}

// ioctl that retries EINTR (launch and retarget have no side effects before they succeed).
int xioctl(int fd, unsigned long request, void* arg) {
  int r;
  do r = ::ioctl(fd, request, arg);
  while (r < 0 && errno == EINTR);
  return r;
}

// IMEE_QUERY on /dev/kvm into `q`: empty, or why there is no answer (no KVM, no ImEE).
std::string query(imee_query& q) {
  kvm::Fd kvm(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!kvm) return std::string("cannot open /dev/kvm: ") + std::strerror(errno);
  q = {};
  if (xioctl(kvm.get(), IMEE_QUERY, &q) != 0 || q.magic != IMEE_MAGIC)
    return "this KVM has no ImEE (IMEE_QUERY: " + std::string(std::strerror(errno)) +
           "); load the patched modules (kernel/README.md)";
  return {};
}

}  // namespace

std::string imee_missing() {
  imee_query q{};
  if (std::string why = query(q); !why.empty()) return why;
  if (q.version != IMEE_VERSION)
    return "the loaded ImEE speaks ABI version " + std::to_string(q.version) + ", libimee " +
           std::to_string(IMEE_VERSION);
  if (!(q.features & IMEE_FEATURE_HOST))
    return "this CPU cannot run ImEEs (needs VT-x with EPT or AMD-V with NPT)";
  return {};
}

std::uint64_t imee_features() {
  imee_query q{};
  return query(q).empty() ? q.features : 0;
}

namespace {

imee_launch launch_args(int target_vm_fd, std::uint32_t vcpu_index, std::uint64_t agent_gpa,
                        std::uint64_t agent_local_gpa) {
  imee_launch a{};
  a.version = IMEE_VERSION;
  a.vm_fd = target_vm_fd;
  a.vcpu_index = vcpu_index;
  a.shell_fd = -1;
  a.imee_fd = -1;
  a.agent_gpa = agent_gpa;
  a.agent_local_gpa = agent_local_gpa;
  return a;
}

}  // namespace

kvm::Fd launch(const kvm::Vm& shell, int target_vm_fd, std::uint32_t vcpu_index,
               std::uint64_t agent_gpa, std::uint64_t agent_local_gpa) {
  kvm::Fd kvm(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!kvm) fail("open /dev/kvm");
  imee_launch a = launch_args(target_vm_fd, vcpu_index, agent_gpa, agent_local_gpa);
  a.shell_fd = shell.vm_fd();
  kvm::Fd imee(xioctl(kvm.get(), IMEE_LAUNCH, &a));
  if (!imee) fail("IMEE_LAUNCH");
  return imee;
}

void retarget(int imee, int target_vm_fd, std::uint32_t vcpu_index, std::uint64_t agent_gpa,
              std::uint64_t agent_local_gpa) {
  kvm::Fd kvm(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!kvm) fail("open /dev/kvm");
  imee_launch a = launch_args(target_vm_fd, vcpu_index, agent_gpa, agent_local_gpa);
  a.flags = IMEE_LAUNCH_RETARGET;
  a.imee_fd = imee;
  if (xioctl(kvm.get(), IMEE_LAUNCH, &a) != 0) fail("IMEE_LAUNCH (retarget)");
}

imee_activate activate(int imee, std::uint32_t mode, std::uint32_t flags) {
  imee_activate a{};
  a.version = IMEE_VERSION;
  a.mode = mode;
  a.flags = flags;
  if (::ioctl(imee, IMEE_ACTIVATE, &a) != 0) {
    if (errno != EINTR) fail("IMEE_ACTIVATE");
    a.status = IMEE_RESULT_INTERRUPTED;
  }
  return a;
}

imee_stats stats(int imee) {
  imee_stats s{};
  s.version = IMEE_VERSION;
  if (xioctl(imee, IMEE_GET_STATS, &s) != 0) fail("IMEE_GET_STATS");
  return s;
}

kvm::Fd qemu_vm_fd(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) fail("opendir " + dir);
  std::vector<int> found;
  while (dirent* e = ::readdir(d)) {
    char link[64] = {};
    const std::string path = dir + "/" + e->d_name;
    const ssize_t n = ::readlink(path.c_str(), link, sizeof link - 1);
    if (n > 0 && std::string_view(link, static_cast<std::size_t>(n)) == "anon_inode:kvm-vm")
      found.push_back(std::atoi(e->d_name));
  }
  ::closedir(d);
  if (found.empty()) throw Exception("process " + std::to_string(pid) + " holds no KVM VM fd");
  // QEMU holds one. With several (a fork that inherited another VM's fd...) guessing could
  // introspect the wrong VM: refuse.
  if (found.size() > 1)
    throw Exception("process " + std::to_string(pid) + " holds " + std::to_string(found.size()) +
                    " KVM VM fds: which one is the target is ambiguous");
  kvm::Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) fail("pidfd_open " + std::to_string(pid));
  kvm::Fd vm(static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd.get(), found.front(), 0)));
  if (!vm) fail("pidfd_getfd of QEMU's VM fd");
  return vm;
}

}  // namespace imee::kernel
