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
// build; empty: the one the profile was built from), moved to this boot's KASLR slide. A damaged
// cached list is decoded again from guest memory and rewritten; `warnings` gets a line saying so.
SymbolTable boot_symbols(const LinuxSession& session, const std::string& path = "",
                         std::vector<std::string>* warnings = nullptr);

// ---------------------------------------------------------------- the pid namespace's view

// One struct pid of init_pid_ns (its IDR, an xarray indexed by pid number) and the task attached
// to it as PIDTYPE_PID (pid->tasks[PIDTYPE_PID] -> task_struct.pid_links[PIDTYPE_PID]), 0 if none
// (a pid kept only as a process group or session id).
struct PidEntry {
  std::int32_t nr = 0;     // the number in init_pid_ns (pid->numbers[0].nr)
  std::uint64_t pid = 0;   // the struct pid
  std::uint64_t task = 0;  // the task_struct, or 0
};

// Every pid in init_pid_ns, by number: threads included (each has its own pid). Throws
// ReadFailure on an unreadable node and Exception on a malformed tree or more than `max_pids`.
std::vector<PidEntry> pid_namespace_pids(LinuxSession& session, std::size_t max_pids = 1u << 22);

// The threads of each thread group led by `leaders` (task->signal->thread_head, through
// task->thread_node), leaders included, in list order.
std::vector<std::uint64_t> thread_addresses(LinuxSession& session,
                                            const std::vector<std::uint64_t>& leaders,
                                            std::size_t max_tasks = 1u << 22);

// The psxview cross-check: tasks seen by the task list (init_task.tasks; with `threads`, plus
// each group's thread list) and by the pid namespace's IDR (with `threads` off, only the
// thread-group leaders of it). Both views are walked again, up to four rounds, until the tasks
// seen by only one of them are the same twice in a row, so a fork or exit between the two walks is
// not reported. pid 0 (the idle tasks, never in the IDR) is only ever in the task list and is not
// compared.
struct TaskViews {
  bool threads = false;
  std::vector<Task> tasks;                // the union of both views, sorted by pid
  std::vector<bool> in_task_list;         // per task
  std::vector<bool> in_pid_ns;            // per task
  std::size_t hidden_from_task_list = 0;  // in the IDR only (pid 0 excepted)
  std::size_t hidden_from_pid_ns = 0;     // on the task list only (pid 0 excepted)
  int rounds = 0;                         // walks of both views it took
};
TaskViews cross_view(LinuxSession& session, bool threads);

// ---------------------------------------------------------------- owners of kernel addresses

struct KernelModule {
  std::uint64_t address = 0;  // struct module
  std::string name;
  std::uint64_t text = 0, text_size = 0;  // core text
  std::uint64_t core_size = 0;            // whole core (6.1) or text (6.4 on, see profile)
  std::uint64_t symtab = 0, num_symtab = 0, strtab = 0;  // struct mod_kallsyms
};

// The guest's module list (`modules`), in list order.
std::vector<KernelModule> kernel_modules(LinuxSession& session, std::size_t max_modules = 8192);

// Who an address belongs to: core kernel text [_text, _etext) with its symbol, a loaded module's
// core text with the module's own symbol (its kallsyms symtab) where one covers it, or nothing.
struct AddressOwner {
  enum class Kind { kernel_text, module, unknown } kind = Kind::unknown;
  std::string module;  // for Kind::module
  std::string symbol;  // "" if none
  std::uint64_t offset = 0;
  std::string describe() const;  // "kernel:sym+0x10", "module imee_rk:sym+0x0", "unknown"
};
AddressOwner address_owner(LinuxSession& session, const SymbolTable& symbols,
                           const std::vector<KernelModule>& modules, std::uint64_t address);

// ---------------------------------------------------------------- ftrace

// One registered ftrace_ops (ftrace_ops_list up to ftrace_list_end) and the functions its filter
// hash names (empty: every function, or a filter that could not be read).
struct FtraceOps {
  std::uint64_t address = 0, func = 0, flags = 0;
  std::uint64_t trampoline = 0;       // the ops' own trampoline (what a traced site calls), or 0
  std::vector<std::uint64_t> filter;  // ips (the functions' ftrace call sites)
};
std::vector<FtraceOps> ftrace_ops_list(LinuxSession& session, const SymbolTable& symbols);
constexpr std::uint64_t kFtraceOpsFlSaveRegs = 1u << 1, kFtraceOpsFlIpModify = 1u << 12;

// Every registered kprobe (kprobe_table's 64 hash lists; an aggregate probe, whose pre_handler
// is aggr_pre_handler, stands for the probes on its list, which are listed instead).
struct Kprobe {
  std::uint64_t address = 0, addr = 0, pre_handler = 0, post_handler = 0;
};
std::vector<Kprobe> kprobe_list(LinuxSession& session, const SymbolTable& symbols);

// What runs at a function's entry: its first bytes (an endbr64, then the 5-byte ftrace call site)
// as they are in guest memory now.
struct EntryCheck {
  std::uint64_t function = 0;
  std::uint64_t site = 0;  // the ftrace call site (function, or function + 4 after endbr64)
  enum class State { clean, traced, redirected, breakpoint, unreadable } state = State::clean;
  std::uint64_t target = 0;  // call/jmp target for traced/redirected
  std::string bytes;         // hex of the first bytes read
};
std::vector<EntryCheck> check_entries(LinuxSession& session,
                                      const std::vector<std::uint64_t>& functions);

// ---------------------------------------------------------------- credentials

// The usage count of each cred (atomic_t or atomic_long_t, as the profile says).
std::vector<std::int64_t> cred_usages(LinuxSession& session,
                                      const std::vector<std::uint64_t>& creds);

}  // namespace imee
