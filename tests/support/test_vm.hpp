// A KVM VM made by a test: what the kernel ImEE introspects (a target) or runs in (a shell).
// It never runs unless the test runs it.
#pragma once

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdint>
#include <stdexcept>
#include <utility>
#include <vector>

namespace imee::test {

// An owned file descriptor.
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

inline Fd open_kvm() {
  return Fd(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
}

// A VM of the KVM behind `kvm` with `nvcpus` vCPUs and, unless `bytes` is 0, one memslot of
// `bytes` at `gpa` backed by `host`.
struct TestVm {
  Fd vm;
  std::vector<Fd> vcpus;
  TestVm(int kvm, int nvcpus, std::uint64_t gpa, const void* host, std::uint64_t bytes,
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
    for (int i = 0; i < nvcpus; ++i) {
      vcpus.emplace_back(::ioctl(vm.fd, KVM_CREATE_VCPU, i));
      if (vcpus.back().fd < 0) throw std::runtime_error("KVM_CREATE_VCPU");
    }
  }
};

}  // namespace imee::test
