// Linux kernel objects read through a LinuxSession: the task list, credentials, the system call
// table and whether the kernel dispatches through it.
#pragma once

#include <cstdint>
#include <functional>
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

// Whether sys_call_table is what this kernel dispatches 64-bit system calls through. Kernels with
// the 2024 branch-history-injection fix (6.9 and later, and stable backports such as Debian's
// 6.1.192) call x64_sys_call(), a switch of direct calls, and never read the table on that path:
// there a clean table proves nothing and writing it hooks nothing. Decided from the guest, never
// from a version number: see decide_syscall_dispatch.
struct SyscallDispatch {
  bool through_table = true;  // sys_call_table is indexed on every 64-bit system call
  bool confirmed = false;     // the dispatch code in guest memory was recognised as one or other
  std::string via;            // "sys_call_table", "x64_sys_call() switch" or "not recognised"
  std::string how_decided;    // the evidence, one line for people
};

// Reads `len` bytes of kernel text at `va` as it is in the guest now.
using CodeReader =
    std::function<Expected<std::vector<std::byte>>(std::uint64_t va, std::size_t len)>;

// Pure (all guest access goes through `read_code`): the decision from this boot's symbols (moved to
// its KASLR slide, e.g. boot_symbols) and the code of do_syscall_64 (entry_SYSCALL_64 on kernels
// that predate it, 4.5 and earlier, which dispatched from the assembly entry):
//  - the code references sys_call_table and does not call x64_sys_call: through the table;
//  - it calls x64_sys_call and does not reference sys_call_table: through the switch;
// both confirmed. Code that was read otherwise is not through the table, not confirmed: with both,
// the switch is on the path; with neither, a path that does not name the table does not index it
// (a missed reference errs towards distrusting a clean table, never the reverse). Only where the
// code cannot be read (or located) does the symbol list decide, not confirmed: x64_sys_call listed
// means the switch, absent means the table.
SyscallDispatch decide_syscall_dispatch(const SymbolTable& symbols, const CodeReader& read_code);

// decide_syscall_dispatch over the session's kernel space.
SyscallDispatch syscall_dispatch(LinuxSession& session, const SymbolTable& symbols);

// The full symbol list at `path` (a kallsyms dump or System.map of any boot of this kernel
// build; empty: the one the profile was built from), moved to this boot's KASLR slide.
SymbolTable boot_symbols(const LinuxSession& session, const std::string& path = "");

}  // namespace imee
