#include "imee/linux.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>

namespace imee {

namespace {

template <class T>
T field(const std::byte* object, std::uint64_t offset) {
  T v;
  std::memcpy(&v, object + offset, sizeof v);
  return v;
}

// Reads [0, size) at each address in one batch, into one buffer: object i at i * size.
// Every byte is overwritten by the reads (or the call throws): no zero-filling.
using ObjectBytes = std::unique_ptr<std::byte[]>;

ObjectBytes read_objects(LinuxSession& session, const std::vector<std::uint64_t>& addresses,
                         std::size_t size) {
  ObjectBytes buf = std::make_unique_for_overwrite<std::byte[]>(addresses.size() * size);
  std::vector<ReadRequest> requests(addresses.size());
  for (std::size_t i = 0; i < addresses.size(); ++i)
    requests[i] = {session.kernel_space(), addresses[i], std::span(buf.get() + i * size, size), {}};
  session.read_batch(requests);
  for (const ReadRequest& r : requests) r.status.value();
  return buf;
}

std::string hex(std::uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

// The first offset in `code` (loaded at `va`) of a field that names `target` in one of the ways
// x86-64 kernel code can:
//  - a 4-byte absolute displacement, sign-extended (the kernel's code model: before the fix,
//    `mov rax, [sys_call_table + rax*8]`; KASLR relocates these at boot, so the text in guest
//    memory holds this boot's address, which is what `target` is);
//  - a 4-byte offset relative to the field's end: a call or jump (`call x64_sys_call`) or a
//    RIP-relative load or lea (no immediate follows the field in any of these);
//  - an 8-byte immediate (movabs).
// Every byte offset is tried instead of decoding instructions, so the check does not depend on
// the compiler's choice of registers, instructions or retpoline thunks. A chance match needs 32
// bits to agree: about one in 4e9 per offset, over a function of a few hundred bytes.
std::optional<std::size_t> find_reference(std::span<const std::byte> code, std::uint64_t va,
                                          std::uint64_t target) {
  for (std::size_t i = 0; i + 4 <= code.size(); ++i) {
    std::int32_t d;
    std::memcpy(&d, code.data() + i, sizeof d);
    const auto wide = static_cast<std::uint64_t>(static_cast<std::int64_t>(d));
    if (wide == target || va + i + 4 + wide == target) return i;
    std::uint64_t q;
    if (i + 8 <= code.size() && (std::memcpy(&q, code.data() + i, sizeof q), q == target)) return i;
  }
  return std::nullopt;
}

}  // namespace

std::vector<std::uint64_t> task_addresses(LinuxSession& session, std::size_t max_tasks) {
  const LinuxLayout& l = session.profile().layout;
  const std::uint64_t head = session.symbol("init_task") + l.task_tasks;
  std::vector<std::uint64_t> tasks{head - l.task_tasks};
  // A list that loops without passing the head again (corrupt, or changing under us) is caught
  // by the length bound rather than a visited set, which would cost more than the walk itself.
  for (std::uint64_t node = session.pointer(head).value(); node != head;
       node = session.pointer(node).value()) {
    if (tasks.size() == max_tasks)
      throw Exception("the guest's task list does not close within " + std::to_string(max_tasks) +
                      " tasks (corrupt, or changing under us)");
    tasks.push_back(node - l.task_tasks);
  }
  return tasks;
}

std::vector<Task> read_tasks(LinuxSession& session, const std::vector<std::uint64_t>& addresses) {
  const LinuxLayout& l = session.profile().layout;
  // The span of task_struct that holds every field we read, fetched whole per task: one
  // request per task instead of one per field.
  const std::uint64_t lo = std::min({l.task_pid, l.task_tgid, l.task_comm, l.task_real_parent,
                                     l.task_cred, l.task_real_cred, l.task_mm});
  const std::uint64_t hi =
      std::max({l.task_pid + 4, l.task_tgid + 4, l.task_comm + l.comm_size, l.task_real_parent + 8,
                l.task_cred + 8, l.task_real_cred + 8, l.task_mm + 8});
  std::vector<std::uint64_t> starts;
  starts.reserve(addresses.size());
  for (std::uint64_t a : addresses) starts.push_back(a + lo);
  const ObjectBytes bodies = read_objects(session, starts, hi - lo);

  std::vector<Task> tasks(addresses.size());
  std::vector<std::uint64_t> parents(tasks.size()), creds(tasks.size());
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    const std::byte* b = bodies.get() + i * (hi - lo) - lo;  // indexed by task_struct offsets
    Task& t = tasks[i];
    t.address = addresses[i];
    t.pid = field<std::int32_t>(b, l.task_pid);
    t.tgid = field<std::int32_t>(b, l.task_tgid);
    const char* comm = reinterpret_cast<const char*>(b + l.task_comm);
    t.comm.assign(comm, strnlen(comm, l.comm_size));
    t.mm = field<std::uint64_t>(b, l.task_mm);
    t.cred = field<std::uint64_t>(b, l.task_cred);
    t.real_cred = field<std::uint64_t>(b, l.task_real_cred);
    parents[i] = field<std::uint64_t>(b, l.task_real_parent) + l.task_tgid;
    creds[i] = t.real_cred;
  }

