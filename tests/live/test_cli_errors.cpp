// Bad input to the tools: a clear message on stderr and a non-zero exit, never a crash.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "lab_guest.hpp"

namespace imee::test {
namespace {

namespace fs = std::filesystem;

struct Case {
  const char* name;
  std::string args;
  int status;
  const char* message;  // must appear in stderr
};

// Files in the temp directory, their names made unique to this process (test runs of other build
// directories on the same machine write files of the same names), removed at the end.
class TempFiles {
 public:
  TempFiles() = default;
  TempFiles(const TempFiles&) = delete;
  TempFiles& operator=(const TempFiles&) = delete;
  ~TempFiles() {
    for (const fs::path& p : paths_) fs::remove(p);
  }
  std::string write(const std::string& name, const std::string& content) {
    const fs::path p = fs::temp_directory_path() / (std::to_string(getpid()) + "-" + name);
    std::ofstream(p) << content;
    paths_.push_back(p);
    return p.string();
  }

 private:
  std::vector<fs::path> paths_;
};

TEST(CliErrors, EachBadInputGetsAClearErrorAndExitCode) {
  const LabGuest g = LabGuest::first();
  // Make sure the real profile exists (built from the kernel and kallsyms on first use).
  ASSERT_EQ(g.tool("pidlist").status, 0);
  std::string good_profile;
  {
    std::ifstream in(g.profile());
    good_profile.assign(std::istreambuf_iterator<char>(in), {});
  }
  TempFiles files;
  const std::string corrupt =
      files.write("imee-corrupt.json", good_profile.substr(0, good_profile.size() / 2));
  const std::string not_profile = files.write("imee-other.json", R"({"format":"something-else"})");
  std::string incomplete_text = good_profile;
  incomplete_text.replace(incomplete_text.find("\"task_struct.pid\""), 17, "\"task_struct.pix\"");
  const std::string incomplete = files.write("imee-incomplete.json", incomplete_text);
  const std::string garbage_ram = files.write("imee-garbage.ram", std::string(1 << 20, 'x'));
  const std::string empty = files.write("imee-empty.ram", "");
  const std::string ram = " --ram " + g.ram();

  const std::vector<Case> cases = {
      {"no arguments", "", 2, "no target"},
      {"unknown option", ram + " --profile " + g.profile() + " --frobnicate", 2,
       "unknown argument"},
      {"missing value", ram + " --profile", 2, "needs a value"},
      {"bad pid", "--pid abc --profile " + g.profile(), 2, "--pid needs a process id"},
      {"no such process", "--pid 999999999 --profile " + g.profile(), 1, "no process with pid"},
      {"not QEMU", "--pid " + std::to_string(getpid()) + " --profile " + g.profile(), 1,
       "no shared guest RAM"},
      {"missing RAM file", "--ram /nonexistent/ram --profile " + g.profile(), 1,
       "cannot open guest RAM"},
      {"empty RAM file", "--ram " + empty + " --profile " + g.profile(), 1,
       "smaller than one page"},
      {"not this guest's RAM", "--ram " + garbage_ram + " --profile " + g.profile(), 1,
       "not found in guest RAM"},
      {"missing profile", ram + " --profile /nonexistent/p.json", 1, "cannot open profile"},
      {"corrupt profile", ram + " --profile " + corrupt, 1, "not a valid ImEE Linux profile"},
      {"foreign JSON", ram + " --profile " + not_profile, 1, "missing format tag"},
      {"incomplete profile", ram + " --profile " + incomplete, 1, "task_struct.pid"},
      {"missing kernel", ram + " --kernel /nonexistent/vmlinuz --symbols " + g.kallsyms(), 1,
       "/nonexistent/vmlinuz"},
      {"symbols are not symbols", ram + " --kernel " + g.kernel + " --symbols " + corrupt, 1,
       "imee-corrupt.json"},
      {"unknown backend", ram + " --profile " + g.profile() + " --backend warp", 2,
       "unknown backend 'warp' (valid: auto, soft, kvm, kernel)"},
      {"unknown backend, no profile", ram + " --backend bogus", 2, "unknown backend 'bogus'"},
      {"not a Linux guest, no profile", "--ram " + garbage_ram, 1,
       "no Linux kernel banner (linux_banner) in guest RAM"},
      {"empty cache option", ram + " --cache ''", 2, "--cache needs a directory"},
      {"unknown machine", ram + " --machine vax --profile " + g.profile(), 2,
       "unknown machine type"},
  };
  for (const Case& c : cases) {
    for (const char* tool : {"pidlist", "pslist", "credlist", "syscalldmp"}) {
      RunResult r = run(LabGuest::tools() + "/" + tool + " " + c.args);
      EXPECT_EQ(r.status, c.status) << tool << " / " << c.name << ": " << r.err;
      EXPECT_NE(r.err.find(c.message), std::string::npos)
          << tool << " / " << c.name << ": " << r.err;
      EXPECT_TRUE(r.out.empty()) << tool << " / " << c.name;
    }
  }
}

TEST(CliErrors, HelpDescribesTheOptions) {
  for (const char* tool : {"pidlist", "pslist", "credlist", "syscalldmp", "imee-profile"}) {
    RunResult r = run(LabGuest::tools() + "/" + tool + " --help");
    EXPECT_EQ(r.status, 0);
    for (const char* opt : {"--pid", "--ram", "--profile", "--kernel", "--symbols", "--cache",
                            "--no-cache", "--backend", "--json"})
      EXPECT_NE(r.out.find(opt), std::string::npos) << tool << " --help lacks " << opt;
  }
}

}  // namespace
}  // namespace imee::test
