#include "imee/guest_ram.hpp"

#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "imee/error.hpp"

namespace imee {

namespace {

constexpr std::uint64_t k4G = 1ull << 32;

[[noreturn]] void fail(const std::string& name, const std::string& what) {
  throw Exception(name + ": " + what);
}

std::string errno_text() {
  return std::strerror(errno);
}

}  // namespace

MachineType parse_machine_type(const std::string& name) {
  if (name == "flat" || name == "microvm") return MachineType::kFlat;
  if (name == "q35" || name.starts_with("pc-q35")) return MachineType::kQ35;
  if (name == "pc" || name.starts_with("pc-i440fx") || name.starts_with("pc-"))
    return MachineType::kPc;
  throw Exception("unknown machine type '" + name + "' (expected flat, pc or q35)");
}

const char* to_string(MachineType machine) {
  switch (machine) {
    case MachineType::kFlat:
      return "flat";
    case MachineType::kPc:
      return "pc";
    case MachineType::kQ35:
      return "q35";
  }
  return "?";
}

std::vector<RamRegion> qemu_ram_layout(MachineType machine, std::uint64_t ram_size) {
  // QEMU keeps RAM below the PCI hole up to `lowmem` and puts the rest at 4 GiB. These are the
  // defaults of current machine types (gigabyte_align on for pc); max-ram-below-4g is not honoured.
  std::uint64_t lowmem = ram_size;
  if (machine == MachineType::kPc && ram_size >= 0xe0000000ull) lowmem = 0xc0000000ull;
  if (machine == MachineType::kQ35 && ram_size >= 0xb0000000ull) lowmem = 0x80000000ull;
  std::vector<RamRegion> layout{{0, lowmem, 0}};
  if (lowmem < ram_size) layout.push_back({k4G, ram_size - lowmem, lowmem});
  return layout;
}

GuestRam GuestRam::open(const std::string& path, MachineType machine, Content content) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, "cannot open guest RAM: " + errno_text());
  try {
    GuestRam ram = open_fd(fd, path, machine, content);
    ::close(fd);
    return ram;
  } catch (...) {
    ::close(fd);
    throw;
  }
}

GuestRam GuestRam::open_fd(int fd, const std::string& name, MachineType machine, Content content) {
  struct stat st {};
  if (fstat(fd, &st) != 0) fail(name, "cannot stat guest RAM: " + errno_text());
  if (st.st_size < static_cast<off_t>(4096))
    fail(name, "guest RAM file is empty or smaller than one page");
  GuestRam ram;
  ram.name_ = name;
  ram.map_size_ = static_cast<std::size_t>(st.st_size);
  void* map = mmap(nullptr, ram.map_size_, PROT_READ, MAP_SHARED | MAP_NORESERVE, fd, 0);
  if (map == MAP_FAILED) fail(name, "cannot map guest RAM: " + errno_text());
  ram.map_ = map;
  // Introspection touches a few scattered pages: without this, the kernel maps whole large folios
  // around each fault and the tool's RSS grows by hundreds of MiB of guest RAM it never reads.
  madvise(map, ram.map_size_, MADV_RANDOM);
  const auto* base = static_cast<const unsigned char*>(map);
  const std::uint64_t file_size = ram.map_size_;

  Elf64_Ehdr eh;
  std::memcpy(&eh, base, sizeof eh);
  const bool core = content == Content::kRawOrCore && std::memcmp(base, ELFMAG, SELFMAG) == 0 &&
                    eh.e_type == ET_CORE;
  if (!core) {
    for (const RamRegion& region : qemu_ram_layout(machine, file_size))
      ram.add_region(region, file_size);
    return ram;
  }
  // An ELF core (QEMU dump-guest-memory): guest-physical layout comes from PT_LOAD p_paddr.
  if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_phentsize != sizeof(Elf64_Phdr))
    fail(name, "ELF core is not a 64-bit core dump of guest memory");
  if (eh.e_phoff > file_size || eh.e_phnum > (file_size - eh.e_phoff) / sizeof(Elf64_Phdr))
    fail(name, "truncated ELF core: program headers lie beyond the end of the file");
  for (unsigned i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    std::memcpy(&ph, base + eh.e_phoff + i * sizeof ph, sizeof ph);
    if (ph.p_type != PT_LOAD || ph.p_filesz == 0) continue;
    ram.add_region({ph.p_paddr, ph.p_filesz, ph.p_offset}, file_size);
  }
  if (ram.count_ == 0) fail(name, "ELF core has no memory (no PT_LOAD segment)");
  return ram;
}

GuestRam GuestRam::view(std::span<const std::byte> memory) {
  GuestRam ram;
  ram.name_ = "memory view";
  ram.regions_[0] = {0, memory.size(), memory.data()};
  ram.count_ = 1;
  return ram;
}

void GuestRam::add_region(const RamRegion& region, std::uint64_t file_size) {
  if (count_ == kMaxRegions) fail(name_, "too many guest RAM regions");
  if (region.file_offset > file_size || region.size > file_size - region.file_offset)
    fail(name_, "truncated: a guest RAM region lies beyond the end of the file");
  if (region.gpa + region.size < region.gpa) fail(name_, "guest RAM region wraps around");
  regions_[count_++] = {region.gpa, region.size,
                        static_cast<const std::byte*>(map_) + region.file_offset};
}

GuestRam::GuestRam(GuestRam&& other) noexcept {
  *this = std::move(other);
}

GuestRam& GuestRam::operator=(GuestRam&& other) noexcept {
  if (this != &other) {
    if (map_ != nullptr) munmap(map_, map_size_);
    regions_ = other.regions_;
    count_ = std::exchange(other.count_, 0);
    map_ = std::exchange(other.map_, nullptr);
    map_size_ = std::exchange(other.map_size_, 0);
    name_ = std::move(other.name_);
  }
  return *this;
}

GuestRam::~GuestRam() {
  if (map_ != nullptr) munmap(map_, map_size_);
}

std::vector<RamRegion> GuestRam::regions() const {
  std::vector<RamRegion> out;
  for (std::size_t i = 0; i < count_; ++i) {
    const Mapped& r = regions_[i];
    const auto offset =
        map_ != nullptr ? static_cast<std::uint64_t>(r.host - static_cast<const std::byte*>(map_))
                        : 0;
    out.push_back({r.gpa, r.size, offset});
  }
  return out;
}

std::uint64_t GuestRam::total_size() const {
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < count_; ++i) total += regions_[i].size;
  return total;
}

}  // namespace imee
