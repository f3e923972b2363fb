// The psxview cross-check's output, shared by pidlist and pslist: which tasks one view of the
// guest's processes sees and the other does not.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "imee/linux.hpp"
#include "tool.hpp"

namespace imee::tools {

// "", "HIDDEN" (in the pid namespace only: unlinked from the task list) or "NO-PID" (on the
// task list only: not in the pid namespace). pid 0 is never marked.
inline const char* view_mark(const TaskViews& v, std::size_t i) {
  if (v.tasks[i].pid == 0 || v.in_task_list[i] == v.in_pid_ns[i]) return "";
  return v.in_pid_ns[i] ? "HIDDEN" : "NO-PID";
}

inline nlohmann::ordered_json view_summary(const TaskViews& v) {
  nlohmann::ordered_json hidden = nlohmann::ordered_json::array(),
                         unnumbered = nlohmann::ordered_json::array();
  for (std::size_t i = 0; i < v.tasks.size(); ++i) {
    const std::string mark = view_mark(v, i);
    if (mark == "HIDDEN") hidden.push_back(v.tasks[i].pid);
    if (mark == "NO-PID") unnumbered.push_back(v.tasks[i].pid);
  }
  return {{"threads", v.threads},
          {"tasks", v.tasks.size()},
          {"hidden_from_task_list", hidden},
          {"hidden_from_pid_ns", unnumbered},
          {"rounds", v.rounds}};
}

// One line: how many tasks each view misses, with their pids.
inline void print_view_summary(const TaskViews& v, const char* what) {
  std::string hidden, unnumbered;
  for (std::size_t i = 0; i < v.tasks.size(); ++i) {
    const std::string mark = view_mark(v, i);
    std::string& to = mark == "HIDDEN" ? hidden : unnumbered;
    if (!mark.empty()) to += (to.empty() ? " pid " : ", ") + std::to_string(v.tasks[i].pid);
  }
  std::printf(
      "cross-view (%s): %zu %s; %zu hidden from the task list (in the pid namespace's IDR "
      "only)%s; %zu hidden from the pid namespace (on the task list only)%s\n",
      v.threads ? "threads" : "thread-group leaders", v.tasks.size(), what, v.hidden_from_task_list,
      hidden.empty() ? "" : (":" + hidden).c_str(), v.hidden_from_pid_ns,
      unnumbered.empty() ? "" : (":" + unnumbered).c_str());
}

}  // namespace imee::tools
