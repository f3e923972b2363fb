// libimee on the live lab guests: finding the kernel without help (KASLR, paging mode), typed
// errors for wild reads, and clear errors for bad input.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "imee/linux.hpp"
#include "imee/linux_session.hpp"
#include "imee/soft_backend.hpp"
#include "imee/symbols.hpp"
#include "imee/target.hpp"
#include "lab_guest.hpp"

namespace imee::test {
namespace {

namespace fs = std::filesystem;

class LiveSession : public ::testing::TestWithParam<LabGuest> {
 protected:
  void SetUp() override {
    guest_ = GetParam();
    // Build the profile in-process (the tools' tests cover the cached path).
    profile_ = LinuxProfile::build(guest_.kernel, guest_.kallsyms());
    target_ = std::make_unique<Target>(Target::open({.ram_path = guest_.ram()}));
    backend_ = std::make_unique<SoftBackend>(target_->ram());
  }
  LabGuest guest_;
  LinuxProfile profile_;
  std::unique_ptr<Target> target_;
  std::unique_ptr<MemoryBackend> backend_;
};

TEST_P(LiveSession, FindsTheKernelWhereThisBootPutIt) {
  LinuxSession s(*backend_, profile_);
  const SymbolTable kallsyms = SymbolTable::load(guest_.kallsyms());
  EXPECT_EQ(s.kernel().text_va, *kallsyms.find("_text"));
  EXPECT_EQ(s.symbol("init_task"), *kallsyms.find("init_task"));
  EXPECT_EQ(s.kernel().space.mode,
            GetParam().levels == 5 ? PagingMode::k5Level : PagingMode::k4Level);
  EXPECT_EQ(s.kernel().text_gpa % (2u << 20), 0u);
  // The banner read through the kernel's own page tables is the one in the image.
  auto banner = s.cstring(s.symbol("linux_banner"), 256);
  ASSERT_TRUE(banner.ok()) << banner.error().describe();
  EXPECT_EQ(*banner, profile_.banner + "\n");
  // ... and the guest's own uname: the profile (built from this guest's kernel image) and the
  // kernel found in RAM are the kernel the guest says it runs (6.1 or 6.12 in the lab).
  std::istringstream info(guest_.query("info"));
  std::string release;
  for (std::string line; std::getline(info, line);)
    if (line.starts_with("release ")) release = line.substr(8);
  ASSERT_FALSE(release.empty()) << "the guest's info has no release";
  EXPECT_TRUE(banner->starts_with("Linux version " + release + " "))
      << *banner << " vs " << release;
  // page_offset_base is randomized too; the direct map must show physical page 0x1000's bytes.
  std::vector<std::byte> via_va(64), via_pa(64);
  ASSERT_TRUE(s.read(s.kernel().page_offset_base + 0x100000, via_va).ok());
  ASSERT_TRUE(backend_->read_physical(0x100000, via_pa).ok());
  EXPECT_EQ(via_va, via_pa);
}

TEST_P(LiveSession, WildReadsGetTypedErrors) {
  LinuxSession s(*backend_, profile_);
  auto noncanonical = s.u64(GetParam().levels == 5 ? 0x0100000000000000ull : 0x0000800000000000ull);
  ASSERT_FALSE(noncanonical.ok());
  EXPECT_EQ(noncanonical.error().fault, Fault::kNonCanonical);

  auto user_low = s.u64(0x1000);  // the kernel's page tables map nothing there
  ASSERT_FALSE(user_low.ok());
  EXPECT_EQ(user_low.error().fault, Fault::kNotPresent);
  EXPECT_EQ(user_low.error().va, 0x1000u);
  EXPECT_GE(user_low.error().level, 1);

  std::vector<std::byte> buf(16);
  EXPECT_EQ(s.read(~0ull - 4, buf).error().fault, Fault::kBadLength);
  auto huge = s.read(s.symbol("init_task"), kMaxReadLength + 1);
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.error().fault, Fault::kBadLength);
  EXPECT_THROW(s.u64(0x1000).value(), ReadFailure);
}

TEST_P(LiveSession, UserSpaceOfAProcessTranslates) {
  LinuxSession s(*backend_, profile_);
  const auto tasks = read_tasks(s);
  int translated = 0;
  for (const Task& t : tasks) {
    if (t.mm == 0) continue;
    auto pgd = s.pointer(t.mm + s.profile().layout.mm_pgd);
    ASSERT_TRUE(pgd.ok());
    const AddressSpace user = s.user_space(*pgd);
    // Every user process maps the kernel half too: init_task must read identically there.
    std::uint64_t a = 0, b = 0;
    ASSERT_TRUE(
        backend_->read(user, s.symbol("init_task"), std::as_writable_bytes(std::span(&a, 1))).ok());
    ASSERT_TRUE(s.read(s.symbol("init_task"), std::as_writable_bytes(std::span(&b, 1))).ok());
    EXPECT_EQ(a, b);
    ++translated;
  }
  EXPECT_GE(translated, 40);
}

TEST_P(LiveSession, TruncatedDumpIsRefusedClearly) {
  const fs::path dump = fs::temp_directory_path() / ("imee-truncated-" + std::to_string(getpid()) +
                                                     "-" + GetParam().test_name());
  {
    std::ifstream in(guest_.ram(), std::ios::binary);
    std::ofstream out(dump, std::ios::binary);
    std::vector<char> buf(16 << 20);
    in.read(buf.data(), buf.size());
    out.write(buf.data(), in.gcount());
  }
  Target small = Target::open({.ram_path = dump.string()});
  auto soft = std::make_unique<SoftBackend>(small.ram());
  // Linux never loads at a physical address below 16 MiB, so the prefix cannot hold the kernel.
  try {
    LinuxSession s(*soft, profile_);
    ADD_FAILURE() << "a 16 MiB prefix of guest RAM must not locate a kernel";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find("truncated dump"), std::string::npos) << e.what();
  }
  fs::remove(dump);
}

TEST_P(LiveSession, WrongProfileIsRefusedClearly) {
  LinuxProfile wrong = profile_;
  wrong.banner = "Linux version 5.10.0-99-amd64 (nobody@example) #1 SMP";
  try {
    LinuxSession s(*backend_, wrong);
    ADD_FAILURE() << "a profile of another kernel must not locate";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find("not found in guest RAM"), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Guests, LiveSession, ::testing::ValuesIn(LabGuest::all()),
                         [](const auto& info) { return info.param.test_name(); });

}  // namespace
}  // namespace imee::test
