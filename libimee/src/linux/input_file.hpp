// A whole input file (kernel image, BTF, symbol list) in memory: mapped when it can be (a vmlinux
// with DWARF is close to 1 GB), read otherwise (procfs and sysfs files such as /proc/kallsyms and
// /sys/kernel/btf/vmlinux report size 0 and cannot be mapped). Private to libimee.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "imee/error.hpp"

namespace imee {

class InputFile {
 public:
  InputFile(const std::string& path, std::size_t max_bytes) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Exception(path + ": cannot open: " + std::strerror(errno));
    struct Closer {
      int fd;
      ~Closer() { ::close(fd); }
    } closer{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw Exception(path + ": cannot stat: " + std::strerror(errno));
    if (S_ISDIR(st.st_mode)) throw Exception(path + ": is a directory");
    if (static_cast<std::uint64_t>(st.st_size) > max_bytes)
      throw Exception(path + ": file too large");
    if (S_ISREG(st.st_mode) && st.st_size > 0) {
      void* map = ::mmap(nullptr, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
      if (map != MAP_FAILED) {
        map_ = map;
        size_ = static_cast<std::size_t>(st.st_size);
        return;
      }
    }
    data_.resize(st.st_size > 0 ? static_cast<std::size_t>(st.st_size) + 1 : 1 << 20);
    std::size_t used = 0;
    for (;;) {
      if (used == data_.size()) {
        if (data_.size() >= max_bytes) throw Exception(path + ": file too large");
        data_.resize(data_.size() * 2);
      }
      const ssize_t n = ::read(fd, data_.data() + used, data_.size() - used);
      if (n < 0) {
        if (errno == EINTR) continue;
        throw Exception(path + ": read failed: " + std::strerror(errno));
      }
      if (n == 0) break;
      used += static_cast<std::size_t>(n);
    }
    data_.resize(used);
    size_ = used;
  }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;
  ~InputFile() {
    if (map_ != nullptr) ::munmap(map_, size_);
  }

  std::span<const std::uint8_t> bytes() const {
    return map_ != nullptr ? std::span(static_cast<const std::uint8_t*>(map_), size_)
                           : std::span<const std::uint8_t>(data_);
  }
  std::string_view text() const {
    const auto b = bytes();
    return {reinterpret_cast<const char*>(b.data()), b.size()};
  }

 private:
  void* map_ = nullptr;
  std::size_t size_ = 0;
  std::vector<std::uint8_t> data_;
};

}  // namespace imee