  // Second round: parents' tgids and the credentials, again one batch each.
  const ObjectBytes parent_tgids = read_objects(session, parents, 4);
  const ObjectBytes cred_bodies = read_objects(session, creds, l.cred_size);
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    Task& t = tasks[i];
    t.ppid = field<std::int32_t>(parent_tgids.get(), i * 4);  // init's parent is init_task: 0
    const std::byte* c = cred_bodies.get() + i * l.cred_size;
    t.creds = {field<std::uint32_t>(c, l.cred_uid),
               field<std::uint32_t>(c, l.cred_gid),
               field<std::uint32_t>(c, l.cred_suid),
               field<std::uint32_t>(c, l.cred_sgid),
               field<std::uint32_t>(c, l.cred_euid),
               field<std::uint32_t>(c, l.cred_egid),
               field<std::uint32_t>(c, l.cred_fsuid),
               field<std::uint32_t>(c, l.cred_fsgid),
               field<std::uint64_t>(c, l.cred_cap_inheritable),
               field<std::uint64_t>(c, l.cred_cap_permitted),
               field<std::uint64_t>(c, l.cred_cap_effective),
               field<std::uint64_t>(c, l.cred_cap_bset),
               field<std::uint64_t>(c, l.cred_cap_ambient)};
  }
  return tasks;
}

std::vector<std::uint64_t> syscall_table(LinuxSession& session) {
  std::vector<std::uint64_t> table(session.profile().syscall_slots);
  session.read(session.symbol("sys_call_table"), std::as_writable_bytes(std::span(table))).value();
  while (!table.empty() && table.back() == 0) table.pop_back();
  return table;
}

