// Guest RAM layouts: QEMU's split around the PCI hole (hand-computed from QEMU's pc_piix.c and
// pc_q35.c defaults), raw files, ELF cores, and refusals of bad files.
#include <elf.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "imee/error.hpp"
#include "imee/guest_ram.hpp"

namespace imee {
namespace {

namespace fs = std::filesystem;
constexpr std::uint64_t MiB = 1ull << 20, GiB = 1ull << 30;

TEST(RamLayout, SmallGuestsAreFlat) {
  for (MachineType m : {MachineType::kFlat, MachineType::kPc, MachineType::kQ35}) {
    const auto l = qemu_ram_layout(m, 512 * MiB);
    ASSERT_EQ(l.size(), 1u);
    EXPECT_EQ(l[0].gpa, 0u);
    EXPECT_EQ(l[0].size, 512 * MiB);
  }
}

TEST(RamLayout, PcMovesRamAbove3GiBTo4GiB) {
  const auto l = qemu_ram_layout(MachineType::kPc, 4 * GiB);  // >= 3.5 GiB: lowmem 3 GiB
  ASSERT_EQ(l.size(), 2u);
  EXPECT_EQ(l[0].size, 3 * GiB);
  EXPECT_EQ(l[1].gpa, 4 * GiB);
  EXPECT_EQ(l[1].size, 1 * GiB);
  EXPECT_EQ(l[1].file_offset, 3 * GiB);
  EXPECT_EQ(qemu_ram_layout(MachineType::kPc, 3 * GiB).size(), 1u);  // below 3.5 GiB: no split
}

TEST(RamLayout, Q35SplitsAt2GiBFrom2Point75GiB) {
  const auto l = qemu_ram_layout(MachineType::kQ35, 3 * GiB);
  ASSERT_EQ(l.size(), 2u);
  EXPECT_EQ(l[0].size, 2 * GiB);
  EXPECT_EQ(l[1].gpa, 4 * GiB);
  EXPECT_EQ(l[1].size, 1 * GiB);
  EXPECT_EQ(qemu_ram_layout(MachineType::kQ35, 2 * GiB + 512 * MiB).size(), 1u);
  EXPECT_EQ(qemu_ram_layout(MachineType::kFlat, 8 * GiB).size(), 1u);
}

TEST(RamLayout, MachineNames) {
  EXPECT_EQ(parse_machine_type("pc-i440fx-7.2"), MachineType::kPc);
  EXPECT_EQ(parse_machine_type("pc-q35-7.2"), MachineType::kQ35);
  EXPECT_EQ(parse_machine_type("q35"), MachineType::kQ35);
  EXPECT_EQ(parse_machine_type("microvm"), MachineType::kFlat);
  EXPECT_THROW(parse_machine_type("vax"), Exception);
}

class TempFile {
 public:
  explicit TempFile(const std::string& bytes) {
    path_ = fs::temp_directory_path() /
            ("imee-ram-" + std::to_string(getpid()) + "-" + std::to_string(counter_++));
    std::ofstream(path_, std::ios::binary).write(bytes.data(), bytes.size());
  }
  ~TempFile() { fs::remove(path_); }
  std::string path() const { return path_.string(); }

