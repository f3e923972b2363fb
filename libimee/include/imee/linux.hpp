// Linux kernel objects read through a LinuxSession: the task list, credentials and the system
// call table.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "imee/linux_session.hpp"
#include "imee/symbols.hpp"

namespace imee {

struct Credentials {
  std::uint32_t uid = 0, gid = 0, suid = 0, sgid = 0, euid = 0, egid = 0, fsuid = 0, fsgid = 0;
  std::uint64_t cap_inheritable = 0, cap_permitted = 0, cap_effective = 0, cap_bset = 0,
                cap_ambient = 0;
  friend bool operator==(const Credentials&, const Credentials&) = default;
};

struct Task {
  std::uint64_t address = 0;                 // the task_struct
  std::int32_t pid = 0, tgid = 0, ppid = 0;  // ppid: real_parent's tgid, as /proc shows it
  std::string comm;
  std::uint64_t mm = 0;         // 0 for kernel threads
  std::uint64_t real_cred = 0;  // objective credentials (what /proc/PID/status shows)
  std::uint64_t cred = 0;       // subjective credentials; differs while a task overrides them
  Credentials creds;            // read from real_cred
};

// Every task_struct on init_task.tasks (thread-group leaders, init_task first), following the
// guest's list as it is now. Throws ReadFailure on an unreadable link and Exception on a list
// that does not close within `max_tasks`.
std::vector<std::uint64_t> task_addresses(LinuxSession& session, std::size_t max_tasks = 1u << 20);

// Reads the tasks' fields with batched reads: a handful of backend calls whatever the count.
std::vector<Task> read_tasks(LinuxSession& session, const std::vector<std::uint64_t>& addresses);

inline std::vector<Task> read_tasks(LinuxSession& session) {
  return read_tasks(session, task_addresses(session));
}

// The guest's sys_call_table as it is now. Its slots run to the next symbol; alignment padding
// after the last real entry reads as zero and is dropped (no live handler is a null pointer).
std::vector<std::uint64_t> syscall_table(LinuxSession& session);

// The full symbol list at `path` (a kallsyms dump or System.map of any boot of this kernel
// build; empty: the one the profile was built from), moved to this boot's KASLR slide.
SymbolTable boot_symbols(const LinuxSession& session, const std::string& path = "");

}  // namespace imee
