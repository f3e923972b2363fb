// pslist: pid, parent, ids and name of every task, from the guest's task list, cross-checked
// against the pid namespace (psxview): tasks unlinked from the list are shown and marked.
#include <cstdio>

#include "common/tool.hpp"
#include "common/views.hpp"
#include "imee/linux.hpp"

int main(int argc, char** argv) {
  const imee::tools::ToolInfo info{
      "pslist",
      "Lists every task of a Linux guest from its task list (init_task.tasks): pid, ppid, uid,\n"
      "gid and name (comm). With --threads, every thread of each group too (its thread list).\n"
      "By default it also runs the cross-check with the pid namespace (init_pid_ns's IDR, what\n"
      "pidlist walks): a task in the IDR but not on the list is listed too, marked HIDDEN (a\n"
      "DKOM rootkit unlinks a task from the list; it keeps running and keeps its pid); one on\n"
      "the list but not in the IDR is marked NO-PID. A last line says how many each view misses.\n"
      "Each mark is a finding (exit status 3). --no-cross-check walks the task list alone.",
      "Options:\n"
      "  --threads          list threads too (and cross-check threads, not only leaders)\n"
      "  --no-cross-check   the task list only, no IDR walk, no marks\n",
      {},
      {"--threads", "--no-cross-check"}};
  return imee::tools::run_tool(argc, argv, info, [](imee::tools::Context& ctx) {
    const bool threads = ctx.options.flag("--threads");
    imee::TaskViews v;
    if (ctx.options.flag("--no-cross-check")) {
      std::vector<std::uint64_t> addresses = imee::task_addresses(*ctx.session);
      if (threads) addresses = imee::thread_addresses(*ctx.session, addresses);
      v.threads = threads;
      v.tasks = imee::read_tasks(*ctx.session, addresses);
      v.in_task_list.assign(v.tasks.size(), true);
      v.in_pid_ns.assign(v.tasks.size(), true);  // not looked at: nothing marked
    } else {
      v = imee::cross_view(*ctx.session, threads);
      ctx.findings = v.hidden_from_task_list + v.hidden_from_pid_ns;
    }
    const bool checked = !ctx.options.flag("--no-cross-check");
    if (ctx.options.json) {
      nlohmann::ordered_json doc{{"tool", "pslist"}, {"backend", ctx.session->backend().name()}};
      doc["tasks"] = nlohmann::ordered_json::array();
      for (std::size_t i = 0; i < v.tasks.size(); ++i) {
        const imee::Task& t = v.tasks[i];
        nlohmann::ordered_json j{{"pid", t.pid},       {"tgid", t.tgid},     {"ppid", t.ppid},
                                 {"uid", t.creds.uid}, {"gid", t.creds.gid}, {"comm", t.comm},
                                 {"task", t.address}};
        if (checked) {
          j["in_task_list"] = static_cast<bool>(v.in_task_list[i]);
          j["in_pid_ns"] = static_cast<bool>(v.in_pid_ns[i]);
        }
        doc["tasks"].push_back(j);
      }
      if (checked) doc["cross_view"] = imee::tools::view_summary(v);
      doc["findings"] = ctx.findings;
      imee::tools::print_json(doc);
      return;
    }
    std::printf("%7s %7s %7s %6s %6s  %-16s %-18s %s\n", "PID", "TGID", "PPID", "UID", "GID",
                "COMM", "TASK", checked ? "VIEW" : "");
    for (std::size_t i = 0; i < v.tasks.size(); ++i) {
      const imee::Task& t = v.tasks[i];
      std::printf("%7d %7d %7d %6u %6u  %-16s 0x%016llx %s\n", t.pid, t.tgid, t.ppid, t.creds.uid,
                  t.creds.gid, t.comm.c_str(), static_cast<unsigned long long>(t.address),
                  checked ? imee::tools::view_mark(v, i) : "");
    }
    if (checked) imee::tools::print_view_summary(v, "tasks");
  });
}