SyscallDispatch decide_syscall_dispatch(const SymbolTable& symbols, const CodeReader& read_code) {
  // The symbol list alone is a weak witness: x64_sys_call names the fix's switch, but a list that
  // lacks a symbol, or code changed in memory (a rootkit putting the table back on the path), would
  // go unnoticed. The code the kernel runs on each system call is the strong one: before the fix,
  // do_syscall_64 (since 4.6; its inlined do_syscall_x64 since 5.12) indexes sys_call_table
  // itself; after it, do_syscall_64 calls x64_sys_call (a separate function in another file,
  // so not inlined without LTO) and holds no reference to the table. Kernels before 4.6 had no
  // do_syscall_64 and indexed the table in the assembly entry (entry_SYSCALL_64, once system_call).
  // So code that was read and holds no reference to the table is never called "through the
  // table", whatever the symbol list says: a scan that missed a reference errs towards distrusting
  // a clean table, never towards trusting one the kernel does not use.
  const std::optional<std::uint64_t> table = symbols.find("sys_call_table");
  const std::optional<std::uint64_t> x64 = symbols.find("x64_sys_call");
  const std::string listed = x64 ? "the symbol list has x64_sys_call, the switch of the 2024 "
                                   "branch-history fix"
                                 : "the symbol list has no x64_sys_call";
  const std::string via_table = "sys_call_table", via_switch = "x64_sys_call() switch";
  constexpr std::uint64_t kMaxCode = 4096;  // do_syscall_64 is ~200 bytes

  std::string why_not;  // why the code could not be read
  const char* path = nullptr;
  std::uint64_t start = 0;
  for (const char* name : {"do_syscall_64", "entry_SYSCALL_64", "system_call"}) {
    if (const auto a = symbols.find(name)) {
      path = name;
      start = *a;
      break;
    }
  }
  if (!path) {
    why_not = "the symbol list names none of do_syscall_64, entry_SYSCALL_64, system_call";
  } else {
    const std::optional<std::uint64_t> next = symbols.next_address_after(start);
    const std::uint64_t len = next ? std::min(*next - start, kMaxCode) : kMaxCode;
    const Expected<std::vector<std::byte>> code = read_code(start, len);
    if (!code) {
      why_not = std::string(path) + " could not be read: " + code.error().describe();
    } else {
      constexpr std::size_t kNone = ~std::size_t{0};
      const std::size_t t = table ? find_reference(*code, start, *table).value_or(kNone) : kNone;
      const std::size_t c = x64 ? find_reference(*code, start, *x64).value_or(kNone) : kNone;
      const std::string name = path;
      const std::string read =
          name + " (" + std::to_string(code->size()) + " bytes read from guest memory)";
      auto operand = [&](std::size_t at) { return " (operand at " + name + "+" + hex(at) + ")"; };
      if (t != kNone && c == kNone)
        return {true, true, via_table,
                read + " references sys_call_table" + operand(t) +
                    (x64 ? " and does not call x64_sys_call; " + listed : "; " + listed)};
      if (c != kNone && t == kNone)
        return {false, true, via_switch,
                read + " calls x64_sys_call" + operand(c) +
                    " and holds no reference to sys_call_table"};
      if (c != kNone && t != kNone)
        return {false, false, via_switch,
                read + " both references sys_call_table" + operand(t) + " and calls x64_sys_call" +
                    operand(c) + "; not confirmed which one runs, taken as the switch"};
      if (!table)
        return {false, false, "not recognised", "the symbol list has no sys_call_table; " + listed};
      return {false, false, x64 ? via_switch : "not recognised",
              read + " holds no reference to sys_call_table" +
                  (x64 ? " and does not call x64_sys_call either; " + listed +
                             "; not confirmed from code"
                       : "; " + listed + ", so what it dispatches through is not recognised")};
    }
  }
  // Nothing to judge the code by: the symbol list decides.
  return {!x64, false, x64 ? via_switch : via_table,
          listed + "; not confirmed from code: " + why_not};
}

SyscallDispatch syscall_dispatch(LinuxSession& session, const SymbolTable& symbols) {
  return decide_syscall_dispatch(
      symbols, [&](std::uint64_t va, std::size_t len) { return session.read(va, len); });
}

SymbolTable boot_symbols(const LinuxSession& session, const std::string& path) {
  SymbolTable symbols = path.empty() ? session.profile().full_symbols() : SymbolTable::load(path);
  const std::string origin = path.empty() ? "the profile's symbol list" : path;
  const auto listed_text = symbols.find("_text");
  if (!listed_text) throw Exception(origin + ": no _text symbol");
  symbols.shift(static_cast<std::int64_t>(session.kernel().text_va - *listed_text));
  return symbols;
}

}  // namespace imee
