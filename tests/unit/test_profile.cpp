// The cached profile: what is saved loads back whole, and malformed files are refused with a
// clear message (including the float-for-integer case libFuzzer found). The binary form (the
// zero-config cache's) loads back equal to the JSON one; a corrupted, truncated, extended or
// foreign file is refused, never half-read.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "imee/error.hpp"
#include "imee/linux_profile.hpp"
#include "imee/symbols.hpp"

namespace imee {
namespace {

namespace fs = std::filesystem;

LinuxProfile sample() {
  LinuxProfile p;
  p.banner = "Linux version 6.1.0-test";
  p.symbols_path = "/tmp/kallsyms";
  p.syscall_slots = 452;
  std::uint64_t v = 1;
  for (const char* name :
       {"_text", "_etext", "entry_SYSCALL_64", "init_task", "init_top_pgt", "linux_banner",
        "page_offset_base", "sys_call_table", "init_pid_ns", "init_cred", "modules"})
    p.symbols[name] = v++ * 4096;
  p.syscall_handlers = {0x1000, 0, 0x2000};
  // Distinct values, so a field saved under another's key is caught.
  auto* fields = reinterpret_cast<std::uint64_t*>(&p.layout);
  for (std::size_t i = 0; i < sizeof(LinuxLayout) / 8; ++i) fields[i] = 8 * (i + 1);
  p.layout.cap_size = 8;
  p.layout.comm_size = 16;
  p.layout.cred_usage_size = 8;
  return p;
}

class ProfileFile : public ::testing::Test {
 protected:
  std::string path_ =
      (fs::temp_directory_path() / ("imee-profile-" + std::to_string(getpid()) + ".json")).string();
  ~ProfileFile() override { fs::remove(path_); }
  std::string text() {
    std::ifstream in(path_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  void write(const std::string& t) { std::ofstream(path_) << t; }
  std::string load_error() {
    try {
      LinuxProfile::load(path_);
    } catch (const Exception& e) {
      return e.what();
    }
    return "";
  }
};

void expect_same(const LinuxProfile& q, const LinuxProfile& p) {
  EXPECT_EQ(q.banner, p.banner);
  EXPECT_EQ(q.symbols_path, p.symbols_path);
  EXPECT_EQ(q.syscall_slots, p.syscall_slots);
  EXPECT_EQ(q.symbols, p.symbols);
  EXPECT_EQ(q.syscall_handlers, p.syscall_handlers);
  EXPECT_EQ(std::memcmp(&q.layout, &p.layout, sizeof p.layout), 0);
  EXPECT_EQ(q.btf_offset, p.btf_offset);
  EXPECT_EQ(q.btf_size, p.btf_size);
  EXPECT_EQ(q.btf_hash, p.btf_hash);
}

TEST_F(ProfileFile, SavedProfileLoadsBackWhole) {
  const LinuxProfile p = sample();
  p.save(path_);
  expect_same(LinuxProfile::load(path_), p);
}

TEST_F(ProfileFile, NumbersMustBeNonNegativeIntegers) {
  sample().save(path_);
  const std::string good = text();
  write(std::regex_replace(good, std::regex(R"("task_struct.pid": \d+)"),
                           R"("task_struct.pid": 1.1e82)"));
  EXPECT_NE(load_error().find("non-negative integer"), std::string::npos) << load_error();
  write(std::regex_replace(good, std::regex(R"("syscall_slots": \d+)"), R"("syscall_slots": -4)"));
  EXPECT_NE(load_error().find("non-negative integer"), std::string::npos) << load_error();
  write(std::regex_replace(good, std::regex(R"("version": \d+)"), R"("version": 99)"));
  EXPECT_NE(load_error().find("rebuild the profile"), std::string::npos) << load_error();
}

TEST_F(ProfileFile, ImplausibleOrForeignContentIsRefused) {
  sample().save(path_);
  const std::string good = text();
  write(std::regex_replace(good, std::regex(R"x("sizeof\(kernel_cap_t\)": \d+)x"),
                           R"x("sizeof(kernel_cap_t)": 4)x"));
  EXPECT_NE(load_error().find("kernel_cap_t"), std::string::npos) << load_error();
  write("[1, 2, 3]");
  EXPECT_NE(load_error().find("not a valid ImEE Linux profile"), std::string::npos) << load_error();
  write("");
  EXPECT_NE(load_error().find("not a valid ImEE Linux profile"), std::string::npos) << load_error();
}

TEST_F(ProfileFile, BinaryFormLoadsBackEqualToTheJson) {
  LinuxProfile p = sample();
  p.btf_offset = 0x1234000;
  p.btf_size = 5 << 20;
  p.btf_hash = 0xfeedfacecafebeefull;
  p.save(path_);
  const LinuxProfile from_json = LinuxProfile::load(path_);
  from_json.save_binary(path_);
  EXPECT_EQ(text().substr(0, 8), "IMEEPROF");
  const LinuxProfile from_binary = LinuxProfile::load(path_);
  expect_same(from_binary, from_json);
  expect_same(from_binary, p);
}

TEST_F(ProfileFile, SpoiledBinaryFormIsRefused) {
  sample().save_binary(path_);
  const std::string good = text();
  ASSERT_GT(good.size(), 64u);
  auto refused = [&](const std::string& bytes, const std::string& why) {
    write(bytes);
    const std::string e = load_error();
    EXPECT_NE(e.find("not a valid ImEE Linux profile"), std::string::npos) << e;
    EXPECT_NE(e.find(why), std::string::npos) << e;
  };
  std::string flipped = good;
  flipped[good.size() / 2] ^= 0x40;
  refused(flipped, "checksum mismatch");
  refused(good.substr(0, good.size() - 1), "truncated or extended");
  refused(good + "x", "truncated or extended");
  refused(good.substr(0, 20), "bad magic");
  std::string version = good;
  version[8] = 2;  // format version 2
  refused(version, "format version 2");
  // A symbol table's file is not a profile, though both are ImEE binary files.
  SymbolTable::from_symbols({{0xffffffff81000000, 'T', "_text"}}, "test").save_binary(path_);
  EXPECT_NE(load_error().find("not a valid ImEE Linux profile"), std::string::npos) << load_error();
}

TEST_F(ProfileFile, SymbolTableBinaryFormLoadsBackEqual) {
  const SymbolTable t = SymbolTable::from_symbols({{0xffffffff81000000, 'T', "_text"},
                                                   {0xffffffff81000000, 't', "startup_64"},
                                                   {0xffffffff82000000, 'D', "linux_banner"},
                                                   {0x1000, 'A', "fixed_percpu_data"}},
                                                  "test");
  t.save_binary(path_);
  const SymbolTable u = SymbolTable::load(path_);
  ASSERT_EQ(u.size(), t.size());
  for (std::size_t i = 0; i < t.size(); ++i) {
    EXPECT_EQ(u.symbols()[i].address, t.symbols()[i].address);
    EXPECT_EQ(u.symbols()[i].type, t.symbols()[i].type);
    EXPECT_EQ(u.symbols()[i].name, t.symbols()[i].name);
  }
  std::string bytes = text();
  bytes[bytes.size() - 3] ^= 1;
  write(bytes);
  try {
    SymbolTable::load(path_);
    ADD_FAILURE() << "a corrupted symbol file loaded";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find("checksum mismatch"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace imee
