// The cached profile: what is saved loads back whole, and malformed files are refused with a
// clear message (including the float-for-integer case libFuzzer found).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "imee/error.hpp"
#include "imee/linux_profile.hpp"

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

TEST_F(ProfileFile, SavedProfileLoadsBackWhole) {
  const LinuxProfile p = sample();
  p.save(path_);
  const LinuxProfile q = LinuxProfile::load(path_);
  EXPECT_EQ(q.banner, p.banner);
  EXPECT_EQ(q.symbols_path, p.symbols_path);
  EXPECT_EQ(q.syscall_slots, p.syscall_slots);
  EXPECT_EQ(q.symbols, p.symbols);
  EXPECT_EQ(q.syscall_handlers, p.syscall_handlers);
  EXPECT_EQ(std::memcmp(&q.layout, &p.layout, sizeof p.layout), 0);
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

}  // namespace
}  // namespace imee
