#include "imee/linux.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <set>
#include <utility>

#include "imee/error.hpp"
#include "imee/guest_profile.hpp"
#include "imee/target.hpp"

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

namespace {

// The profile's own symbol list. A cached one (a file beside a profile built from guest memory)
// that no longer loads, damaged after it was written, is decoded again from the guest's kallsyms
// tables and written back, as a damaged cached profile is rebuilt.
SymbolTable profile_symbols(const LinuxSession& session, std::vector<std::string>* warnings) {
  const LinuxProfile& p = session.profile();
  try {
    return p.full_symbols();
  } catch (const Exception& e) {
    const auto banner_off = p.symbols.find("linux_banner");
    if (p.all_symbols || p.symbols_path.empty() || p.btf_size == 0 || !session.target() ||
        banner_off == p.symbols.end())
      throw;
    const GuestBanner banner{session.kernel().text_gpa + banner_off->second, p.banner};
    MemoryProfile built = build_profile_from_memory(session.target()->ram(), banner);
    std::string note = std::string(e.what()) + "; decoded again from guest memory";
    try {
      built.profile.all_symbols->save_binary(p.symbols_path);
      note += " and rewritten";
    } catch (const Exception& save) {
      note += std::string(" (not rewritten: ") + save.what() + ")";
    }
    if (warnings) warnings->push_back(note);
    return std::move(*built.profile.all_symbols);
  }
}

}  // namespace

SymbolTable boot_symbols(const LinuxSession& session, const std::string& path,
                         std::vector<std::string>* warnings) {
  SymbolTable symbols = path.empty() ? profile_symbols(session, warnings) : SymbolTable::load(path);
  const std::string origin = path.empty() ? "the profile's symbol list" : path;
  const auto listed_text = symbols.find("_text");
  if (!listed_text) throw Exception(origin + ": no _text symbol");
  symbols.shift(static_cast<std::int64_t>(session.kernel().text_va - *listed_text));
  return symbols;
}

// ---------------------------------------------------------------- the pid namespace's view

