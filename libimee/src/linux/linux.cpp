#include "imee/linux.hpp"

#include <algorithm>
#include <cstring>
#include <memory>

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

SymbolTable boot_symbols(const LinuxSession& session, const std::string& path) {
  const std::string& list = path.empty() ? session.profile().symbols_path : path;
  if (list.empty()) throw Exception("no symbol list to resolve addresses: give --symbols");
  SymbolTable symbols = SymbolTable::load(list);
  const auto listed_text = symbols.find("_text");
  if (!listed_text) throw Exception(list + ": no _text symbol");
  symbols.shift(static_cast<std::int64_t>(session.kernel().text_va - *listed_text));
  return symbols;
}

}  // namespace imee
