// The four tools as detectors, against the lab rootkit (tests/lab/rootkit/imee_rk.c) in the live
// lab guests: the clean guest gives no finding; with the rootkit loaded, every attack is reported
// exactly as the module's own report (over the guest's channel) says it was done; after the
// module's cleanup, no finding again. Each guest is run through the software walk and through
// the ImEE backend (kvm here, kernel in the VT-x lab).
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <future>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "../support/imee_required.hpp"
#include "lab_guest.hpp"

namespace imee::test {
namespace {

using nlohmann::json;

constexpr int tools_findings = 3;  // the tools' exit status when they report findings

// The module's own report ("key value..." lines, see tests/lab/README.md), as the guest answers
// `rk load` / `rk report`: every line by its first word, then "name value" pairs.
struct RootkitReport {
  std::map<std::string, std::map<std::string, std::string>> lines;
  std::map<std::string, int> victims;  // role -> pid
  int kill_probe_errno = -1;

  static RootkitReport parse(const std::string& text) {
    RootkitReport r;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
      std::istringstream f(line);
      std::string key;
      f >> key;
      if (key == "victim") {
        std::string role;
        int pid = 0;
        f >> role >> pid;
        r.victims[role] = pid;
        continue;
      }
      if (key == "kill_probe") {
        int pid = 0;
        f >> pid >> r.kill_probe_errno;
        continue;
      }
      for (std::string name, value; f >> name >> value;) r.lines[key][name] = value;
    }
    return r;
  }
  bool has(const std::string& key) const { return lines.count(key) != 0; }
  std::string str(const std::string& key, const std::string& name) const {
    auto l = lines.find(key);
    if (l == lines.end() || !l->second.count(name)) {
      ADD_FAILURE() << "the rootkit's report has no '" << key << " ... " << name << "'";
      return "0";
    }
    return l->second.at(name);
  }
  std::uint64_t num(const std::string& key, const std::string& name) const {
    return std::stoull(str(key, name), nullptr, 0);
  }
};

struct Param {
  LabGuest guest;
  std::string backend;
  friend void PrintTo(const Param& p, std::ostream* os) {
    *os << p.guest.dir << " (" << p.guest.levels << "-level), " << p.backend << " backend";
  }
};

std::vector<Param> params() {
  std::vector<Param> out;
  std::vector<std::string> backends{LabGuest::backend()};
  if (LabGuest::imee_backend() != LabGuest::backend()) backends.push_back(LabGuest::imee_backend());
  for (const LabGuest& g : LabGuest::all())
    for (const std::string& b : backends) out.push_back({g, b});
  return out;
}

class LiveRootkit : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    if (GetParam().backend != "soft") IMEE_NEED_BACKEND(GetParam().backend);
    guest().query("rk unload");  // a clean start even if an earlier run died with it loaded
  }
  void TearDown() override { guest().query("rk unload"); }

  LabGuest guest() const { return GetParam().guest; }
  RunResult tool(const std::string& name, const std::string& extra = "") const {
    return guest().tool(name, "--json --backend " + GetParam().backend + " " + extra);
  }
  json doc(const RunResult& r, int expected_status, const std::string& what) const {
    EXPECT_EQ(r.status, expected_status) << what << ": " << r.err;
    try {
      return json::parse(r.out);
    } catch (const json::exception& e) {
      ADD_FAILURE() << what << ": no JSON (" << e.what() << "): " << r.err;
      return json::object();
    }
  }

  // All four tools on the guest as it is: no finding of any kind.
  void expect_clean(const std::string& when) {
    const json pids = doc(tool("pidlist"), 0, "pidlist " + when);
    EXPECT_EQ(pids["findings"], 0) << when << ": " << pids["cross_view"].dump();
    EXPECT_EQ(pids["cross_view"]["hidden_from_task_list"].size(), 0u) << when;
    for (const char* extra : {"", "--threads"}) {
      const json ps = doc(tool("pslist", extra), 0, std::string("pslist ") + extra + " " + when);
      EXPECT_EQ(ps["findings"], 0) << when << ": " << ps["cross_view"].dump();
    }
    const json sc = doc(tool("syscalldmp"), 0, "syscalldmp " + when);
    EXPECT_EQ(sc["findings"], 0) << when;
    EXPECT_EQ(sc["image_handlers_known"], true) << "the profile should hold the image's table";
    for (const json& e : sc["entries"]) EXPECT_EQ(e["flags"], "") << when << ": entry " << e.dump();
    const json cr = doc(tool("credlist"), 0, "credlist " + when);
    EXPECT_EQ(cr["findings"].size(), 0u) << when << ": " << cr["findings"].dump();
  }
};

TEST_P(LiveRootkit, CleanGuestGivesNoFindings) {
  expect_clean("on the clean guest");
}

