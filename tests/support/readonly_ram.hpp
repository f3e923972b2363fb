// Synthetic guest RAM as the kvm backend needs it: page aligned and mapped read-only, the way
// a real target's RAM file is mapped (KVM must not be able to set Accessed/Dirty bits in it).
// The bytes come from a PageTableBuilder (or any buffer) and are copied into a memfd.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <span>
#include <stdexcept>
#include <utility>

namespace imee::test {

class ReadOnlyRam {
 public:
  explicit ReadOnlyRam(std::span<const std::byte> bytes) : size_(bytes.size()) {
    fd_ = memfd_create("imee-test-ram", MFD_CLOEXEC);
    if (fd_ < 0) throw std::runtime_error("memfd_create failed");
    if (ftruncate(fd_, static_cast<off_t>(size_)) != 0)
      throw std::runtime_error("ftruncate failed");
    write(bytes);
    void* p = mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd_, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap of test RAM failed");
    map_ = static_cast<const std::byte*>(p);
  }
  ReadOnlyRam(const ReadOnlyRam&) = delete;
  ReadOnlyRam& operator=(const ReadOnlyRam&) = delete;
  ~ReadOnlyRam() {
    if (map_ != nullptr) munmap(const_cast<std::byte*>(map_), size_);
    if (fd_ >= 0) close(fd_);
  }

  std::span<const std::byte> bytes() const { return {map_, size_}; }

  // Rewrites the RAM, as the target itself would (through a separate, short-lived mapping).
  void write(std::span<const std::byte> bytes, std::size_t offset = 0) {
    void* p = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap of test RAM for writing failed");
    std::memcpy(static_cast<std::byte*>(p) + offset, bytes.data(), bytes.size());
    munmap(p, size_);
  }

 private:
  int fd_ = -1;
  std::size_t size_ = 0;
  const std::byte* map_ = nullptr;
};

}  // namespace imee::test
