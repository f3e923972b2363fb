// imee-bench: how fast each backend reads a live guest, and how fast the tools run.
// A benchmark, not a test: it prints numbers (a table, or JSON with --json) and asserts nothing.
#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "bench/cached_translation.hpp"
#include "common/tool.hpp"
#include "imee/guest_profile.hpp"
#include "imee/kernel_backend.hpp"
#include "imee/kvm_backend.hpp"
#include "imee/linux.hpp"
#include "imee/soft_backend.hpp"

extern char** environ;

namespace imee::bench {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::ordered_json;

double ns_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
}

struct Stats {
  double median = 0, p99 = 0;
};

Stats stats(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v[std::min(v.size() - 1, v.size() * 99 / 100)]};
}

// Per-operation cost: up to `samples` samples of `batch` back-to-back operations each, so the
// clock's own cost is amortized; median and p99 are over the samples' per-operation means. A slow
// backend stops after `budget_ms` (at least 5 samples), so one run stays short on any host.
template <class Op>
Stats per_op(int samples, int batch, Op&& op, double budget_ms = 300) {
  std::vector<double> v;
  v.reserve(samples);
  const auto start = Clock::now();
  for (int s = 0; s < samples && (s < 5 || ns_since(start) < budget_ms * 1e6); ++s) {
    const auto t0 = Clock::now();
    for (int i = 0; i < batch; ++i) op(i);
    v.push_back(ns_since(t0) / batch);
  }
  return stats(std::move(v));
}

// The median over `runs` repetitions of a measurement (the figure the README reports).
template <class Measure>
Stats repeat(int runs, Measure&& measure) {
  std::vector<double> med, p99;
  for (int r = 0; r < runs; ++r) {
    const Stats s = measure();
    med.push_back(s.median);
    p99.push_back(s.p99);
  }
  return {stats(med).median, stats(p99).median};
}

std::string machine_label() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, model = "unknown CPU";
  bool hypervisor = false;
  while (std::getline(cpuinfo, line)) {
    if (line.starts_with("model name") && model == "unknown CPU")
      model = line.substr(line.find(':') + 2);
    if (line.starts_with("flags") && line.find(" hypervisor") != std::string::npos)
      hypervisor = true;
  }
  utsname u{};
  uname(&u);
  return model + ", " + std::to_string(sysconf(_SC_NPROCESSORS_ONLN)) + " CPUs" +
         (hypervisor ? " (a VM)" : "") + ", Linux " + u.release;
}

struct BackendFigures {
  std::string name;
  std::vector<std::pair<std::size_t, Stats>> read_ns;  // by read size
  Stats batch_field_ns, walk_us;
  // The two views of the processes (addresses only) and the cross-check (both views, every task
  // read, leaders compared): what pidlist's IDR walk and pslist's default check cost.
  Stats list_walk_us, idr_walk_us, cross_view_us;
  BackendStats counters;  // who answered: since the backend was built (poll after batch: both)
};

