// pidlist: every pid of the guest's pid namespace (init_pid_ns's IDR of struct pid), threads
// included, with its tgid; tasks the task list does not show are marked (the psxview idea).
#include <cstdio>

#include "common/tool.hpp"
#include "common/views.hpp"
#include "imee/linux.hpp"

int main(int argc, char** argv) {
  const imee::tools::ToolInfo info{
      "pidlist",
      "Lists every pid of a Linux guest from its pid namespace, not from its task list: the IDR\n"
      "(an xarray) of struct pid in init_pid_ns, and the task attached to each pid\n"
      "(pid->tasks[PIDTYPE_PID]). Threads are included (each has its own pid), with their tgid.\n"
      "Every task is also looked for on the task list (init_task.tasks and each thread group's\n"
      "thread list); one seen by only one view is marked: HIDDEN (in the IDR, unlinked from the\n"
      "task list: the mark of a DKOM rootkit) or NO-PID (on the task list, not in the IDR).\n"
      "pid 0 (the idle task, never in the IDR) is listed from the task list and not compared.\n"
      "Each mark is a finding (exit status 3). JSON: \"pids\" (the numbers), \"tasks\" (pid,\n"
      "tgid, comm, task, in_task_list, in_pid_ns), \"cross_view\" (the hidden pids).",
      ""};
  return imee::tools::run_tool(argc, argv, info, [](imee::tools::Context& ctx) {
    const imee::TaskViews v = imee::cross_view(*ctx.session, /*threads=*/true);
    ctx.findings = v.hidden_from_task_list + v.hidden_from_pid_ns;
    if (ctx.options.json) {
      nlohmann::ordered_json doc{{"tool", "pidlist"},
                                 {"backend", ctx.session->backend().name()},
                                 {"source", "init_pid_ns IDR"}};
      doc["pids"] = nlohmann::ordered_json::array();
      doc["tasks"] = nlohmann::ordered_json::array();
      for (std::size_t i = 0; i < v.tasks.size(); ++i) {
        const imee::Task& t = v.tasks[i];
        doc["pids"].push_back(t.pid);
        doc["tasks"].push_back({{"pid", t.pid},
                                {"tgid", t.tgid},
                                {"comm", t.comm},
                                {"task", t.address},
                                {"in_task_list", static_cast<bool>(v.in_task_list[i])},
                                {"in_pid_ns", static_cast<bool>(v.in_pid_ns[i])}});
      }
      doc["cross_view"] = imee::tools::view_summary(v);
      doc["findings"] = ctx.findings;
      imee::tools::print_json(doc);
      return;
    }
    std::printf("%7s %7s  %-16s %-18s %s\n", "PID", "TGID", "COMM", "TASK", "VIEW");
    for (std::size_t i = 0; i < v.tasks.size(); ++i) {
      const imee::Task& t = v.tasks[i];
      std::printf("%7d %7d  %-16s 0x%016llx %s\n", t.pid, t.tgid, t.comm.c_str(),
                  static_cast<unsigned long long>(t.address), imee::tools::view_mark(v, i));
    }
    imee::tools::print_view_summary(v, "tasks");
  });
}
