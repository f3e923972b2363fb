// credlist: the credentials every task points to, and which tasks share one cred.
#include <cstdio>
#include <map>
#include <vector>

#include "common/tool.hpp"
#include "imee/linux.hpp"

int main(int argc, char** argv) {
  const imee::tools::ToolInfo info{
      "credlist",
      "Lists every task's credentials (struct cred referenced by real_cred): address, all eight "
      "ids, capability sets, whether the task overrides them (cred != real_cred) and which tasks "
      "share the same struct cred.",
      ""};
  return imee::tools::run_tool(argc, argv, info, [](imee::tools::Context& ctx) {
    const auto tasks = imee::read_tasks(*ctx.session);
    std::map<std::uint64_t, std::vector<std::int32_t>> sharers;
    for (const auto& t : tasks) sharers[t.real_cred].push_back(t.pid);

    if (ctx.options.json) {
      nlohmann::ordered_json doc{{"tool", "credlist"}, {"backend", ctx.session->backend().name()}};
      doc["tasks"] = nlohmann::ordered_json::array();
      for (const auto& t : tasks) {
        const auto& c = t.creds;
        nlohmann::ordered_json shared = nlohmann::ordered_json::array();
        for (auto pid : sharers[t.real_cred])
          if (pid != t.pid) shared.push_back(pid);
        doc["tasks"].push_back({{"pid", t.pid},
                                {"comm", t.comm},
                                {"cred", t.real_cred},
                                {"overridden", t.cred != t.real_cred},
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
                                {"shared_with", shared}});
      }
      imee::tools::print_json(doc);
      return;
    }
    std::printf("%7s %-16s %-18s %-23s %-23s %-16s %-16s %-16s %s\n", "PID", "COMM", "CRED",
                "UID r/e/s/fs", "GID r/e/s/fs", "CAPPRM", "CAPEFF", "CAPBND", "SHARED");
    for (const auto& t : tasks) {
      const auto& c = t.creds;
      char uids[64], gids[64];
      std::snprintf(uids, sizeof uids, "%u/%u/%u/%u", c.uid, c.euid, c.suid, c.fsuid);
      std::snprintf(gids, sizeof gids, "%u/%u/%u/%u", c.gid, c.egid, c.sgid, c.fsgid);
      std::printf("%7d %-16s 0x%016llx%s %-23s %-23s %016llx %016llx %016llx %zu\n", t.pid,
                  t.comm.c_str(), static_cast<unsigned long long>(t.real_cred),
                  t.cred != t.real_cred ? "*" : " ", uids, gids,
                  static_cast<unsigned long long>(c.cap_permitted),
                  static_cast<unsigned long long>(c.cap_effective),
                  static_cast<unsigned long long>(c.cap_bset), sharers[t.real_cred].size());
    }
  });
}
