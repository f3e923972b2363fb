// credlist: the credentials every task points to, which tasks share one cred, and the signs of
// stolen or edited credentials.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/tool.hpp"
#include "imee/linux.hpp"

namespace {

using nlohmann::ordered_json;

struct Finding {
  std::string kind;  // shared_across_groups, init_cred, usage_below_refs, ids_changed_in_place
  std::uint64_t cred = 0;
  std::vector<std::int32_t> pids;
  std::string detail;
};

std::string ids(const imee::Credentials& c) {
  char b[128];
  std::snprintf(b, sizeof b, "uid %u/%u/%u/%u gid %u/%u/%u/%u", c.uid, c.euid, c.suid, c.fsuid,
                c.gid, c.egid, c.sgid, c.fsgid);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  const imee::tools::ToolInfo info{
      "credlist",
      "Lists every task's credentials (struct cred referenced by real_cred): address, all eight\n"
      "ids, capability sets, whether the task overrides them (cred != real_cred) and which tasks\n"
      "share the same struct cred. Tasks come from both the task list and the pid namespace\n"
      "(pidlist's view), threads included, so a task hidden from one is still judged.\n"
      "Findings (exit status 3):\n"
      "  shared_across_groups  one struct cred referenced (real_cred, or cred of a user task) by\n"
      "      tasks of different thread groups. The rule, from copy_creds() in kernel/cred.c of\n"
      "      6.1 and 6.12 alike: only clone(CLONE_THREAD) shares the parent's cred (threads of "
      "one\n"
      "      group); every other fork gets its own from prepare_creds(); commit_creds() installs\n"
      "      a new one. Kernel threads' temporary overrides (cred != real_cred) are not counted.\n"
      "  init_cred             a task other than pid 0 whose real_cred, or (for a user task)\n"
      "      cred, is init_cred: the kernel hands init_cred itself to no task but init_task (even\n"
      "      prepare_kernel_cred() copies it).\n"
      "  usage_below_refs      a cred whose usage count is below the references seen: each task\n"
      "      holds one per pointer (cred and real_cred, copy_creds/override_creds take them), so\n"
      "      fewer means pointers were set without references.\n"
      "  ids_changed_in_place  with --watch N: the ids or capabilities of a task's cred changed\n"
      "      between two of N samples while the task kept the same cred address. The kernel never\n"
      "      edits a committed cred (commit_creds replaces it): a rootkit writing ids does.",
      "Options:\n"
      "  --watch N          sample N times (the last sample is listed), --interval apart\n"
      "  --interval MS      milliseconds between samples (default 200)\n",
      {"--watch", "--interval"}};
  return imee::tools::run_tool(argc, argv, info, [](imee::tools::Context& ctx) {
    imee::LinuxSession& s = *ctx.session;
    int samples = 1, interval_ms = 200;
    try {
      if (ctx.options.extra.count("--watch")) samples = std::stoi(ctx.options.extra["--watch"]);
      if (ctx.options.extra.count("--interval"))
        interval_ms = std::stoi(ctx.options.extra["--interval"]);
    } catch (const std::exception&) {
      samples = 0;
    }
    if (samples < 1 || samples > 100000 || interval_ms < 0)
      throw imee::Exception("--watch needs a count of samples >= 1, --interval milliseconds >= 0");

    std::vector<Finding> findings;
    // task address -> (cred address, credentials) of the previous sample
    std::map<std::uint64_t, std::pair<std::uint64_t, imee::Credentials>> seen;
    std::set<std::uint64_t> reported_in_place;
    imee::TaskViews v;
    for (int sample = 0; sample < samples; ++sample) {
      if (sample > 0) std::this_thread::sleep_for(std::chrono::milliseconds(interval_ms));
      v = imee::cross_view(s, /*threads=*/true);
      for (const imee::Task& t : v.tasks) {
        auto it = seen.find(t.address);
        if (it != seen.end() && it->second.first == t.real_cred &&
            !(it->second.second == t.creds) && reported_in_place.insert(t.address).second)
          findings.push_back({"ids_changed_in_place",
                              t.real_cred,
                              {t.pid},
                              "pid " + std::to_string(t.pid) + " " + t.comm + ": " +
                                  ids(it->second.second) + " -> " + ids(t.creds) +
                                  ", cred stayed at the same address"});
        seen[t.address] = {t.real_cred, t.creds};
      }
    }
    const std::vector<imee::Task>& tasks = v.tasks;
    const std::uint64_t init_cred = s.symbol("init_cred");

    // Who references each cred, counting both pointers.
    std::map<std::uint64_t, std::vector<const imee::Task*>> sharers;  // by real_cred
    std::map<std::uint64_t, std::set<std::int32_t>> groups;           // tgids referencing
    std::map<std::uint64_t, std::vector<std::int32_t>> group_pids;
    std::map<std::uint64_t, std::int64_t> refs;
    for (const imee::Task& t : tasks) {
      sharers[t.real_cred].push_back(&t);
      refs[t.real_cred] += 1;
      refs[t.cred] += 1;
      auto add = [&](std::uint64_t c) {
        groups[c].insert(t.tgid);
        group_pids[c].push_back(t.pid);
      };
      add(t.real_cred);
      if (t.cred != t.real_cred && t.mm != 0) add(t.cred);
      if (t.pid != 0 && (t.real_cred == init_cred || (t.mm != 0 && t.cred == init_cred)))
        findings.push_back({"init_cred",
                            init_cred,
                            {t.pid},
                            "pid " + std::to_string(t.pid) + " " + t.comm + " uses init_cred (" +
                                (t.real_cred == init_cred ? "real_cred" : "") +
                                (t.real_cred == init_cred && t.cred == init_cred ? " and " : "") +
                                (t.cred == init_cred ? "cred" : "") + ")"});
    }
    for (const auto& [cred, tgids] : groups) {
      if (tgids.size() < 2) continue;
      std::string who;
      for (std::int32_t pid : group_pids[cred])
        who += (who.empty() ? "" : ",") + std::to_string(pid);
      findings.push_back(
          {"shared_across_groups", cred, group_pids[cred],
           std::to_string(tgids.size()) + " thread groups share one cred: pids " + who});
    }
    std::vector<std::uint64_t> creds;
    for (const auto& [cred, n] : refs) creds.push_back(cred);
    const std::vector<std::int64_t> usage = imee::cred_usages(s, creds);
    std::map<std::uint64_t, std::int64_t> usage_of;
    for (std::size_t i = 0; i < creds.size(); ++i) {
      usage_of[creds[i]] = usage[i];
      if (usage[i] < refs[creds[i]]) {
        std::vector<std::int32_t> pids;
        for (const imee::Task& t : tasks)
          if (t.real_cred == creds[i] || t.cred == creds[i]) pids.push_back(t.pid);
        findings.push_back({"usage_below_refs", creds[i], pids,
                            "usage " + std::to_string(usage[i]) + " but " +
                                std::to_string(refs[creds[i]]) + " task pointers reference it"});
      }
    }
    ctx.findings = findings.size();
    std::map<std::int32_t, std::vector<std::string>> flags_of;
    for (const Finding& f : findings)
      for (std::int32_t pid : f.pids) flags_of[pid].push_back(f.kind);

    if (ctx.options.json) {
      ordered_json doc{{"tool", "credlist"}, {"backend", s.backend().name()}};
      doc["samples"] = samples;
      doc["tasks"] = ordered_json::array();
      for (const auto& t : tasks) {
        const auto& c = t.creds;
        ordered_json shared = ordered_json::array();
        for (const imee::Task* o : sharers[t.real_cred])
          if (o->pid != t.pid) shared.push_back(o->pid);
        doc["tasks"].push_back({{"pid", t.pid},
                                {"tgid", t.tgid},
                                {"comm", t.comm},
                                {"cred", t.real_cred},
                                {"subjective_cred", t.cred},
                                {"overridden", t.cred != t.real_cred},
                                {"usage", usage_of[t.real_cred]},
                                {"uid", c.uid},
                                {"gid", c.gid},
                                {"suid", c.suid},
                                {"sgid", c.sgid},
                                {"euid", c.euid},
                                {"egid", c.egid},
                                {"fsuid", c.fsuid},
                                {"fsgid", c.fsgid},
                                {"cap_inheritable", c.cap_inheritable},
                                {"cap_permitted", c.cap_permitted},
                                {"cap_effective", c.cap_effective},
                                {"cap_bset", c.cap_bset},
                                {"cap_ambient", c.cap_ambient},
                                {"shared_with", shared},
                                {"flags", flags_of[t.pid]}});
      }
      doc["findings"] = ordered_json::array();
      for (const Finding& f : findings)
        doc["findings"].push_back(
            {{"kind", f.kind}, {"cred", f.cred}, {"pids", f.pids}, {"detail", f.detail}});
      imee::tools::print_json(doc);
      return;
    }
    std::printf("%7s %-16s %-18s %-23s %-23s %-16s %-16s %-16s %s\n", "PID", "COMM", "CRED",
                "UID r/e/s/fs", "GID r/e/s/fs", "CAPPRM", "CAPEFF", "CAPBND", "SHARED FLAGS");
    for (const auto& t : tasks) {
      const auto& c = t.creds;
      char uids[64], gids[64];
      std::snprintf(uids, sizeof uids, "%u/%u/%u/%u", c.uid, c.euid, c.suid, c.fsuid);
      std::snprintf(gids, sizeof gids, "%u/%u/%u/%u", c.gid, c.egid, c.sgid, c.fsgid);
      std::string flags;
      for (const std::string& f : flags_of[t.pid]) flags += (flags.empty() ? "" : ",") + f;
      std::printf("%7d %-16s 0x%016llx%s %-23s %-23s %016llx %016llx %016llx %zu %s\n", t.pid,
                  t.comm.c_str(), static_cast<unsigned long long>(t.real_cred),
                  t.cred != t.real_cred ? "*" : " ", uids, gids,
                  static_cast<unsigned long long>(c.cap_permitted),
                  static_cast<unsigned long long>(c.cap_effective),
                  static_cast<unsigned long long>(c.cap_bset), sharers[t.real_cred].size(),
                  flags.c_str());
    }
    std::printf("%zu findings%s\n", findings.size(), findings.empty() ? "" : ":");
    for (const Finding& f : findings)
      std::printf("  %s: cred 0x%llx: %s\n", f.kind.c_str(),
                  static_cast<unsigned long long>(f.cred), f.detail.c_str());
  });
}
