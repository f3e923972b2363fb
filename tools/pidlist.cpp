// pidlist: every task's pid, from the guest's task list.
#include <cstdio>

#include "common/tool.hpp"
#include "imee/linux.hpp"

int main(int argc, char** argv) {
  const imee::tools::ToolInfo info{"pidlist", "Lists the pid of every task in a Linux guest.", ""};
  return imee::tools::run_tool(argc, argv, info, [](imee::tools::Context& ctx) {
    const auto tasks = imee::read_tasks(*ctx.session);
    if (ctx.options.json) {
      nlohmann::ordered_json doc{{"tool", "pidlist"}, {"backend", ctx.session->backend().name()}};
      doc["pids"] = nlohmann::ordered_json::array();
      for (const auto& t : tasks) doc["pids"].push_back(t.pid);
      imee::tools::print_json(doc);
      return;
    }
    for (const auto& t : tasks) std::printf("%d\n", t.pid);
  });
}
