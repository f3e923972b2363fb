// pslist: pid, parent, ids and name of every task, from the guest's task list.
#include <cstdio>

#include "common/tool.hpp"
#include "imee/linux.hpp"

int main(int argc, char** argv) {
  const imee::tools::ToolInfo info{
      "pslist", "Lists every task of a Linux guest: pid, ppid, uid, gid and name (comm).", ""};
  return imee::tools::run_tool(argc, argv, info, [](imee::tools::Context& ctx) {
    const auto tasks = imee::read_tasks(*ctx.session);
    if (ctx.options.json) {
      nlohmann::ordered_json doc{{"tool", "pslist"}, {"backend", ctx.session->backend().name()}};
      doc["tasks"] = nlohmann::ordered_json::array();
      for (const auto& t : tasks)
        doc["tasks"].push_back({{"pid", t.pid},
                                {"ppid", t.ppid},
                                {"uid", t.creds.uid},
                                {"gid", t.creds.gid},
                                {"comm", t.comm},
                                {"task", t.address}});
      imee::tools::print_json(doc);
      return;
    }
    std::printf("%7s %7s %6s %6s  %-16s %s\n", "PID", "PPID", "UID", "GID", "COMM", "TASK");
    for (const auto& t : tasks)
      std::printf("%7d %7d %6u %6u  %-16s 0x%016llx\n", t.pid, t.ppid, t.creds.uid, t.creds.gid,
                  t.comm.c_str(), static_cast<unsigned long long>(t.address));
  });
}