BackendFigures measure_backend(MemoryBackend& backend, LinuxSession& session,
                               const std::vector<Task>& tasks, int runs) {
  BackendFigures f{std::string(backend.name()), {}, {}, {}};
  const AddressSpace& kernel = session.kernel_space();
  std::vector<std::byte> buf(4096);
  // Kernel VAs spread over every task_struct (direct map), at varying offsets inside them.
  std::vector<std::uint64_t> vas;
  std::mt19937_64 rng(1);
  for (int i = 0; i < 4096; ++i)
    vas.push_back(tasks[rng() % tasks.size()].address + (rng() % 64) * 8);
  for (std::size_t size : {4, 8, 64, 256, 1024, 4096}) {
    const Stats s = repeat(runs, [&] {
      return per_op(
          200, backend.name() == "soft" || backend.name() == "soft+tlb" ? 64 : 1, [&](int i) {
            (void)backend.read(kernel, vas[i * 61 % vas.size()], std::span(buf.data(), size));
          });
    });
    f.read_ns.emplace_back(size, s);
  }

  // pid, comm and cred pointer of every task in one call.
  const LinuxLayout& l = session.profile().layout;
  std::vector<std::byte> out(tasks.size() * 32);
  std::vector<ReadRequest> batch;
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    std::byte* o = out.data() + i * 32;
    batch.push_back({kernel, tasks[i].address + l.task_pid, std::span(o, 4), {}});
    batch.push_back({kernel, tasks[i].address + l.task_comm, std::span(o + 8, 16), {}});
    batch.push_back({kernel, tasks[i].address + l.task_real_cred, std::span(o + 24, 8), {}});
  }
  f.batch_field_ns =
      repeat(runs, [&] { return per_op(50, 1, [&](int) { backend.read_batch(batch); }); });
  f.batch_field_ns.median /= batch.size();
  f.batch_field_ns.p99 /= batch.size();

  // The whole walk: list, then pid, comm, parent, creds of every task.
  LinuxSession walker(backend, session.profile(), session.kernel());  // the kernel is found already
  f.walk_us = repeat(runs, [&] { return per_op(20, 1, [&](int) { (void)read_tasks(walker); }); });
  f.walk_us.median /= 1000;
  f.walk_us.p99 /= 1000;
  auto in_us = [&](auto&& body) {
    Stats st = repeat(runs, [&] { return per_op(20, 1, [&](int) { body(); }); });
    st.median /= 1000;
    st.p99 /= 1000;
    return st;
  };
  f.list_walk_us = in_us([&] { (void)task_addresses(walker); });
  f.idr_walk_us = in_us([&] { (void)pid_namespace_pids(walker); });
  f.cross_view_us = in_us([&] { (void)cross_view(walker, false); });
  f.counters = backend.stats();
  return f;
}

struct ToolFigures {
  std::string name;
  Stats wall_ms;
  double max_rss_mb = 0;  // everything, mapped guest RAM included
  double own_mb = 0;      // beyond the mapped guest RAM, as the tool's --stats reports it
};

ToolFigures measure_tool(const std::string& path, const std::vector<std::string>& args, int runs) {
  ToolFigures f{std::filesystem::path(path).filename(), {}, 0, 0};
  const std::string err =
      std::filesystem::temp_directory_path() / ("imee-bench-" + std::to_string(getpid()));
  std::vector<double> wall;
  for (int r = 0; r < std::max(runs, 10); ++r) {
    std::vector<char*> argv{const_cast<char*>(path.c_str())};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(const_cast<char*>("--stats"));
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const auto t0 = Clock::now();
    pid_t pid;
    if (posix_spawn(&pid, path.c_str(), &fa, nullptr, argv.data(), environ) != 0)
      throw Exception("cannot run " + path);
    int status = 0;
    rusage ru{};
    wait4(pid, &status, 0, &ru);
    wall.push_back(ns_since(t0) / 1e6);
    posix_spawn_file_actions_destroy(&fa);
    if (!WIFEXITED(status) || (WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 3))
      throw Exception(path + " failed while benchmarking");  // 3: ran, and reported findings
    f.max_rss_mb = std::max(f.max_rss_mb, ru.ru_maxrss / 1024.0);
    std::ifstream stats(err);
    std::string line;
    while (std::getline(stats, line))
      if (const auto at = line.find("own memory at most "); at != std::string::npos)
        f.own_mb = std::max(f.own_mb, std::stod(line.substr(at + 19)));
  }
  std::filesystem::remove(err);
  f.wall_ms = stats(wall);
  return f;
}

// Zero-configuration attach as a user meets it, process start included: cold (an empty profile
// cache: the kernel found and its profile built from guest memory) to pslist's first line of
// output, and warm (the cache filled by the cold run) to pslist's and syscalldmp's exit.
struct AttachFigures {
  std::string tools_dir;
  Stats cold_first_line_ms, cold_exit_ms, warm_pslist_ms, warm_syscalldmp_ms;
};

struct Timed {
  double first_line_ms = 0, exit_ms = 0;
};