TEST_P(LiveRootkit, EveryAttackIsReportedExactlyAndNothingAfterCleanup) {
  const LabGuest g = guest();
  expect_clean("before the rootkit");

  const RootkitReport rk =
      RootkitReport::parse(g.query("rk load hide sct ftrace kprobe steal write"));
  ASSERT_TRUE(rk.has("module") && rk.has("hidden") && rk.has("sct_module") && rk.has("sct_text") &&
              rk.has("ftrace") && rk.has("kprobe") && rk.has("cred_steal") && rk.has("cred_write"))
      << "the rootkit did not report every attack (did it load?)";
  const int hidden = static_cast<int>(rk.num("hidden", "pid"));
  EXPECT_EQ(hidden, rk.victims.at("rk-hidden"));
  // The guest's own proof that the ftrace hook runs: kill(hidden, 0) fails with ESRCH.
  EXPECT_EQ(rk.kill_probe_errno, ESRCH) << "the ftrace hook on __x64_sys_kill is not effective";
  // The hidden process keeps running: /proc (which walks the pid namespace) still shows it.
  EXPECT_TRUE(g.tasks().count(hidden)) << "the hidden process should still run";

  // (a) the unlinked task, by the cross-view, in pidlist and in pslist (leaders and threads).
  const json pids = doc(tool("pidlist"), tools_findings, "pidlist");
  EXPECT_EQ(pids["cross_view"]["hidden_from_task_list"], json::array({hidden}));
  EXPECT_EQ(pids["cross_view"]["hidden_from_pid_ns"], json::array());
  bool found = false;
  for (const json& t : pids["tasks"]) {
    if (t["pid"] == 0) {  // the idle task: on the task list (its head), never in the IDR
      EXPECT_EQ(t["in_pid_ns"], false);
      continue;
    }
    if (t["pid"] != hidden) {
      EXPECT_EQ(t["in_task_list"], t["in_pid_ns"]) << t.dump();
      continue;
    }
    found = true;
    EXPECT_EQ(t["task"], rk.num("hidden", "task"));
    EXPECT_EQ(t["in_pid_ns"], true);
    EXPECT_EQ(t["in_task_list"], false);
    EXPECT_EQ(t["comm"], "rk-hidden");
  }
  EXPECT_TRUE(found) << "pidlist does not list the hidden pid " << hidden;
  for (const char* extra : {"", "--threads"}) {
    const json ps = doc(tool("pslist", extra), tools_findings, std::string("pslist ") + extra);
    EXPECT_EQ(ps["cross_view"]["hidden_from_task_list"], json::array({hidden})) << extra;
    EXPECT_EQ(ps["findings"], 1) << extra;
  }

  // (b) the two table entries and the ftrace hook, with the module's name.
  const json sc = doc(tool("syscalldmp"), tools_findings, "syscalldmp");
  const std::uint64_t mod_nr = rk.num("sct_module", "nr"), text_nr = rk.num("sct_text", "nr");
  const std::uint64_t kill_nr = 62;      // __x64_sys_kill on x86-64
  const std::uint64_t getppid_nr = 110;  // __x64_sys_getppid, the kprobe's
  std::set<std::uint64_t> flagged;
  for (const json& e : sc["entries"])
    if (e["flags"] != "") flagged.insert(e["nr"].get<std::uint64_t>());
  EXPECT_EQ(flagged, (std::set<std::uint64_t>{kill_nr, getppid_nr, mod_nr, text_nr}))
      << sc["findings"];
  EXPECT_EQ(sc["findings"], 4);
  const json& m = sc["entries"][mod_nr];
  EXPECT_EQ(m["flags"], "HOOKED");
  EXPECT_EQ(m["address"], rk.num("sct_module", "new"));
  EXPECT_EQ(m["owner"]["kind"], "module");
  EXPECT_EQ(m["owner"]["module"], "imee_rk");
  EXPECT_EQ(m["owner"]["symbol"], rk.str("sct_module", "symbol"));
  EXPECT_EQ(m["image_handler"], rk.num("sct_module", "old"));
  const json& t = sc["entries"][text_nr];
  EXPECT_EQ(t["flags"], "TAMPERED");
  EXPECT_EQ(t["address"], rk.num("sct_text", "new"));
  EXPECT_EQ(t["owner"]["kind"], "kernel_text");
  EXPECT_EQ(t["symbol"], rk.str("sct_text", "symbol"));
  EXPECT_EQ(t["image_handler"], rk.num("sct_text", "old"));
  const json& k = sc["entries"][kill_nr];
  EXPECT_EQ(k["flags"], "TRACED") << k.dump();
  EXPECT_EQ(k["handler_entry"]["function"], rk.num("ftrace", "addr"));
  EXPECT_EQ(k["handler_entry"]["state"], "traced");
  ASSERT_EQ(k["handler_entry"]["hooks"].size(), 1u) << k.dump();
  const json& hook = k["handler_entry"]["hooks"][0];
  EXPECT_EQ(hook["ftrace_ops"], rk.num("ftrace", "ops"));
  EXPECT_EQ(hook["owner"]["module"], "imee_rk");
  EXPECT_EQ(hook["ipmodify"], true);
  // The kprobe: its site runs through kprobes' own ftrace_ops (core kernel code); the probe in
  // kprobe_table names the module.
  const json& p = sc["entries"][getppid_nr];
  EXPECT_EQ(p["flags"], "TRACED") << p.dump();
  int probes = 0;
  for (const json& h : p["handler_entry"]["hooks"]) {
    if (!h.contains("kprobe")) continue;
    ++probes;
    EXPECT_EQ(h["kprobe"], rk.num("kprobe", "kprobe"));
    EXPECT_EQ(h["addr"], rk.num("kprobe", "addr"));  // the function, or past its endbr64
    EXPECT_EQ(h["pre_handler"], rk.num("kprobe", "handler"));
    EXPECT_EQ(h["owner"]["module"], "imee_rk");
    EXPECT_EQ(h["owner"]["symbol"], "rk_kprobe_pre");
  }
  EXPECT_EQ(probes, 1) << p.dump();
  bool listed = false;
  for (const json& mod : sc["modules"]) listed |= mod["name"] == "imee_rk";
  EXPECT_TRUE(listed) << "the module list should show imee_rk";

  // (c) the stolen cred: init_cred used by a task other than pid 0, shared with init_task's group.
  const int steal = static_cast<int>(rk.num("cred_steal", "pid"));
  const std::uint64_t init_cred = rk.num("cred_steal", "new_cred");
  const auto t0 = std::chrono::steady_clock::now();
  json cr = doc(tool("credlist"), tools_findings, "credlist");
  // One whole run (start, session, one sample): the watch below is paced by it, so its first
  // sample is surely taken before the ids are written, on a fast host or in the VT-x lab alike.
  const auto one_run =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  std::set<std::string> kinds;
  for (const json& f : cr["findings"]) {
    kinds.insert(f["kind"]);
    EXPECT_EQ(f["cred"], init_cred) << f.dump();
    if (f["kind"] == "init_cred") {
      EXPECT_EQ(f["pids"], json::array({steal}));
    }
    if (f["kind"] == "shared_across_groups") {
      EXPECT_EQ(f["pids"], json::array({0, steal}));
    }
  }
  EXPECT_EQ(kinds, (std::set<std::string>{"init_cred", "shared_across_groups"}))
      << cr["findings"].dump();
  EXPECT_EQ(cr["findings"].size(), 2u) << cr["findings"].dump();

  // (c) ids written into the task's own cred while credlist watches: changed in place.
  const int write = static_cast<int>(rk.num("cred_write", "pid"));
  const long interval = std::max<long>(200, one_run.count() / 2);
  auto watch = std::async(std::launch::async, [&] {
    return tool("credlist", "--watch 30 --interval " + std::to_string(interval));
  });
  std::this_thread::sleep_for(2 * one_run + std::chrono::milliseconds(4 * interval));
  const RootkitReport after_write = RootkitReport::parse(g.query("rk write"));
  EXPECT_EQ(after_write.num("cred_write", "written"), 1u);
  cr = doc(watch.get(), tools_findings, "credlist --watch");
  int in_place = 0;
  for (const json& f : cr["findings"]) {
    if (f["kind"] != "ids_changed_in_place") continue;
    ++in_place;
    EXPECT_EQ(f["pids"], json::array({write}));
    EXPECT_EQ(f["cred"], rk.num("cred_write", "cred"));
  }
  EXPECT_EQ(in_place, 1) << "credlist --watch should see rk-write's ids change in place "
                            "(did its first sample come after the write?): "
                         << cr["findings"].dump();
  for (const json& task : cr["tasks"])
    if (task["pid"] == write) {
      EXPECT_EQ(task["euid"], 0) << "the written ids: " << task.dump();
    }

  // Cleanup: the module restores everything; the tools find nothing again.
  EXPECT_EQ(g.query("rk unload"), "unloaded\n");
  expect_clean("after the rootkit's cleanup");
}

INSTANTIATE_TEST_SUITE_P(Guests, LiveRootkit, ::testing::ValuesIn(params()), [](const auto& info) {
  std::string b = info.param.backend;
  b.erase(std::remove_if(b.begin(), b.end(), [](char c) { return !std::isalnum(c); }), b.end());
  return info.param.guest.test_name() + "_" + b;
});

}  // namespace
}  // namespace imee::test
