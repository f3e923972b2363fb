#include "kvm_vm.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "imee/error.hpp"

namespace imee::kvm {

namespace {

[[noreturn]] void fail(const std::string& what) {
  throw Exception("kvm: " + what + ": " + std::strerror(errno));
}

// ioctl that retries EINTR (none of ours is restartable with side effects except KVM_RUN).
int xioctl(int fd, unsigned long request, unsigned long arg) {
  int r;
  do r = ::ioctl(fd, request, arg);
  while (r < 0 && errno == EINTR);
  return r;
}

template <class T>
unsigned long arg(T* p) {
  return reinterpret_cast<unsigned long>(p);
}

// struct kvm_cpuid2 as the kernel lays it out. In C++ the UAPI header's __DECLARE_FLEX_ARRAY
// adds an empty struct of size 1, which moves `entries` to offset 12 and makes the ioctl numbers
// encode 12 bytes instead of 8: KVM rejects them with EINVAL. So we use our own header.
struct CpuidHeader {
  std::uint32_t nent;
  std::uint32_t padding;
};
static_assert(sizeof(CpuidHeader) == 8);
constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, CpuidHeader);
constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, CpuidHeader);

struct Cpuid {
  std::vector<std::uint64_t> storage;  // 8-byte aligned: header, then the entries
  CpuidHeader& header() { return *reinterpret_cast<CpuidHeader*>(storage.data()); }
  kvm_cpuid_entry2* entries() { return reinterpret_cast<kvm_cpuid_entry2*>(storage.data() + 1); }
};

Cpuid supported_cpuid(int kvm_fd) {
  // KVM_GET_SUPPORTED_CPUID fails with E2BIG until the buffer is large enough.
  for (std::uint32_t n = 64; n <= 4096; n *= 2) {
    Cpuid cpuid;
    cpuid.storage.assign(1 + n * sizeof(kvm_cpuid_entry2) / 8, 0);
    cpuid.header().nent = n;
    if (xioctl(kvm_fd, kGetSupportedCpuid, arg(cpuid.storage.data())) == 0) return cpuid;
    if (errno != E2BIG) fail("KVM_GET_SUPPORTED_CPUID");
  }
  errno = E2BIG;
  fail("KVM_GET_SUPPORTED_CPUID");
}

Capabilities probe() {
  Capabilities caps;
  Fd kvm(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!kvm) {
    caps.why_not = std::string("cannot open /dev/kvm: ") + std::strerror(errno);
    return caps;
  }
  if (xioctl(kvm.get(), KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
    caps.why_not = "/dev/kvm speaks an unexpected API version";
    return caps;
  }
  Fd vm(xioctl(kvm.get(), KVM_CREATE_VM, 0));
  if (!vm) {
    caps.why_not = std::string("KVM_CREATE_VM: ") + std::strerror(errno);
    return caps;
  }
  caps.readonly_mem = xioctl(vm.get(), KVM_CHECK_EXTENSION, KVM_CAP_READONLY_MEM) > 0;
  caps.immediate_exit = xioctl(kvm.get(), KVM_CHECK_EXTENSION, KVM_CAP_IMMEDIATE_EXIT) > 0;
  caps.max_memslots = xioctl(vm.get(), KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS);
  try {
    Cpuid cpuid = supported_cpuid(kvm.get());
    for (std::uint32_t i = 0; i < cpuid.header().nent; ++i) {
      const kvm_cpuid_entry2& e = cpuid.entries()[i];
      if (e.function == 7 && e.index == 0) caps.la57 = (e.ecx >> 16) & 1;
      if (e.function == 0x80000001) caps.gbpages = (e.edx >> 26) & 1;
      if (e.function == 0x80000008) caps.phys_bits = static_cast<int>(e.eax & 0xff);
    }
  } catch (const Exception& e) {
    caps.why_not = std::string(e.what()).substr(5);  // without fail()'s "kvm: "
    return caps;
  }
  if (!caps.readonly_mem) {
    // Without read-only memslots the target's RAM would be writable by the ImEE: refuse.
    caps.why_not = "KVM lacks KVM_CAP_READONLY_MEM";
    return caps;
  }
  caps.usable = true;
  return caps;
}

}  // namespace