 private:
  fs::path path_;
  static inline int counter_ = 0;
};

// An ELF core like QEMU's dump-guest-memory: two PT_LOADs, RAM at 0 and at 4 GiB.
std::string elf_core(std::uint64_t second_size_claimed) {
  Elf64_Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_type = ET_CORE;
  eh.e_machine = EM_X86_64;
  eh.e_phoff = sizeof eh;
  eh.e_phentsize = sizeof(Elf64_Phdr);
  eh.e_phnum = 3;
  Elf64_Phdr note{}, low{}, high{};
  note.p_type = PT_NOTE;
  low.p_type = high.p_type = PT_LOAD;
  low.p_offset = 4096;
  low.p_paddr = 0;
  low.p_filesz = low.p_memsz = 8192;
  high.p_offset = 4096 + 8192;
  high.p_paddr = 4 * GiB;
  high.p_filesz = high.p_memsz = second_size_claimed;
  std::string out(4096 + 8192 + 4096, '\0');
  std::memcpy(out.data(), &eh, sizeof eh);
  std::memcpy(out.data() + sizeof eh, &note, sizeof note);
  std::memcpy(out.data() + sizeof eh + sizeof note, &low, sizeof low);
  std::memcpy(out.data() + sizeof eh + 2 * sizeof note, &high, sizeof high);
  out[4096 + 100] = 'L';
  out[4096 + 8192 + 200] = 'H';
  return out;
}

TEST(GuestRamFiles, ElfCoreIsLaidOutByItsLoadSegments) {
  const TempFile f(elf_core(4096));
  const GuestRam ram = GuestRam::open(f.path(), MachineType::kPc);
  const auto regions = ram.regions();
  ASSERT_EQ(regions.size(), 2u);
  EXPECT_EQ(ram.total_size(), 8192u + 4096);
  ASSERT_NE(ram.host(100, 1), nullptr);
  EXPECT_EQ(static_cast<char>(*ram.host(100, 1)), 'L');
  ASSERT_NE(ram.host(4 * GiB + 200, 1), nullptr);
  EXPECT_EQ(static_cast<char>(*ram.host(4 * GiB + 200, 1)), 'H');
  EXPECT_EQ(ram.host(8192, 1), nullptr);  // the hole between the segments
  EXPECT_EQ(ram.host(8190, 4), nullptr);  // straddles the end of a region
  EXPECT_EQ(ram.host(4 * GiB + 4096, 1), nullptr);
}

TEST(GuestRamFiles, TruncatedElfCoreIsRefused) {
  const TempFile f(elf_core(1 * GiB));  // claims far more than the file holds
  try {
    GuestRam::open(f.path(), MachineType::kFlat);
    FAIL() << "a truncated core must be refused";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
}

TEST(GuestRamFiles, RawFileFollowsTheMachineLayout) {
  std::string bytes(3 * 4096, 'r');
  bytes[2 * 4096] = 'x';
  const TempFile f(bytes);
  const GuestRam ram = GuestRam::open(f.path(), MachineType::kFlat);
  EXPECT_EQ(ram.total_size(), 3u * 4096);
  EXPECT_EQ(static_cast<char>(*ram.host(2 * 4096, 1)), 'x');
  EXPECT_EQ(ram.host(3 * 4096, 1), nullptr);
}

TEST(GuestRamFiles, BadFilesAreRefusedClearly) {
  EXPECT_THROW(GuestRam::open("/nonexistent/ram", MachineType::kFlat), Exception);
  const TempFile tiny("abc");
  EXPECT_THROW(GuestRam::open(tiny.path(), MachineType::kFlat), Exception);
  std::string bad_headers = elf_core(4096);
  bad_headers[54] = 40;  // e_phentsize: not an Elf64_Phdr
  const TempFile bad(bad_headers);
  EXPECT_THROW(GuestRam::open(bad.path(), MachineType::kFlat), Exception);
}

// RAM is the guest's to fill: a PVH-booted guest holds its kernel's ELF header (ET_EXEC) at GPA
// 0, and live QEMU RAM may hold anything there, a core's header included.
TEST(GuestRamFiles, RawRamMayBeginWithAnElfHeader) {
  std::string exec = elf_core(4096);
  exec[16] = ET_EXEC;
  const TempFile f(exec);
  const GuestRam ram = GuestRam::open(f.path(), MachineType::kFlat);
  EXPECT_EQ(ram.total_size(), exec.size()) << "raw RAM: the whole file from GPA 0";
  EXPECT_EQ(static_cast<char>(*ram.host(1, 1)), 'E');

  const TempFile core(elf_core(4096));
  const GuestRam live = GuestRam::open(core.path(), MachineType::kFlat, GuestRam::Content::kRaw);
  EXPECT_EQ(live.total_size(), elf_core(4096).size());
  EXPECT_EQ(static_cast<char>(*live.host(1, 1)), 'E');
}

}  // namespace
}  // namespace imee
