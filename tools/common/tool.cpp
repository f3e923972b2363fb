#include "tool.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string_view>

#include "imee/guest_profile.hpp"
#include "imee/linux.hpp"

namespace imee::tools {

namespace {

constexpr const char* kCommonUsage = R"(
Target (one of):
  --pid PID          a running QEMU; its guest RAM backend is found through /proc
                     (needs share=on memory: memory-backend-file or memory-backend-memfd)
  --ram FILE         a guest RAM file or a dump (raw, or an ELF64 core from dump-guest-memory)
  --machine TYPE     RAM layout: flat, pc or q35 (default: from QEMU's command line; flat for files)
Profile (none needed: by default the kernel's BTF and kallsyms are read from guest memory and
the profile is cached per kernel build; these take precedence):
  --profile FILE     a profile: ImEE JSON or a Volatility 3 ISF (.json or .json.xz); with
                     --kernel, built and written there if missing
  --kernel FILE      guest kernel image (vmlinuz, vmlinux) or raw BTF (/sys/kernel/btf/vmlinux);
                     without --symbols, an image's own kallsyms tables give the symbols
  --symbols FILE     guest kallsyms dump or System.map
  --cache DIR        profile cache (default $XDG_CACHE_HOME/imee, else ~/.cache/imee)
  --no-cache         neither read nor write the profile cache
Backend and output:
  --backend NAME     soft, kvm, kernel or auto (default auto: on a host with VT-x/AMD-V the
                     kernel backend if the patched kvm-intel or kvm-amd is loaded and --pid is given,
                     else kvm; soft without VT-x/AMD-V)
  --json             machine-readable output
  --stats            print run time and peak memory to stderr (own memory vs. mapped guest RAM)
  --help             this text
Exit status: 0 success and nothing found, 1 failure (target, profile or guest read), 2 bad
usage, 3 success with findings (signs of tampering, listed in the output).
)";

class UsageError : public Exception {
 public:
  using Exception::Exception;
};

void print_usage(const ToolInfo& info, std::FILE* to) {
  std::fprintf(to, "usage: %s (--pid PID | --ram FILE) [options]\n%s\n%s%s", info.name,
               info.summary, info.extra_usage, kCommonUsage);
}

Options parse(int argc, char** argv, const ToolInfo& info) {
  Options o;
  o.cache_dir = default_profile_cache();
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError("option " + std::string(arg) + " needs a value");
      return argv[++i];
    };
    if (arg == "--pid") {
      const std::string v = value();
      pid_t pid = 0;
      const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), pid);
      if (ec != std::errc() || end != v.data() + v.size() || pid <= 0)
        throw UsageError("--pid needs a process id, got '" + v + "'");
      o.target.qemu_pid = pid;
    } else if (arg == "--ram") {
      o.target.ram_path = value();
    } else if (arg == "--machine") {
      try {
        o.target.machine = parse_machine_type(value());
      } catch (const Exception& e) {
        throw UsageError(e.what());
      }
    } else if (arg == "--profile") {
      o.profile_path = value();
    } else if (arg == "--kernel") {
      o.kernel_path = value();
    } else if (arg == "--symbols") {
      o.symbols_path = value();
    } else if (arg == "--cache") {
      o.cache_dir = value();
      if (o.cache_dir.empty()) throw UsageError("--cache needs a directory");
    } else if (arg == "--no-cache") {
      o.cache_dir.clear();
    } else if (arg == "--backend") {
      o.backend = value();
      if (o.backend != "auto" && o.backend != "soft" && o.backend != "kvm" && o.backend != "kernel")
        throw UsageError("unknown backend '" + o.backend + "' (valid: auto, soft, kvm, kernel)");
    } else if (arg == "--json") {
      o.json = true;
    } else if (arg == "--stats") {
      o.stats = true;
    } else if (std::find(info.extra_options.begin(), info.extra_options.end(), arg) !=
               info.extra_options.end()) {
      o.extra[std::string(arg)] = value();
    } else if (std::find(info.extra_flags.begin(), info.extra_flags.end(), arg) !=
               info.extra_flags.end()) {
      o.flags.emplace_back(arg);
    } else {
      throw UsageError("unknown argument '" + std::string(arg) + "'");
    }
  }
  if (!o.target.qemu_pid && o.target.ram_path.empty())
    throw UsageError("no target: give --pid PID or --ram FILE");
  return o;
}

