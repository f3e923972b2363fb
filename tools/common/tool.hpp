// What every ImEE tool shares: the command line for naming a target, a profile and a backend,
// opening the session, and the exit-code contract (0 ok, 1 failed, 2 usage error).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "imee/linux_session.hpp"
#include "imee/target.hpp"

namespace imee::tools {

struct ToolInfo {
  const char* name;
  const char* summary;                          // one line for --help
  const char* extra_usage;                      // tool-specific options for --help, or ""
  std::vector<std::string> extra_options = {};  // tool-specific "--name VALUE" options
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
};

struct Context {
  Options options;
  std::unique_ptr<LinuxSession> session;  // owns the target and the backend
};

// Parses the common options (every value checked before any work), opens the session, runs `body`,
// prints errors and maps them to exit codes. `body` prints the tool's output (text, or JSON with
// --json).
int run_tool(int argc, char** argv, const ToolInfo& info,
             const std::function<void(Context&)>& body);

// Prints `doc` as indented JSON on stdout.
void print_json(const nlohmann::ordered_json& doc);

}  // namespace imee::tools
