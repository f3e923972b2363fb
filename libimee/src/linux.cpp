#include "imee/linux.hpp"

#include <algorithm>
#include <cstring>
#include <unordered_set>

namespace imee {

namespace {

template <class T>
T field(const std::vector<std::byte>& buf, std::uint64_t offset) {
  T v;
  std::memcpy(&v, buf.data() + offset, sizeof v);
  return v;
}

// One request per object: reads [0, size) of each address in one batch.
std::vector<std::vector<std::byte>> read_objects(Session& session,
                                                 const std::vector<std::uint64_t>& addresses,
                                                 std::size_t size) {
  std::vector<std::vector<std::byte>> bufs(addresses.size(), std::vector<std::byte>(size));
  std::vector<ReadRequest> requests(addresses.size());
  for (std::size_t i = 0; i < addresses.size(); ++i)
    requests[i] = {session.kernel_space(), addresses[i], bufs[i], {}};
  session.read_batch(requests);
  for (const ReadRequest& r : requests) r.status.value();
  return bufs;
}

}  // namespace

std::vector<std::uint64_t> task_addresses(Session& session, std::size_t max_tasks) {
  const LinuxLayout& l = session.profile().layout;
  const std::uint64_t head = session.symbol("init_task") + l.task_tasks;
  std::vector<std::uint64_t> tasks{head - l.task_tasks};
  std::unordered_set<std::uint64_t> seen{head};
  for (std::uint64_t node = session.pointer(head).value(); node != head;
       node = session.pointer(node).value()) {
    if (!seen.insert(node).second)
      throw Exception(
          "the guest's task list loops without returning to init_task (changing under us, or "
          "corrupt)");
    if (tasks.size() == max_tasks)
      throw Exception("the guest's task list is longer than " + std::to_string(max_tasks));
    tasks.push_back(node - l.task_tasks);
  }
  return tasks;
}

std::vector<Task> read_tasks(Session& session, const std::vector<std::uint64_t>& addresses) {
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
  const auto bodies = read_objects(session, starts, hi - lo);

  std::vector<Task> tasks(addresses.size());
  std::vector<std::uint64_t> parents, creds;
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    const auto& b = bodies[i];
    Task& t = tasks[i];
    t.address = addresses[i];
    t.pid = field<std::int32_t>(b, l.task_pid - lo);
    t.tgid = field<std::int32_t>(b, l.task_tgid - lo);
    const char* comm = reinterpret_cast<const char*>(b.data() + (l.task_comm - lo));
    t.comm.assign(comm, strnlen(comm, l.comm_size));
    t.mm = field<std::uint64_t>(b, l.task_mm - lo);
    t.cred = field<std::uint64_t>(b, l.task_cred - lo);
    t.real_cred = field<std::uint64_t>(b, l.task_real_cred - lo);
    parents.push_back(field<std::uint64_t>(b, l.task_real_parent - lo) + l.task_tgid);
    creds.push_back(t.real_cred);
  }

  // Second round: parents' tgids and the credentials, again one batch.
  const auto parent_tgids = read_objects(session, parents, 4);
  const auto cred_bodies = read_objects(session, creds, l.cred_size);
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    Task& t = tasks[i];
    t.ppid = field<std::int32_t>(parent_tgids[i], 0);  // init's parent is init_task: 0
    const auto& c = cred_bodies[i];
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

}  // namespace imee