std::vector<PidEntry> pid_namespace_pids(LinuxSession& session, std::size_t max_pids) {
  const LinuxLayout& l = session.profile().layout;
  const std::uint64_t head_at =
      session.symbol("init_pid_ns") + l.pidns_idr + l.idr_rt + l.xarray_head;
  const std::size_t chunk = l.xa_slots_size / 8;  // XA_CHUNK_SIZE, 64
  if (chunk == 0 || (chunk & (chunk - 1)) != 0 || chunk > 256)
    throw Exception("implausible xa_node.slots size " + std::to_string(l.xa_slots_size));
  std::size_t chunk_shift = 0;
  while ((std::size_t{1} << chunk_shift) < chunk) ++chunk_shift;

  // Entries: a node is internal (low bits 10) and above 4096; 1..4096 internal values are
  // sibling/retry/zero markers; a value entry has bit 0 set; anything else is a struct pid.
  auto is_node = [](std::uint64_t e) { return (e & 3) == 2 && e > 4096; };
  auto is_pointer = [](std::uint64_t e) { return e != 0 && (e & 3) == 0; };
  struct Pending {
    std::uint64_t entry, index;
    int depth;
  };
  std::vector<std::uint64_t> pids;
  std::vector<Pending> level{{session.pointer(head_at).value(), 0, 0}};
  while (!level.empty()) {
    std::vector<Pending> nodes;
    for (const Pending& p : level) {
      if (is_node(p.entry)) {
        if (p.depth > 10) throw Exception("the pid IDR is deeper than any xarray can be");
        nodes.push_back(p);
      } else if (is_pointer(p.entry)) {
        pids.push_back(p.entry);
      }
    }
    level.clear();
    if (nodes.empty()) break;
    // One batch per tree level: each node's shift byte and slots.
    const std::uint64_t lo = std::min(l.xa_node_shift, l.xa_node_slots);
    const std::uint64_t hi = std::max(l.xa_node_shift + 1, l.xa_node_slots + l.xa_slots_size);
    std::vector<std::uint64_t> starts;
    for (const Pending& n : nodes) starts.push_back(n.entry - 2 + lo);
    const ObjectBytes bodies = read_objects(session, starts, hi - lo);
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      const std::byte* b = bodies.get() + i * (hi - lo) - lo;
      const auto shift = field<std::uint8_t>(b, l.xa_node_shift);
      if (shift % chunk_shift != 0 || shift > 60)
        throw Exception("pid IDR node " + hex(nodes[i].entry - 2) + " has shift " +
                        std::to_string(shift));
      for (std::size_t slot = 0; slot < chunk; ++slot) {
        const auto e = field<std::uint64_t>(b, l.xa_node_slots + slot * 8);
        if (e == 0) continue;
        level.push_back({e, nodes[i].index + (std::uint64_t{slot} << shift), nodes[i].depth + 1});
      }
      if (pids.size() + level.size() > max_pids)
        throw Exception("the pid IDR holds more than " + std::to_string(max_pids) + " entries");
    }
  }
  // Each struct pid: its number in init_pid_ns and the first task attached as PIDTYPE_PID.
  const std::uint64_t nr_at = l.pid_numbers + l.upid_nr;
  const std::uint64_t lo = std::min(l.pid_tasks, nr_at), hi = std::max(l.pid_tasks + 8, nr_at + 4);
  std::vector<std::uint64_t> starts;
  for (std::uint64_t p : pids) starts.push_back(p + lo);
  const ObjectBytes bodies = read_objects(session, starts, hi - lo);
  std::vector<PidEntry> out(pids.size());
  for (std::size_t i = 0; i < pids.size(); ++i) {
    const std::byte* b = bodies.get() + i * (hi - lo) - lo;
    const auto first = field<std::uint64_t>(b, l.pid_tasks);
    out[i] = {field<std::int32_t>(b, nr_at), pids[i], first ? first - l.task_pid_links : 0};
  }
  std::sort(out.begin(), out.end(),
            [](const PidEntry& a, const PidEntry& b) { return a.nr < b.nr; });
  return out;
}

std::vector<std::uint64_t> thread_addresses(LinuxSession& session,
                                            const std::vector<std::uint64_t>& leaders,
                                            std::size_t max_tasks) {
  const LinuxLayout& l = session.profile().layout;
  std::vector<std::uint64_t> starts;
  for (std::uint64_t t : leaders) starts.push_back(t + l.task_signal);
  const ObjectBytes signals = read_objects(session, starts, 8);
  std::vector<std::uint64_t> out;
  for (std::size_t i = 0; i < leaders.size(); ++i) {
    const auto signal = field<std::uint64_t>(signals.get(), i * 8);
    if (signal == 0) {  // init_task's signal is init_signals; an exiting task may have none
      out.push_back(leaders[i]);
      continue;
    }
    const std::uint64_t head = signal + l.signal_thread_head;
    bool leader_seen = false;
    for (std::uint64_t node = session.pointer(head).value(); node != head;
         node = session.pointer(node).value()) {
      if (out.size() >= max_tasks)
        throw Exception("thread lists do not close within " + std::to_string(max_tasks) + " tasks");
      out.push_back(node - l.task_thread_node);
      leader_seen |= node - l.task_thread_node == leaders[i];
    }
    if (!leader_seen) out.push_back(leaders[i]);
  }
  return out;
}