Fd& Fd::operator=(Fd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
  if (this != &other) {
    if (addr_ != nullptr) ::munmap(addr_, size_);
    addr_ = std::exchange(other.addr_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

Mapping::~Mapping() {
  if (addr_ != nullptr) ::munmap(addr_, size_);
}

Mapping Mapping::anonymous(std::size_t size) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) fail("mmap of " + std::to_string(size) + " bytes");
  return Mapping(p, size);
}

const Capabilities& capabilities() {
  static const Capabilities caps = probe();
  return caps;
}

Vm::Vm() {
  const Capabilities& caps = capabilities();
  if (!caps.usable) throw Exception("kvm: " + caps.why_not);
  kvm_ = Fd(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!kvm_) fail("open /dev/kvm");
  vm_ = Fd(xioctl(kvm_.get(), KVM_CREATE_VM, 0));
  if (!vm_) fail("KVM_CREATE_VM");
  vcpu_ = Fd(xioctl(vm_.get(), KVM_CREATE_VCPU, 0));
  if (!vcpu_) fail("KVM_CREATE_VCPU");
  const int run_size = xioctl(kvm_.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (run_size < static_cast<int>(sizeof(kvm_run))) fail("KVM_GET_VCPU_MMAP_SIZE");
  void* run = ::mmap(nullptr, static_cast<std::size_t>(run_size), PROT_READ | PROT_WRITE,
                     MAP_SHARED, vcpu_.get(), 0);
  if (run == MAP_FAILED) fail("mmap of the vCPU's kvm_run");
  run_map_ = Mapping(run, static_cast<std::size_t>(run_size));
  set_supported_cpuid();
}

void Vm::set_supported_cpuid() {
  Cpuid cpuid = supported_cpuid(kvm_.get());
  if (xioctl(vcpu_.get(), kSetCpuid2, arg(cpuid.storage.data())) != 0) fail("KVM_SET_CPUID2");
}

void Vm::set_memslot(std::uint32_t slot, std::uint64_t gpa, std::uint64_t size, const void* host,
                     bool readonly) {
  const bool present = slot < slots_.size() && slots_[slot];
  if (size == 0 && !present) return;  // KVM refuses to delete a slot it does not have
  kvm_userspace_memory_region region{};
  region.slot = slot;
  region.flags = readonly ? KVM_MEM_READONLY : 0;
  region.guest_phys_addr = gpa;
  region.memory_size = size;
  region.userspace_addr = reinterpret_cast<std::uint64_t>(host);
  if (xioctl(vm_.get(), KVM_SET_USER_MEMORY_REGION, arg(&region)) != 0)
    fail("KVM_SET_USER_MEMORY_REGION slot " + std::to_string(slot));
  if (slot >= slots_.size()) slots_.resize(slot + 1, false);
  slots_[slot] = size != 0;
}

kvm_regs Vm::regs() const {
  kvm_regs r{};
  if (xioctl(vcpu_.get(), KVM_GET_REGS, arg(&r)) != 0) fail("KVM_GET_REGS");
  return r;
}

void Vm::set_regs(const kvm_regs& regs) {
  kvm_regs r = regs;
  if (xioctl(vcpu_.get(), KVM_SET_REGS, arg(&r)) != 0) fail("KVM_SET_REGS");
}

kvm_sregs Vm::sregs() const {
  kvm_sregs s{};
  if (xioctl(vcpu_.get(), KVM_GET_SREGS, arg(&s)) != 0) fail("KVM_GET_SREGS");
  return s;
}

void Vm::set_sregs(const kvm_sregs& sregs) {
  kvm_sregs s = sregs;
  if (xioctl(vcpu_.get(), KVM_SET_SREGS, arg(&s)) != 0) fail("KVM_SET_SREGS");
}

std::uint32_t Vm::run() {
  if (::ioctl(vcpu_.get(), KVM_RUN, 0) != 0) {
    if (errno == EINTR || errno == EAGAIN) return KVM_EXIT_INTR;
    fail("KVM_RUN");
  }
  return run_state().exit_reason;
}

}  // namespace imee::kvm