// Runs `path args`, its stdout read through a pipe: when the first line came, when it exited.
Timed run_timed(const std::string& path, const std::vector<std::string>& args) {
  std::vector<char*> argv{const_cast<char*>(path.c_str())};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) throw Exception("pipe failed");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  const auto t0 = Clock::now();
  pid_t pid;
  const int spawned = posix_spawn(&pid, path.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(out[1]);
  if (spawned != 0) {
    close(out[0]);
    throw Exception("cannot run " + path);
  }
  Timed t;
  char buf[4096];
  for (ssize_t n; (n = read(out[0], buf, sizeof buf)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    if (t.first_line_ms == 0 && std::find(buf, buf + n, '\n') != buf + n)
      t.first_line_ms = ns_since(t0) / 1e6;
  }
  close(out[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  t.exit_ms = ns_since(t0) / 1e6;
  if (!WIFEXITED(status) || (WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 3))
    throw Exception(path + " failed while benchmarking");
  return t;
}

// The figures of each tools directory, measured in turns (each repetition runs every
// directory's tools once), so that they share the host's load.
std::vector<AttachFigures> measure_attach(const std::vector<std::string>& dirs,
                                          const std::vector<std::string>& target_args, int runs) {
  namespace fs = std::filesystem;
  struct Samples {
    std::vector<double> first_line, cold, pslist, syscalldmp;
  };
  std::vector<Samples> samples(dirs.size());
  const fs::path base =
      fs::temp_directory_path() / ("imee-bench-cache-" + std::to_string(getpid()));
  for (int r = 0; r < runs; ++r) {
    for (std::size_t d = 0; d < dirs.size(); ++d) {
      const std::string cache = (base / std::to_string(d)).string();
      fs::remove_all(cache);
      std::vector<std::string> args = target_args;
      args.insert(args.end(), {"--cache", cache});
      const Timed cold = run_timed(dirs[d] + "/pslist", args);
      samples[d].first_line.push_back(cold.first_line_ms);
      samples[d].cold.push_back(cold.exit_ms);
      (void)run_timed(dirs[d] + "/syscalldmp", args);  // a cold run of its own, not counted
      for (int w = 0; w < 5; ++w) {
        samples[d].pslist.push_back(run_timed(dirs[d] + "/pslist", args).exit_ms);
        samples[d].syscalldmp.push_back(run_timed(dirs[d] + "/syscalldmp", args).exit_ms);
      }
    }
  }
  fs::remove_all(base);
  std::vector<AttachFigures> out;
  for (std::size_t d = 0; d < dirs.size(); ++d)
    out.push_back({dirs[d], stats(samples[d].first_line), stats(samples[d].cold),
                   stats(samples[d].pslist), stats(samples[d].syscalldmp)});
  return out;
}

}  // namespace
}  // namespace imee::bench

int main(int argc, char** argv) {
  using namespace imee;
  using namespace imee::bench;
  const tools::ToolInfo info{
      "imee-bench",
      "Benchmarks reads of a live guest through each backend and the tools' run times.",
      "Benchmark:\n"
      "  --runs N           repetitions of each measurement; medians are reported (default 5)\n"
      "  --tools-dir DIR    where pidlist, pslist, credlist and syscalldmp are (default: beside\n"
      "                     imee-bench); they get --profile if given, else the profile cache\n"
      "  --json-file FILE   also write the JSON figures to FILE\n"
      "  --compare-tools DIR  also measure zero-configuration attach with the tools in DIR\n"
      "                     (e.g. an earlier build), in turns with --tools-dir's\n"
      "  --attach-only      only the zero-configuration attach figures (cold and warm cache)\n",
      {"--runs", "--tools-dir", "--json-file", "--compare-tools"},
      {"--attach-only"}};
  return tools::run_tool(argc, argv, info, [&](tools::Context& ctx) {
    const int runs =
        std::stoi(ctx.options.extra.contains("--runs") ? ctx.options.extra["--runs"] : "5");
    LinuxSession& session = *ctx.session;
    const std::vector<Task> tasks = read_tasks(session);
    const std::string dir =
        ctx.options.extra.contains("--tools-dir")
            ? ctx.options.extra["--tools-dir"]
            : std::filesystem::read_symlink("/proc/self/exe").parent_path().string();
    std::vector<std::string> args;
    if (ctx.options.target.qemu_pid)
      args = {"--pid", std::to_string(*ctx.options.target.qemu_pid)};
    else
      args = {"--ram", ctx.options.target.ram_path};
    std::vector<std::string> attach_dirs{dir};
    if (ctx.options.extra.contains("--compare-tools"))
      attach_dirs.push_back(ctx.options.extra["--compare-tools"]);
    const std::vector<AttachFigures> attach = measure_attach(attach_dirs, args, runs);
    // What a warm run reads first: the cache entry's binary profile, loaded and checked.
    const Stats profile_load_us = [&] {
      const std::string cache =
          std::filesystem::temp_directory_path() / ("imee-bench-load-" + std::to_string(getpid()));
      const GuestProfile gp = guest_profile(session.target()->ram(), cache);
      Stats st = repeat(runs, [&] {
        return per_op(20, 1, [&](int) { (void)LinuxProfile::load(gp.cache_path); });
      });
      std::filesystem::remove_all(cache);
      st.median /= 1000;
      st.p99 /= 1000;
      return st;
    }();
    const auto print_attach = [&] {
      std::printf(
          "\nzero-configuration attach, process start included (ms, median/p99 of %d runs)\n",
          runs);
      std::printf("%-40s %14s %14s %14s %14s\n", "tools", "cold 1st line", "cold exit",
                  "warm pslist", "warm syscalldmp");
      for (const auto& a : attach)
        std::printf("%-40s %6.1f/%-7.1f %6.1f/%-7.1f %6.2f/%-7.2f %6.2f/%-7.2f\n",
                    a.tools_dir.substr(std::max<std::size_t>(a.tools_dir.size(), 40) - 40).c_str(),
                    a.cold_first_line_ms.median, a.cold_first_line_ms.p99, a.cold_exit_ms.median,
                    a.cold_exit_ms.p99, a.warm_pslist_ms.median, a.warm_pslist_ms.p99,
                    a.warm_syscalldmp_ms.median, a.warm_syscalldmp_ms.p99);
      std::printf("(cold: an empty profile cache; warm: the cache the cold run filled)\n");
      std::printf("cached profile load (binary, checked): %.1f us median, %.1f us p99\n",
                  profile_load_us.median, profile_load_us.p99);
    };
    const auto attach_json = [&] {
      ordered_json j = ordered_json::array();
      j.push_back({{"cached_profile_load_us", profile_load_us.median}});
      for (const auto& a : attach)
        j.push_back({{"tools_dir", a.tools_dir},
                     {"cold_first_line_ms", a.cold_first_line_ms.median},
                     {"cold_exit_ms", a.cold_exit_ms.median},
                     {"warm_pslist_ms", a.warm_pslist_ms.median},
                     {"warm_syscalldmp_ms", a.warm_syscalldmp_ms.median}});
      return j;
    };
    if (ctx.options.flag("--attach-only")) {
      ordered_json doc{{"tool", "imee-bench"},
                       {"machine", machine_label()},
                       {"tasks", tasks.size()},
                       {"runs", runs},
                       {"attach", attach_json()}};
      if (ctx.options.extra.contains("--json-file"))
        std::ofstream(ctx.options.extra["--json-file"]) << doc.dump(2) << '\n';
      if (ctx.options.json) {
        tools::print_json(doc);
        return;
      }
      std::printf("imee-bench on %s\nguest: %zu tasks\n", machine_label().c_str(), tasks.size());
      print_attach();
      return;
    }

    // Every backend this host has, side by side in one run: only such ratios mean anything.
    std::vector<BackendFigures> backends;
    const GuestRam& ram = session.target()->ram();
    SoftBackend soft(ram);
    backends.push_back(measure_backend(soft, session, tasks, runs));
    CachedTranslationBackend cached(ram);
    backends.push_back(measure_backend(cached, session, tasks, runs));
    if (KvmBackend::available()) {
      KvmBackend kvm(ram, session.agent_home());
      backends.push_back(measure_backend(kvm, session, tasks, runs));
      // A KVM without LA57 answers a 5-level guest by the software fallback: say so.
      if (kvm.stats().reread_no_la57 > 0) backends.back().name = "kvm(sw)";
    }
    // The ImEE of a patched kvm-intel or kvm-amd, on the target's own VM (needs --pid), batch and
    // poll mode.
    if (ctx.options.target.qemu_pid && KernelBackend::available()) {
      KernelBackend kernel(ram, session.agent_home(),
                           KernelVm{.qemu_pid = *ctx.options.target.qemu_pid});
      backends.push_back(measure_backend(kernel, session, tasks, runs));
      kernel.start_polling();
      backends.push_back(measure_backend(kernel, session, tasks, runs));
      backends.back().name = "kernel(poll)";
      kernel.stop_polling();
    }

    // End to end, as a user runs them: process start to exit, profile cached.
    std::vector<ToolFigures> tools;
    if (!ctx.options.profile_path.empty())
      args.insert(args.end(), {"--profile", ctx.options.profile_path});
    else if (!ctx.options.cache_dir.empty())
      args.insert(args.end(), {"--cache", ctx.options.cache_dir});
    if (!ctx.options.profile_path.empty() || !ctx.options.cache_dir.empty())
      for (const char* t : {"pidlist", "pslist", "credlist", "syscalldmp"})
        tools.push_back(measure_tool(dir + "/" + t, args, runs));
    // Zero configuration: the profile built from guest memory (BTF + kallsyms), and a cache hit.
    const auto ms = [](Stats s) {
      s.median /= 1e6;
      s.p99 /= 1e6;
      return s;
    };
    const Stats memory_ms = ms(repeat(std::min(runs, 3), [&] {
      return per_op(1, 1, [&](int) { (void)guest_profile(ram, ""); });
    }));
    Stats cache_ms{};
    if (!ctx.options.cache_dir.empty()) {
      (void)guest_profile(ram, ctx.options.cache_dir);  // fills the cache if it was empty
      cache_ms = ms(repeat(runs, [&] {
        return per_op(1, 1, [&](int) { (void)guest_profile(ram, ctx.options.cache_dir); });
      }));
    }
    // First run: the profile built from the kernel image and the symbol list.
    Stats profile_ms{};
    if (!ctx.options.kernel_path.empty() && !ctx.options.symbols_path.empty()) {
      profile_ms = repeat(std::min(runs, 3), [&] {
        return per_op(1, 1, [&](int) {
          (void)LinuxProfile::build(ctx.options.kernel_path, ctx.options.symbols_path);
        });
      });
      profile_ms.median /= 1e6;
      profile_ms.p99 /= 1e6;
    }

    const auto& k = session.kernel();
    ordered_json doc{{"tool", "imee-bench"},
                     {"machine", machine_label()},
                     {"paging_levels", static_cast<int>(k.space.mode)},
                     {"tasks", tasks.size()},
                     {"runs", runs}};
    for (const auto& b : backends) {
      ordered_json j{{"backend", b.name}};
      for (const auto& [size, s] : b.read_ns)
        j["read_ns"][std::to_string(size)] = {{"median", s.median}, {"p99", s.p99}};
      j["reads_per_second_8B"] = 1e9 / b.read_ns[1].second.median;
      j["batch_ns_per_field"] = b.batch_field_ns.median;
      j["task_walk_us"] = b.walk_us.median;
      j["task_list_walk_us"] = b.list_walk_us.median;
      j["pid_idr_walk_us"] = b.idr_walk_us.median;
      j["cross_view_us"] = b.cross_view_us.median;
      const BackendStats& c = b.counters;
      if (c.imee_reads + c.software_rereads > 0)
        j["who_answered"] = {{"imee_reads", c.imee_reads},
                             {"software_rereads", c.software_rereads},
                             {"reread_fault", c.reread_fault},
                             {"reread_accessed_bit", c.reread_accessed_bit},
                             {"reread_blind_spot", c.reread_blind_spot},
                             {"reread_no_la57", c.reread_no_la57},
                             {"reread_paging_feature", c.reread_paging_feature},
                             {"reread_agent_failed", c.reread_agent_failed},
                             {"vm_exits", c.vm_exits},
                             {"exits_ept_violation", c.exits_ept_violation}};
      doc["backends"].push_back(j);
    }
    for (const auto& t : tools)
      doc["tools"].push_back({{"tool", t.name},
                              {"wall_ms_median", t.wall_ms.median},
                              {"wall_ms_p99", t.wall_ms.p99},
                              {"max_rss_mb", t.max_rss_mb},
                              {"own_memory_mb", t.own_mb}});
    if (profile_ms.median > 0) doc["profile_build_ms"] = profile_ms.median;
    doc["profile_from_memory_ms"] = memory_ms.median;
    if (cache_ms.median > 0) doc["profile_cache_hit_ms"] = cache_ms.median;
    doc["attach"] = attach_json();
    if (ctx.options.extra.contains("--json-file"))
      std::ofstream(ctx.options.extra["--json-file"]) << doc.dump(2) << '\n';
    if (ctx.options.json) {
      tools::print_json(doc);
      return;
    }
    std::printf("imee-bench on %s\nguest: %d-level paging, %zu tasks; medians of %d runs\n\n",
                machine_label().c_str(), static_cast<int>(k.space.mode), tasks.size(), runs);
    std::printf("%-10s", "backend");
    for (const auto& [size, s] : backends[0].read_ns)
      std::printf(" %11s", (std::to_string(size) + "B med/p99").c_str());
    std::printf(" %10s %11s %10s\n", "reads/s 8B", "batch ns/f", "walk us");
    for (const auto& b : backends) {
      std::printf("%-10s", b.name.c_str());
      for (const auto& [size, s] : b.read_ns) std::printf(" %5.0f/%-5.0f", s.median, s.p99);
      std::printf(" %10.2fM %11.1f %10.1f\n", 1e3 / b.read_ns[1].second.median,
                  b.batch_field_ns.median, b.walk_us.median);
    }
    std::printf(
        "(soft+tlb caches translations like LibVMI/memflow: NOT consistent, shown for the cost "
        "ratio;\n"
        " kvm is an ImEE on this host's KVM: on a host without VT-x/AMD-V it runs emulated;\n"
        " kernel is the ImEE of the patched kvm-intel or kvm-amd, on the target's own VM)\n");
    for (const auto& b : backends) {
      const BackendStats& c = b.counters;
      if (c.imee_reads + c.software_rereads == 0) continue;
      std::printf("%-10s who answered: %s; %llu VM exits, %llu of them EPT violations\n",
                  b.name.c_str(), who_answered(c).c_str(),
                  static_cast<unsigned long long>(c.vm_exits),
                  static_cast<unsigned long long>(c.exits_ept_violation));
    }
    std::printf("\n%-10s %14s %14s %14s %14s\n", "views", "task list us", "pid IDR us",
                "task walk us", "cross-check us");
    for (const auto& b : backends)
      std::printf("%-10s %14.1f %14.1f %14.1f %14.1f\n", b.name.c_str(), b.list_walk_us.median,
                  b.idr_walk_us.median, b.walk_us.median, b.cross_view_us.median);
    std::printf(
        "(task list / pid IDR: the addresses of every task by each view; task walk: the list plus\n"
        " every task's fields and creds (pslist --no-cross-check); cross-check: both views and\n"
        " every task read, what pslist runs by default)\n");
    std::printf("consistency cost, 8-byte read: %.2fx; task walk: %.2fx\n",
                backends[0].read_ns[1].second.median / backends[1].read_ns[1].second.median,
                backends[0].walk_us.median / backends[1].walk_us.median);
    if (!tools.empty()) {
      std::printf("\n%-11s %12s %12s %12s %12s\n", "tool", "wall ms med", "wall ms p99",
                  "max RSS MB", "own MB");
      for (const auto& t : tools)
        std::printf("%-11s %12.2f %12.2f %12.1f %12.1f\n", t.name.c_str(), t.wall_ms.median,
                    t.wall_ms.p99, t.max_rss_mb, t.own_mb);
      std::printf("(max RSS counts the guest RAM the host kernel maps in; own MB excludes it)\n");
    }
    if (profile_ms.median > 0)
      std::printf("\nprofile build from --kernel and --symbols: %.0f ms\n", profile_ms.median);
    std::printf("profile build from guest memory (BTF + kallsyms): %.1f ms\n", memory_ms.median);
    if (cache_ms.median > 0)
      std::printf("profile from the cache (banner scan, load, BTF hash check): %.2f ms\n",
                  cache_ms.median);
    print_attach();
  });
}