TaskViews cross_view(LinuxSession& session, bool threads) {
  TaskViews v;
  v.threads = threads;
  std::set<std::uint64_t> previous_diff;
  bool have_previous = false;
  for (v.rounds = 1; v.rounds <= 4; ++v.rounds) {
    std::vector<std::uint64_t> listed = task_addresses(session);
    if (threads) listed = thread_addresses(session, listed);
    std::vector<std::uint64_t> in_ns;
    for (const PidEntry& p : pid_namespace_pids(session))
      if (p.task) in_ns.push_back(p.task);
    std::set<std::uint64_t> all(listed.begin(), listed.end());
    all.insert(in_ns.begin(), in_ns.end());
    const std::vector<std::uint64_t> addresses(all.begin(), all.end());
    std::vector<Task> tasks = read_tasks(session, addresses);
    const std::set<std::uint64_t> a(listed.begin(), listed.end()), b(in_ns.begin(), in_ns.end());
    std::vector<Task> kept;
    std::vector<bool> in_a, in_b;
    std::set<std::uint64_t> diff;
    for (Task& t : tasks) {
      const bool la = a.count(t.address) != 0, lb = b.count(t.address) != 0;
      // Without threads the task-list view is leaders only: so is the IDR's, then.
      if (!threads && !la && t.pid != t.tgid) continue;
      if (t.pid != 0 && la != lb) diff.insert(t.address);
      in_a.push_back(la);
      in_b.push_back(lb);
      kept.push_back(std::move(t));
    }
    const bool stable = diff.empty() || (have_previous && diff == previous_diff);
    if (stable || v.rounds == 4) {
      std::vector<std::size_t> order(kept.size());
      for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
      std::stable_sort(order.begin(), order.end(),
                       [&](std::size_t x, std::size_t y) { return kept[x].pid < kept[y].pid; });
      for (std::size_t i : order) {
        // A difference seen only in the last round (not confirmed) is not reported.
        const bool confirmed = diff.count(kept[i].address) && previous_diff.count(kept[i].address);
        const bool la = in_a[i] || (in_b[i] && !stable && !confirmed);
        const bool lb = in_b[i] || (in_a[i] && !stable && !confirmed);
        v.hidden_from_task_list += kept[i].pid != 0 && lb && !la;
        v.hidden_from_pid_ns += kept[i].pid != 0 && la && !lb;
        v.in_task_list.push_back(la);
        v.in_pid_ns.push_back(lb);
        v.tasks.push_back(std::move(kept[i]));
      }
      return v;
    }
    previous_diff = std::move(diff);
    have_previous = true;
  }
  return v;
}

// ---------------------------------------------------------------- owners of kernel addresses

std::vector<KernelModule> kernel_modules(LinuxSession& session, std::size_t max_modules) {
  const LinuxLayout& l = session.profile().layout;
  const std::uint64_t head = session.symbol("modules");
  std::vector<std::uint64_t> mods;
  for (std::uint64_t node = session.pointer(head).value(); node != head;
       node = session.pointer(node).value()) {
    if (mods.size() == max_modules)
      throw Exception("the module list does not close within " + std::to_string(max_modules));
    mods.push_back(node - l.module_list);
  }
  std::vector<KernelModule> out;
  for (std::uint64_t m : mods) {
    KernelModule k;
    k.address = m;
    k.name = session.cstring(m + l.module_name, l.module_name_size).value();
    k.text = session.u64(m + l.module_text_base).value();
    k.text_size = session.u32(m + l.module_text_size).value();
    k.core_size = session.u32(m + l.module_core_size).value();
    if (const std::uint64_t ks = session.u64(m + l.module_kallsyms).value()) {
      k.symtab = session.u64(ks + l.kallsyms_symtab).value();
      k.num_symtab = session.u32(ks + l.kallsyms_num_symtab).value();
      k.strtab = session.u64(ks + l.kallsyms_strtab).value();
    }
    out.push_back(std::move(k));
  }
  return out;
}

std::string AddressOwner::describe() const {
  const std::string sym = symbol.empty() ? "?" : symbol + "+" + hex(offset);
  switch (kind) {
    case Kind::kernel_text:
      return "kernel:" + sym;
    case Kind::module:
      return "module " + module + ":" + sym;
    case Kind::unknown:
      break;
  }
  return "unknown";
}