// The session, with the profile from (in this order) --profile if it exists, --kernel
// [--symbols] (saved to --profile if given), or guest memory (and the cache).
std::unique_ptr<LinuxSession> open_session(const Options& o) {
  if (!o.profile_path.empty() || !o.kernel_path.empty()) {
    const bool can_build = !o.kernel_path.empty();
    LinuxProfile profile;
    if (!o.profile_path.empty() && (!can_build || std::filesystem::exists(o.profile_path))) {
      profile = LinuxProfile::load(o.profile_path);
    } else {
      profile = LinuxProfile::build(o.kernel_path, o.symbols_path);
      if (!o.profile_path.empty()) profile.save(o.profile_path);
    }
    return LinuxSession::open(o.target, std::move(profile), o.backend);
  }
  return LinuxSession::open_zero_config(o.target, o.backend, o.cache_dir);
}

// kB of field `key` in /proc/self/status, or in the /proc/self/smaps block of the mapping that
// starts at `mapping` when given.
long proc_kb(const std::string& key, const void* mapping = nullptr) {
  std::ifstream in(mapping ? "/proc/self/smaps" : "/proc/self/status");
  char start[32];
  std::snprintf(start, sizeof start, "%lx-", reinterpret_cast<unsigned long>(mapping));
  bool inside = mapping == nullptr;
  std::string line;
  while (std::getline(in, line)) {
    if (mapping && line.find('-') != std::string::npos && std::isxdigit(line[0]) &&
        line.find(' ') > line.find('-'))
      inside = line.starts_with(start);
    if (inside && line.starts_with(key + ":")) return std::stol(line.substr(key.size() + 1));
  }
  return 0;
}

void print_stats(const Context& ctx, double seconds) {
  const long hwm = proc_kb("VmHWM");
  const Target* target = ctx.session ? ctx.session->target() : nullptr;
  const long ram = target ? proc_kb("Rss", target->ram().mapping().data()) : 0;
  std::fprintf(stderr,
               "stats: %.2f ms; peak RSS %.1f MB, of which guest RAM mapped at exit %.1f MB, "
               "own memory at most %.1f MB\n",
               seconds * 1e3, hwm / 1024.0, ram / 1024.0, (hwm - ram) / 1024.0);
  if (!ctx.session || ctx.session->backend().name() == "soft") return;  // it counts nothing
  const MemoryBackend& backend = ctx.session->backend();
  const BackendStats s = backend.stats();
  auto n = [](std::uint64_t v) { return static_cast<unsigned long long>(v); };
  std::fprintf(stderr,
               "stats: %s: %s; %llu runs, %llu agent faults, %llu blind-spot hits, %llu "
               "relocations\n",
               std::string(backend.name()).c_str(), who_answered(s).c_str(), n(s.runs),
               n(s.agent_faults), n(s.blind_spot_hits), n(s.relocations));
  if (backend.name() == "kernel")
    std::fprintf(stderr,
                 "stats: kernel: %llu VM exits (%llu EPT violation, %llu exception, %llu "
                 "interrupt, %llu other; by exit reason: %s), %llu activations ended by a "
                 "fault, %llu walk copies (%llu changed)\n",
                 n(s.vm_exits), n(s.exits_ept_violation), n(s.exits_exception),
                 n(s.exits_interrupt), n(s.exits_other), exit_reasons_text(s).c_str(),
                 n(s.fault_activations), n(s.walk_copies), n(s.walk_copies_changed));
}

}  // namespace

void print_json(const nlohmann::ordered_json& doc) {
  std::cout << doc.dump(2) << '\n';
}

SymbolTable Context::boot_symbols() const {
  std::vector<std::string> warnings;
  SymbolTable symbols = imee::boot_symbols(*session, options.symbols_path, &warnings);
  for (const std::string& w : warnings) std::fprintf(stderr, "%s: warning: %s\n", tool, w.c_str());
  return symbols;
}

int run_tool(int argc, char** argv, const ToolInfo& info,
             const std::function<void(Context&)>& body) {
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--help" || std::string_view(argv[i]) == "-h") {
      print_usage(info, stdout);
      return 0;
    }
  }
  const auto start = std::chrono::steady_clock::now();
  try {
    Context ctx;
    ctx.tool = info.name;
    ctx.options = parse(argc, argv, info);
    ctx.session = open_session(ctx.options);
    for (const std::string& w : ctx.session->profile_warnings())
      std::fprintf(stderr, "%s: warning: %s\n", info.name, w.c_str());
    if (ctx.options.stats && !ctx.session->profile_origin().empty())
      std::fprintf(stderr, "stats: profile %s\n", ctx.session->profile_origin().c_str());
    body(ctx);
    std::cout.flush();
    if (ctx.options.stats)
      print_stats(ctx,
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    if (!std::cout) return 1;
    return ctx.findings > 0 ? kFindings : 0;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: %s\n(try %s --help)\n", info.name, e.what(), info.name);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", info.name, e.what());
    return 1;
  }
}

}  // namespace imee::tools
