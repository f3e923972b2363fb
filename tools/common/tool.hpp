// What every ImEE tool shares: the command line for naming a target, a profile and a backend,
// opening the session, and the exit-code contract (0 ok, 1 failed, 2 usage error, 3 findings).
#pragma once

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "imee/linux_session.hpp"
#include "imee/symbols.hpp"
#include "imee/target.hpp"

namespace imee::tools {

struct ToolInfo {
  const char* name;
  const char* summary;                          // one line for --help
  const char* extra_usage;                      // tool-specific options for --help, or ""
  std::vector<std::string> extra_options = {};  // tool-specific "--name VALUE" options
  std::vector<std::string> extra_flags = {};    // tool-specific "--name" switches
};

struct Options {
  TargetSpec target;
  std::string profile_path;
  std::string kernel_path;   // vmlinuz / vmlinux / raw BTF, to build a profile
  std::string symbols_path;  // kallsyms / System.map, to build a profile or resolve addresses
  std::string cache_dir;     // zero-config profile cache ("" with --no-cache)
  std::string backend = "auto";
  bool json = false;
  bool stats = false;
  std::map<std::string, std::string> extra;  // values of ToolInfo::extra_options given
  std::vector<std::string> flags;            // ToolInfo::extra_flags given
  bool flag(const std::string& name) const {
    return std::find(flags.begin(), flags.end(), name) != flags.end();
  }
};

struct Context {
  const char* tool = "";
  Options options;
  std::unique_ptr<LinuxSession> session;  // owns the target and the backend
  std::size_t findings = 0;  // signs of tampering the tool reported: exit status kFindings

  // The full symbol list at this boot's slide (--symbols, else the profile's own; see
  // imee::boot_symbols), with a warning on stderr when a damaged cached list was rebuilt.
  SymbolTable boot_symbols() const;
};

// Exit status: 0 clean, 1 failure, 2 usage error, 3 the tool reported findings.
constexpr int kFindings = 3;

// Parses the common options (every value checked before any work), opens the session, runs `body`,
// prints errors and maps them to exit codes. `body` prints the tool's output (text, or JSON with
// --json).
int run_tool(int argc, char** argv, const ToolInfo& info,
             const std::function<void(Context&)>& body);

// Prints `doc` as indented JSON on stdout.
void print_json(const nlohmann::ordered_json& doc);

}  // namespace imee::tools