AddressOwner address_owner(LinuxSession& session, const SymbolTable& symbols,
                           const std::vector<KernelModule>& modules, std::uint64_t address) {
  AddressOwner o;
  if (address >= session.symbol("_text") && address < session.symbol("_etext")) {
    o.kind = AddressOwner::Kind::kernel_text;
    if (const auto r = symbols.resolve(address)) {
      o.symbol = r->symbol->name;
      o.offset = r->offset;
    }
    return o;
  }
  for (const KernelModule& m : modules) {
    const std::uint64_t size = std::max(m.text_size, m.core_size);
    if (address < m.text || address - m.text >= size) continue;
    o.kind = AddressOwner::Kind::module;
    o.module = m.name;
    // The module's own symbols: Elf64_Sym {st_name u32, info u8, other u8, shndx u16, value,
    // size}, 24 bytes each; the nearest at or below the address.
    if (m.symtab && m.num_symtab && m.num_symtab < (1u << 20)) {
      if (auto raw = session.read(m.symtab, m.num_symtab * 24)) {
        std::uint64_t best = 0;
        std::uint32_t best_name = 0;
        for (std::size_t i = 0; i < m.num_symtab; ++i) {
          const std::byte* e = raw->data() + i * 24;
          const auto name = field<std::uint32_t>(e, 0);
          const auto value = field<std::uint64_t>(e, 8);
          if (name != 0 && value <= address && value >= m.text && value > best) {
            best = value;
            best_name = name;
          }
        }
        if (best != 0) {
          if (auto n = session.cstring(m.strtab + best_name, 128)) {
            o.symbol = *n;
            o.offset = address - best;
          }
        }
      }
    }
    return o;
  }
  return o;
}

// ---------------------------------------------------------------- ftrace

std::vector<FtraceOps> ftrace_ops_list(LinuxSession& session, const SymbolTable& symbols) {
  const LinuxLayout& l = session.profile().layout;
  const auto list = symbols.find("ftrace_ops_list");
  const auto end = symbols.find("ftrace_list_end");
  if (!list || !end) return {};
  std::vector<FtraceOps> out;
  for (std::uint64_t ops = session.pointer(*list).value(); ops != 0 && ops != *end;
       ops = session.pointer(ops + l.ftrace_ops_next).value()) {
    if (out.size() == 4096) throw Exception("ftrace_ops_list does not end within 4096 ops");
    FtraceOps f;
    f.address = ops;
    f.func = session.u64(ops + l.ftrace_ops_func).value();
    f.flags = session.u64(ops + l.ftrace_ops_flags).value() & 0xffffffffu;
    f.trampoline = session.u64(ops + l.ftrace_ops_trampoline).value();
    const std::uint64_t func_hash = session.u64(ops + l.ftrace_ops_func_hash).value();
    const std::uint64_t hash =
        func_hash ? session.u64(func_hash + l.ftrace_ops_hash_filter).value() : 0;
    if (hash) {
      const std::uint32_t bits = session.u32(hash + l.ftrace_hash_size_bits).value() & 0xff;
      const std::uint64_t buckets = session.u64(hash + l.ftrace_hash_buckets).value();
      if (bits <= 16 && buckets) {
        for (std::uint64_t i = 0; i < (std::uint64_t{1} << bits); ++i) {
          int n = 0;
          for (std::uint64_t e = session.pointer(buckets + i * 8).value(); e && n < 1 << 16;
               e = session.pointer(e).value(), ++n)  // hlist_node.next is the entry's first field
            f.filter.push_back(session.u64(e + l.ftrace_func_entry_ip).value());
        }
      }
    }
    out.push_back(std::move(f));
  }
  return out;
}

