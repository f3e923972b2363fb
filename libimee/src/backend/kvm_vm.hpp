// Raw plumbing for a small VM on stock KVM: file descriptors, mappings, memslots, one vCPU.
// Every ioctl is checked; a failure throws imee::Exception naming the call and errno.
// Private to libimee: the ImEE shell VM (agent_shell.hpp) and the kvm backend use it.
#pragma once

#include <linux/kvm.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace imee::kvm {

// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// An owned mmap.
class Mapping {
 public:
  Mapping() = default;
  Mapping(void* addr, std::size_t size) : addr_(addr), size_(size) {}
  Mapping(Mapping&& other) noexcept
      : addr_(std::exchange(other.addr_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  Mapping& operator=(Mapping&& other) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping();

  // Anonymous, zeroed, page-aligned read-write memory.
  static Mapping anonymous(std::size_t size);

  std::byte* data() const { return static_cast<std::byte*>(addr_); }
  std::size_t size() const { return size_; }

 private:
  void* addr_ = nullptr;
  std::size_t size_ = 0;
};

// What /dev/kvm offers; probed once, cheaply.
struct Capabilities {
  bool usable = false;  // /dev/kvm opens, API 12, a VM can be created
  bool readonly_mem = false;
  bool immediate_exit = false;
  bool la57 = false;     // the guest may use 5-level paging
  bool gbpages = false;  // ... and 1 GiB pages
  int max_memslots = 0;
  int phys_bits = 36;   // guest MAXPHYADDR
  std::string why_not;  // when !usable
};
const Capabilities& capabilities();

// One VM with one vCPU, created from user space.
class Vm {
 public:
  Vm();  // throws imee::Exception when KVM is unusable

  // Installs memslot `slot` (KVM cannot resize or move one: delete it first). size 0 deletes it.
  void set_memslot(std::uint32_t slot, std::uint64_t gpa, std::uint64_t size, const void* host,
                   bool readonly);

  kvm_regs regs() const;
  void set_regs(const kvm_regs& regs);
  kvm_sregs sregs() const;
  void set_sregs(const kvm_sregs& sregs);

  // KVM_SET_CPUID2 with everything KVM supports (long mode, NX, SSE; LA57 where offered).
  void set_supported_cpuid();

  // KVM_RUN; returns the exit reason. A signal (EINTR) is not an error: it returns KVM_EXIT_INTR.
  std::uint32_t run();

  int vm_fd() const { return vm_.get(); }
  kvm_run& run_state() const { return *reinterpret_cast<kvm_run*>(run_map_.data()); }

 private:
  Fd kvm_;
  Fd vm_;
  Fd vcpu_;
  Mapping run_map_;
  std::vector<bool> slots_;  // which memslots are installed
};

}  // namespace imee::kvm
