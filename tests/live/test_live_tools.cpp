// The four tools, run live against the booted lab guests (Debian 12's 6.1 with 4- and 5-level
// paging, its 6.12 with 4-level paging, KASLR on), compared field by field with what each guest
// says about itself.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>

#include "lab_guest.hpp"

namespace imee::test {
namespace {

using nlohmann::json;

bool is_kernel_thread(const TruthTask& t) {
  return t.pid == 2 || t.ppid == 2;
}

// Two snapshots show the same tasks. A kernel thread's /proc name may change between them (a
// kworker's name carries the workqueue it last ran), its comm does not: ignore those names.
bool same_tasks(const std::map<int, TruthTask>& a, const std::map<int, TruthTask>& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [pid, t] : a) {
    auto it = b.find(pid);
    if (it == b.end()) return false;
    TruthTask u = it->second;
    if (is_kernel_thread(t)) u.name = t.name;
    if (!(u == t)) return false;
  }
  return true;
}

class LiveTools : public ::testing::TestWithParam<LabGuest> {
 protected:
  LabGuest guest() const { return GetParam(); }

  // Runs `tool` between two truth snapshots; retries while the guest's task set moves, so the
  // comparison is against the state the tool actually saw.
  std::pair<std::map<int, TruthTask>, json> stable_run(const std::string& tool) {
    const LabGuest g = guest();
    for (int attempt = 0; attempt < 4; ++attempt) {
      auto before = g.tasks();
      RunResult r = g.tool(tool);
      auto after = g.tasks();
      EXPECT_EQ(r.status, 0) << r.err;
      if (r.status != 0) return {};
      if (same_tasks(before, after) && !before.empty()) return {before, json::parse(r.out)};
    }
    ADD_FAILURE() << "the guest's task set did not hold still for four attempts";
    return {};
  }
};

// /proc shows a kernel thread's full name (kthread full_name, or "kworker/0:1-events" with its
// workqueue), task->comm holds the first 15 bytes. User processes must match exactly.
bool same_name(const std::string& comm, const TruthTask& t, bool kernel_thread) {
  if (comm == t.name) return true;
  if (!kernel_thread || !t.name.starts_with(comm)) return false;
  return comm.size() == 15 || t.name[comm.size()] == '-' || t.name[comm.size()] == '+';
}

TEST_P(LiveTools, PslistMatchesTheGuestsOwnView) {
  auto [truth, doc] = stable_run("pslist");
  if (truth.empty()) return;
  EXPECT_EQ(doc["backend"], LabGuest::backend());
  std::set<int> seen;
  for (const auto& t : doc["tasks"]) {
    const int pid = t["pid"];
    if (pid == 0) {
      EXPECT_EQ(t["comm"], "swapper/0");  // init_task: on the list, absent from /proc
      continue;
    }
    seen.insert(pid);
    auto it = truth.find(pid);
    ASSERT_NE(it, truth.end()) << "pslist shows pid " << pid << " that the guest does not";
    const TruthTask& g = it->second;
    EXPECT_EQ(t["ppid"], g.ppid) << "pid " << pid;
    EXPECT_EQ(t["uid"], g.uid) << "pid " << pid;
    EXPECT_EQ(t["gid"], g.gid) << "pid " << pid;
    EXPECT_TRUE(same_name(t["comm"], g, is_kernel_thread(g)))
        << "pid " << pid << ": " << t["comm"] << " vs " << g.name;
  }
  for (const auto& [pid, g] : truth)
    EXPECT_TRUE(seen.count(pid)) << "pslist misses pid " << pid << " " << g.name;
  EXPECT_GE(truth.size(), 40u) << "the lab workload should be running";
}

TEST_P(LiveTools, PidlistMatchesTheGuestsOwnView) {
  auto [truth, doc] = stable_run("pidlist");
  if (truth.empty()) return;
  std::set<int> pids;
  for (const auto& p : doc["pids"]) pids.insert(p.get<int>());
  std::set<int> expected{0};
  for (const auto& [pid, g] : truth) expected.insert(pid);
  EXPECT_EQ(pids, expected);
  EXPECT_EQ(pids.size(), doc["pids"].size()) << "a pid listed twice";
}

TEST_P(LiveTools, CredlistMatchesEveryCredIdAndCapability) {
  auto [truth, doc] = stable_run("credlist");
  if (truth.empty()) return;
  std::map<std::uint64_t, std::vector<const json*>> by_cred;
  std::size_t compared = 0, distinct_ids = 0;
  for (const auto& t : doc["tasks"]) {
    const int pid = t["pid"];
    by_cred[t["cred"].get<std::uint64_t>()].push_back(&t);
    if (pid == 0) continue;
    auto it = truth.find(pid);
    ASSERT_NE(it, truth.end()) << "credlist shows pid " << pid << " that the guest does not";
    const TruthTask& g = it->second;
    EXPECT_EQ(t["uid"], g.uid) << pid;
    EXPECT_EQ(t["euid"], g.euid) << pid;
    EXPECT_EQ(t["suid"], g.suid) << pid;
    EXPECT_EQ(t["fsuid"], g.fsuid) << pid;
    EXPECT_EQ(t["gid"], g.gid) << pid;
    EXPECT_EQ(t["egid"], g.egid) << pid;
    EXPECT_EQ(t["sgid"], g.sgid) << pid;
    EXPECT_EQ(t["fsgid"], g.fsgid) << pid;
    EXPECT_EQ(t["cap_inheritable"], g.cap_inh) << pid;
    EXPECT_EQ(t["cap_permitted"], g.cap_prm) << pid;
    EXPECT_EQ(t["cap_effective"], g.cap_eff) << pid;
    EXPECT_EQ(t["cap_bset"], g.cap_bnd) << pid;
    EXPECT_EQ(t["cap_ambient"], g.cap_amb) << pid;
    distinct_ids += g.uid != g.euid || g.uid != g.suid || g.uid != g.fsuid || g.gid != g.egid;
    ++compared;
  }
  EXPECT_EQ(compared, truth.size());
  EXPECT_GT(distinct_ids, 0u)
      << "the workload should have tasks whose real/effective/saved/fs ids differ";
  // Tasks that share one struct cred must show identical credentials, and each lists the others.
  for (const auto& [cred, tasks] : by_cred) {
    for (const json* t : tasks) {
      EXPECT_EQ((*t)["uid"], (*tasks[0])["uid"]);
      EXPECT_EQ((*t)["cap_effective"], (*tasks[0])["cap_effective"]);
      EXPECT_EQ((*t)["shared_with"].size(), tasks.size() - 1);
    }
  }
}

TEST_P(LiveTools, SyscalldmpMatchesTheGuestsTableAndKallsyms) {
  const LabGuest g = guest();
  // The guest's own view of sys_call_table, read from its /proc/kcore.
  std::istringstream in(g.query("syscalls"));
  std::string word;
  std::size_t count = 0;
  in >> word >> count;
  ASSERT_EQ(word, "count");
  std::vector<std::uint64_t> table(count);
  for (std::size_t i = 0; i < count; ++i) {
    std::size_t index;
    std::string addr;
    in >> index >> addr;
    ASSERT_EQ(index, i);
    table[i] = std::stoull(addr, nullptr, 16);
  }
  while (!table.empty() && table.back() == 0) table.pop_back();
  ASSERT_GE(table.size(), 400u);

  // kallsyms of this boot: address -> names.
  std::multimap<std::uint64_t, std::string> kallsyms;
  bool has_x64_sys_call = false;
  std::ifstream ks(g.kallsyms());
  std::string line;
  while (std::getline(ks, line)) {
    std::istringstream f(line);
    std::string a, type, name;
    f >> a >> type >> name;
    kallsyms.emplace(std::stoull(a, nullptr, 16), name);
    has_x64_sys_call |= name == "x64_sys_call";
  }

  RunResult r = g.tool("syscalldmp");
  ASSERT_EQ(r.status, 0) << r.err;
  const json doc = json::parse(r.out);
  ASSERT_EQ(doc["entries"].size(), table.size());
  EXPECT_EQ(doc["outside_kernel_text"], 0);
  for (std::size_t i = 0; i < table.size(); ++i) {
    const json& e = doc["entries"][i];
    EXPECT_EQ(e["nr"], i);
    EXPECT_EQ(e["address"], table[i]) << "entry " << i;
    EXPECT_TRUE(e["in_kernel_text"].get<bool>()) << "entry " << i;
    EXPECT_EQ(e["offset"], 0) << "entry " << i;
    auto [lo, hi] = kallsyms.equal_range(table[i]);
    bool named = false;
    for (auto it = lo; it != hi; ++it) named |= it->second == e["symbol"];
    EXPECT_TRUE(named) << "entry " << i << " resolved to " << e["symbol"]
                       << ", not a kallsyms name at that address";
  }
  EXPECT_EQ(doc["entries"][0]["symbol"], "__x64_sys_read");

  // Whether the kernel dispatches through the table. The oracle is the guest's own
  // /proc/kallsyms (fetched over its channel): x64_sys_call exists exactly on kernels with the
  // 2024 branch-history fix, which dispatch through that switch. syscalldmp must agree, and must
  // have decided it from do_syscall_64's code in guest memory, not from the symbol list alone.
  const json& dispatch = doc["dispatch"];
  EXPECT_EQ(dispatch["through_sys_call_table"], !has_x64_sys_call) << dispatch.dump();
  EXPECT_EQ(dispatch["confirmed_from_code"], true) << dispatch.dump();
  EXPECT_EQ(dispatch["via"], has_x64_sys_call ? "x64_sys_call() switch" : "sys_call_table");
  EXPECT_NE(dispatch["evidence"].get<std::string>().find(
                has_x64_sys_call ? "calls x64_sys_call" : "references sys_call_table"),
            std::string::npos)
      << dispatch.dump();
  // Both lab kernels have the fix (6.12 natively, Debian's 6.1.192 backported): every lab guest
  // must show the case that matters.
  EXPECT_TRUE(has_x64_sys_call) << "the lab kernel was expected to have x64_sys_call";
}

TEST_P(LiveTools, SyscalldmpTextSaysWhetherTheTableDispatches) {
  const LabGuest g = guest();
  std::ifstream ks(g.kallsyms());
  bool has_x64_sys_call = false;
  for (std::string a, type, name; ks >> a >> type && std::getline(ks >> std::ws, name);)
    has_x64_sys_call |= name == "x64_sys_call";
  RunResult text = g.tool("syscalldmp", "");
  ASSERT_EQ(text.status, 0) << text.err;
  const std::string expected =
      has_x64_sys_call ? "\ndispatch: x64_sys_call() switch; this table is NOT used to dispatch "
                         "system calls on this kernel (tampering with it is still reported)\n"
                       : "\ndispatch: through sys_call_table;";
  EXPECT_NE(text.out.find(expected), std::string::npos)
      << text.out.substr(text.out.size() - std::min<std::size_t>(text.out.size(), 600));
  EXPECT_NE(text.out.find("\ndispatch evidence: do_syscall_64 ("), std::string::npos);
}

TEST_P(LiveTools, TextOutputListsTheSameTasks) {
  const LabGuest g = guest();
  RunResult text = g.tool("pslist", "");
  ASSERT_EQ(text.status, 0) << text.err;
  EXPECT_NE(text.out.find("PID"), std::string::npos);
  EXPECT_NE(text.out.find(" init"), std::string::npos) << text.out;
}

INSTANTIATE_TEST_SUITE_P(Guests, LiveTools, ::testing::ValuesIn(LabGuest::all()),
                         [](const auto& info) { return info.param.test_name(); });

}  // namespace
}  // namespace imee::test