std::vector<Kprobe> kprobe_list(LinuxSession& session, const SymbolTable& symbols) {
  const LinuxLayout& l = session.profile().layout;
  const auto table = symbols.find("kprobe_table");
  if (!table) return {};
  const std::optional<std::uint64_t> aggr = symbols.find("aggr_pre_handler");
  constexpr std::size_t kHeads = 64;  // KPROBE_TABLE_SIZE in 6.1 and 6.12
  constexpr std::size_t kMax = 1u << 16;
  std::vector<Kprobe> out;
  auto read_probe = [&](std::uint64_t kp) {
    return Kprobe{kp, session.u64(kp + l.kprobe_addr).value(),
                  session.u64(kp + l.kprobe_pre_handler).value(),
                  session.u64(kp + l.kprobe_post_handler).value()};
  };
  for (std::size_t i = 0; i < kHeads; ++i) {
    for (std::uint64_t node = session.pointer(*table + i * 8).value(); node != 0;
         node = session.pointer(node).value()) {
      if (out.size() >= kMax) throw Exception("kprobe_table holds more than 65536 probes");
      const Kprobe p = read_probe(node - l.kprobe_hlist);
      if (!aggr || p.pre_handler != *aggr) {
        out.push_back(p);
        continue;
      }
      const std::uint64_t head = p.address + l.kprobe_list;
      for (std::uint64_t n = session.pointer(head).value(); n != head && out.size() < kMax;
           n = session.pointer(n).value())
        out.push_back(read_probe(n - l.kprobe_list));
    }
  }
  return out;
}

std::vector<EntryCheck> check_entries(LinuxSession& session,
                                      const std::vector<std::uint64_t>& functions) {
  constexpr std::size_t kBytes = 16;
  std::vector<std::byte> buf(functions.size() * kBytes);
  std::vector<ReadRequest> requests(functions.size());
  for (std::size_t i = 0; i < functions.size(); ++i)
    requests[i] = {
        session.kernel_space(), functions[i], std::span(buf.data() + i * kBytes, kBytes), {}};
  session.read_batch(requests);
  std::vector<EntryCheck> out(functions.size());
  for (std::size_t i = 0; i < functions.size(); ++i) {
    EntryCheck& c = out[i];
    c.function = c.site = functions[i];
    if (!requests[i].status) {
      c.state = EntryCheck::State::unreadable;
      continue;
    }
    const auto* b = reinterpret_cast<const std::uint8_t*>(buf.data() + i * kBytes);
    char hexbytes[3 * kBytes + 1] = {};
    for (std::size_t k = 0; k < 9; ++k) std::snprintf(hexbytes + 3 * k, 4, "%02x ", b[k]);
    c.bytes.assign(hexbytes, 26);
    std::size_t at = 0;
    if (b[0] == 0xf3 && b[1] == 0x0f && b[2] == 0x1e && b[3] == 0xfa) at = 4;  // endbr64
    c.site = functions[i] + at;
    const std::uint8_t op = b[at];
    std::int32_t rel;
    std::memcpy(&rel, b + at + 1, 4);
    if (op == 0xe8 || op == 0xe9) {
      c.state = op == 0xe8 ? EntryCheck::State::traced : EntryCheck::State::redirected;
      c.target = c.site + 5 + static_cast<std::uint64_t>(static_cast<std::int64_t>(rel));
    } else if (op == 0xcc) {
      c.state = EntryCheck::State::breakpoint;
    } else if (op == 0x0f && b[at + 1] == 0x1f && b[at + 2] == 0x44 && b[at + 3] == 0 &&
               b[at + 4] == 0) {
      c.state = EntryCheck::State::clean;  // the 5-byte nop ftrace leaves at an untraced site
    } else {
      // Anything else at the site: neither ftrace's nop nor its call. Taken as redirected only
      // for an opcode that transfers control; otherwise the function has no site (not patched).
      c.state =
          (op == 0xff || op == 0xeb) ? EntryCheck::State::redirected : EntryCheck::State::clean;
    }
  }
  return out;
}

// ---------------------------------------------------------------- credentials

std::vector<std::int64_t> cred_usages(LinuxSession& session,
                                      const std::vector<std::uint64_t>& creds) {
  const LinuxLayout& l = session.profile().layout;
  std::vector<std::uint64_t> starts;
  for (std::uint64_t c : creds) starts.push_back(c + l.cred_usage);
  const ObjectBytes raw = read_objects(session, starts, l.cred_usage_size);
  std::vector<std::int64_t> out(creds.size());
  for (std::size_t i = 0; i < creds.size(); ++i)
    out[i] = l.cred_usage_size == 8 ? field<std::int64_t>(raw.get(), i * 8)
                                    : field<std::int32_t>(raw.get(), i * 4);
  return out;
}

}  // namespace imee
