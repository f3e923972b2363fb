// Guest-physical memory of a target, mapped read-only into this process.
//
// A target's RAM is a file (QEMU memory-backend-file or memfd with share=on, or a raw dump) whose
// bytes are laid out in guest-physical order, except that QEMU's pc and q35 machines put the part
// of RAM above the 32-bit PCI hole at GPA 4 GiB. RamLayout describes that split.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace imee {

struct RamRegion {
  std::uint64_t gpa = 0;
  std::uint64_t size = 0;
  std::uint64_t file_offset = 0;
};

enum class MachineType { kFlat, kPc, kQ35 };

MachineType parse_machine_type(
    const std::string& name);  // "flat", "pc"/"pc-i440fx-*", "q35"/"pc-q35-*"
const char* to_string(MachineType machine);

// QEMU's split of `ram_size` bytes of RAM into guest-physical regions (hw/i386/pc_piix.c,
// pc_q35.c).
std::vector<RamRegion> qemu_ram_layout(MachineType machine, std::uint64_t ram_size);

class GuestRam {
 public:
  static constexpr std::size_t kMaxRegions = 4;

  // What a file may hold. QEMU's live RAM (its memory backend) is raw RAM, never sniffed: its
  // first bytes are the guest's (a PVH-booted guest holds its kernel's ELF header at GPA 0). A
  // file a user names may also be an ELF core (QEMU dump-guest-memory), recognised by its
  // header: 64-bit, ET_CORE. It is laid out by its PT_LOAD headers; raw RAM by `machine`.
  enum class Content { kRaw, kRawOrCore };

  // Maps `path` read-only.
  static GuestRam open(const std::string& path, MachineType machine,
                       Content content = Content::kRawOrCore);
  // Maps an already open descriptor (e.g. /proc/PID/map_files/...); takes no ownership of fd.
  static GuestRam open_fd(int fd, const std::string& name, MachineType machine, Content content);
  // Unowned view of memory laid out flat from GPA 0 (unit tests, synthetic targets).
  static GuestRam view(std::span<const std::byte> memory);

  GuestRam(GuestRam&& other) noexcept;
  GuestRam& operator=(GuestRam&& other) noexcept;
  GuestRam(const GuestRam&) = delete;
  GuestRam& operator=(const GuestRam&) = delete;
  ~GuestRam();

  // Host pointer to [gpa, gpa+len), or nullptr if that range is not wholly inside one region.
  const std::byte* host(std::uint64_t gpa, std::uint64_t len) const {
    for (std::size_t i = 0; i < count_; ++i) {
      const Mapped& r = regions_[i];
      std::uint64_t off = gpa - r.gpa;
      if (gpa >= r.gpa && off < r.size && len <= r.size - off) return r.host + off;
    }
    return nullptr;
  }

  std::vector<RamRegion> regions() const;
  std::uint64_t total_size() const;
  const std::string& name() const { return name_; }
  // The whole mapped file (empty for views), e.g. to find it in /proc/self/smaps.
  std::span<const std::byte> mapping() const {
    return {static_cast<const std::byte*>(map_), map_size_};
  }

 private:
  struct Mapped {
    std::uint64_t gpa = 0;
    std::uint64_t size = 0;
    const std::byte* host = nullptr;
  };
  GuestRam() = default;
  void add_region(const RamRegion& region, std::uint64_t file_size);

  std::array<Mapped, kMaxRegions> regions_{};
  std::size_t count_ = 0;
  void* map_ = nullptr;  // owned mmap of the whole file, or nullptr for views
  std::size_t map_size_ = 0;
  std::string name_;
};

}  // namespace imee
