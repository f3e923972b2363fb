// The Python module `imee`: libimee's public API for scripts (pybind11).
//
//   import imee
//   s = imee.open(pid=1234, profile="debian-6.1.json")       # a Linux session (kernel space)
//   s.cstring(s.symbol("linux_banner"), 256)
//   [(t.pid, t.ppid, t.comm) for t in s.tasks()]
//   t = imee.open(ram="/dev/shm/vm.ram")                       # no profile: physical + explicit
//   spaces
//
// Reads release the GIL; each object serialises its own reads (a backend is not thread-safe), so
// threads reading different targets run in parallel. Guest faults raise imee.ReadError with the
// typed fields of imee::Error (fault, va, gpa, level); other failures raise imee.Error.
#include <pybind11/operators.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "imee/backend.hpp"
#include "imee/backends.hpp"
#include "imee/error.hpp"
#include "imee/linux.hpp"
#include "imee/linux_profile.hpp"
#include "imee/linux_session.hpp"
#include "imee/soft_backend.hpp"
#include "imee/target.hpp"

namespace py = pybind11;

namespace {

using imee::AddressSpace;
using imee::Error;
using imee::Fault;

// The exception types, created at import and kept for the life of the interpreter.
PyObject* g_error = nullptr;       // imee.Error(RuntimeError)
PyObject* g_read_error = nullptr;  // imee.ReadError(imee.Error)

py::object make_read_error(const Error& e) {
  py::object exc = py::reinterpret_borrow<py::object>(g_read_error)(e.describe());
  exc.attr("fault") = py::cast(e.fault);
  exc.attr("va") = e.va;
  exc.attr("gpa") = e.gpa;
  exc.attr("level") = e.level;
  return exc;
}

// What every readable object shares: a backend, an optional default address space, and the lock
// that serialises reads on it while the GIL is released.
class Reader {
 public:
  virtual ~Reader() = default;
  imee::MemoryBackend& backend() const { return *backend_; }
  std::mutex& mutex() const { return mutex_; }

  AddressSpace space(const std::optional<AddressSpace>& given) const {
    if (given) return *given;
    if (default_space_) return *default_space_;
    throw py::value_error(
        "no address space: this target was opened without a profile, pass space=");
  }

 protected:
  imee::MemoryBackend* backend_ = nullptr;
  std::optional<AddressSpace> default_space_;

 private:
  mutable std::mutex mutex_;
};

// A target opened without a profile: physical reads, and virtual reads in spaces the caller names.
class RawTarget final : public Reader {
 public:
  explicit RawTarget(const imee::TargetSpec& spec)
      : target_(std::make_unique<imee::Target>(imee::Target::open(spec))),
        soft_(std::make_unique<imee::SoftBackend>(target_->ram())) {
    backend_ = soft_.get();
  }
  const imee::Target& target() const { return *target_; }

 private:
  std::unique_ptr<imee::Target> target_;
  std::unique_ptr<imee::SoftBackend> soft_;
};

// A Linux session: kernel-space reads by default, the task list, the system-call table.
class Session final : public Reader {
 public:
  explicit Session(std::unique_ptr<imee::LinuxSession> session) : session_(std::move(session)) {
    backend_ = &session_->backend();
    default_space_ = session_->kernel_space();
  }
  imee::LinuxSession& linux() const { return *session_; }

 private:
  std::unique_ptr<imee::LinuxSession> session_;
};

// Runs `fn` on `r`'s backend with the GIL released and the object's lock held.
template <class Fn>
auto locked(const Reader& r, Fn&& fn) {
  py::gil_scoped_release release;
  std::lock_guard lock(r.mutex());
  return fn(r.backend());
}

py::bytes read(const Reader& r, std::uint64_t va, std::size_t n,
               const std::optional<AddressSpace>& space) {
  const AddressSpace sp = r.space(space);
  if (imee::Status s = imee::check_range(va, n); !s) throw imee::ReadFailure(s.error());
  // Filled in place: nothing else holds the new bytes object while the GIL is released.
  py::bytes out = py::reinterpret_steal<py::bytes>(PyBytes_FromStringAndSize(nullptr, n));
  if (!out) throw py::error_already_set();
  auto* dst = reinterpret_cast<std::byte*>(PyBytes_AS_STRING(out.ptr()));
  imee::Status st = locked(r, [&](imee::MemoryBackend& b) { return b.read(sp, va, {dst, n}); });
  if (!st) throw imee::ReadFailure(st.error());
  return out;
}

template <class T>
T read_int(const Reader& r, std::uint64_t va, const std::optional<AddressSpace>& space) {
  const AddressSpace sp = r.space(space);
  T value = 0;
  imee::Status st = locked(r, [&](imee::MemoryBackend& b) {
    return b.read(sp, va, std::as_writable_bytes(std::span(&value, 1)));
  });
  if (!st) throw imee::ReadFailure(st.error());
  return value;
}

py::bytes read_physical(const Reader& r, std::uint64_t gpa, std::size_t n) {
  if (imee::Status s = imee::check_range(gpa, n); !s) throw imee::ReadFailure(s.error());
  py::bytes out = py::reinterpret_steal<py::bytes>(PyBytes_FromStringAndSize(nullptr, n));
  if (!out) throw py::error_already_set();
  auto* dst = reinterpret_cast<std::byte*>(PyBytes_AS_STRING(out.ptr()));
  imee::Status st = locked(r, [&](imee::MemoryBackend& b) {
    return b.read_physical(gpa, {dst, n});
  });
  if (!st) throw imee::ReadFailure(st.error());
  return out;
}

std::string cstring(const Reader& r, std::uint64_t va, std::size_t max_len,
                    const std::optional<AddressSpace>& space) {
  const AddressSpace sp = r.space(space);
  // Page by page, so a string ending just before an unmapped page reads.
  std::string out;
  std::vector<std::byte> chunk;
  imee::Status st = locked(r, [&](imee::MemoryBackend& b) -> imee::Status {
    while (out.size() < max_len) {
      const std::uint64_t cur = va + out.size();
      const std::size_t in_page = imee::kPageSize - (cur & (imee::kPageSize - 1));
      chunk.resize(std::min(in_page, max_len - out.size()));
      if (imee::Status s = b.read(sp, cur, chunk); !s) return s;
      for (std::byte c : chunk) {
        if (c == std::byte{0}) return {};
        out.push_back(static_cast<char>(c));
      }
    }
    return {};
  });
  if (!st) throw imee::ReadFailure(st.error());
  return out;
}

// read_batch([(va, n) or (va, n, space), ...]) -> [bytes or imee.ReadError, ...]: one backend
// call for all of them; a failed request's slot holds its error (not raised).
py::list read_batch(const Reader& r, const py::iterable& items) {
  // Parsed with the C API: pybind11's generic casts cost several times the read itself.
  const py::sequence seq =
      py::reinterpret_steal<py::sequence>(PySequence_Fast(items.ptr(), "read_batch: a sequence"));
  if (!seq) throw py::error_already_set();
  const Py_ssize_t count = PySequence_Fast_GET_SIZE(seq.ptr());
  PyObject** elems = PySequence_Fast_ITEMS(seq.ptr());
  std::vector<imee::ReadRequest> requests(static_cast<std::size_t>(count));
  std::vector<std::size_t> lens(requests.size());
  std::size_t total = 0;
  for (Py_ssize_t i = 0; i < count; ++i) {
    PyObject* t = elems[i];
    const Py_ssize_t size = PyTuple_Check(t) ? PyTuple_GET_SIZE(t) : -1;
    if (size != 2 && size != 3)
      throw py::value_error("read_batch: each request is a tuple (va, n) or (va, n, space)");
    const std::uint64_t va = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(t, 0));
    const std::size_t n = PyLong_AsSize_t(PyTuple_GET_ITEM(t, 1));
    if (PyErr_Occurred()) throw py::error_already_set();
    imee::ReadRequest& q = requests[static_cast<std::size_t>(i)];
    q.space =
        r.space(size == 3 ? std::optional(py::handle(PyTuple_GET_ITEM(t, 2)).cast<AddressSpace>())
                          : std::nullopt);
    q.va = va;
    q.status = imee::check_range(va, n);  // a bad range is answered here, never read
    lens[static_cast<std::size_t>(i)] = q.status ? n : 0;
    total += lens[static_cast<std::size_t>(i)];
  }
  std::vector<std::byte> buffer(total);
  std::vector<imee::ReadRequest> to_read;
  std::vector<std::size_t> index;
  to_read.reserve(requests.size());
  std::size_t offset = 0;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    requests[i].dst = {buffer.data() + offset, lens[i]};
    offset += lens[i];
    if (requests[i].status) {
      index.push_back(i);
      to_read.push_back(requests[i]);
    }
  }
  locked(r, [&](imee::MemoryBackend& b) {
    b.read_batch(to_read);
    return 0;
  });
  for (std::size_t k = 0; k < index.size(); ++k) requests[index[k]].status = to_read[k].status;
  py::list out = py::reinterpret_steal<py::list>(PyList_New(count));
  if (!out) throw py::error_already_set();
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const imee::ReadRequest& q = requests[i];
    PyObject* item = q.status
                         ? PyBytes_FromStringAndSize(reinterpret_cast<const char*>(q.dst.data()),
                                                     static_cast<Py_ssize_t>(q.dst.size()))
                         : make_read_error(q.status.error()).release().ptr();
    if (item == nullptr) throw py::error_already_set();
    PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), item);
  }
  return out;
}

imee::Translation translate(const Reader& r, std::uint64_t va,
                            const std::optional<AddressSpace>& space) {
  const AddressSpace sp = r.space(space);
  auto t = locked(r, [&](imee::MemoryBackend& b) { return b.translate(sp, va); });
  if (!t) throw imee::ReadFailure(t.error());
  return *t;
}

py::dict stats(const Reader& r) {
  const imee::BackendStats s = locked(r, [](imee::MemoryBackend& b) { return b.stats(); });
  py::dict d;
  d["imee_reads"] = s.imee_reads;
  d["software_rereads"] = s.software_rereads;
  d["reread_fault"] = s.reread_fault;
  d["reread_accessed_bit"] = s.reread_accessed_bit;
  d["reread_blind_spot"] = s.reread_blind_spot;
  d["reread_no_la57"] = s.reread_no_la57;
  d["reread_paging_feature"] = s.reread_paging_feature;
  d["reread_agent_failed"] = s.reread_agent_failed;
  d["reread_walk_copy"] = s.reread_walk_copy;
  d["runs"] = s.runs;
  d["agent_jobs"] = s.agent_jobs;
  d["vm_exits"] = s.vm_exits;
  d["who_answered"] = imee::who_answered(s);
  return d;
}

// For scripts/py-bench.py: the same reads timed in a C++ loop on the same backend, so the
// Python overhead is measured side by side. Returns nanoseconds per read.
double bench_cpp_reads(const Reader& r, const std::vector<std::uint64_t>& vas, std::size_t n,
                       int rounds) {
  const AddressSpace sp = r.space(std::nullopt);
  return locked(r, [&](imee::MemoryBackend& b) {
    std::vector<std::byte> buf(n);
    const auto start = std::chrono::steady_clock::now();
    for (int round = 0; round < rounds; ++round)
      for (std::uint64_t va : vas)
        if (!b.read(sp, va, buf)) throw imee::ReadFailure(b.read(sp, va, buf).error());
    const auto ns =
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
    return ns / (static_cast<double>(vas.size()) * rounds);
  });
}

// The same as one read_batch of `vas` (n bytes each), `rounds` times. Nanoseconds per read.
double bench_cpp_batch(const Reader& r, const std::vector<std::uint64_t>& vas, std::size_t n,
                       int rounds) {
  const AddressSpace sp = r.space(std::nullopt);
  return locked(r, [&](imee::MemoryBackend& b) {
    std::vector<std::byte> buf(n * vas.size());
    std::vector<imee::ReadRequest> requests(vas.size());
    const auto start = std::chrono::steady_clock::now();
    for (int round = 0; round < rounds; ++round) {
      for (std::size_t i = 0; i < vas.size(); ++i)
        requests[i] = {sp, vas[i], {buf.data() + i * n, n}, {}};
      b.read_batch(requests);
    }
    const auto ns =
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
    return ns / (static_cast<double>(vas.size()) * rounds);
  });
}

struct OpenArgs {
  std::optional<pid_t> pid;
  std::optional<std::string> ram;
  std::optional<std::string> machine;
};

imee::TargetSpec target_spec(const OpenArgs& a) {
  if (a.pid.has_value() == a.ram.has_value())
    throw py::value_error(
        "name the target by exactly one of pid= (a QEMU process) or ram= (a file)");
  imee::TargetSpec spec;
  spec.qemu_pid = a.pid;
  if (a.ram) spec.ram_path = *a.ram;
  if (a.machine) spec.machine = imee::parse_machine_type(*a.machine);
  return spec;
}

// The profile as the tools take it: an object, a cached file, or built from kernel + symbols
// (and written to `profile` when that names a missing file).
std::optional<imee::LinuxProfile> resolve_profile(const py::object& profile,
                                                  const std::optional<std::string>& kernel,
                                                  const std::optional<std::string>& symbols) {
  if (!profile.is_none() && py::isinstance<imee::LinuxProfile>(profile))
    return profile.cast<imee::LinuxProfile>();
  std::optional<std::string> path;
  if (!profile.is_none()) path = py::str(profile).cast<std::string>();
  if (path && std::filesystem::exists(*path)) return imee::LinuxProfile::load(*path);
  if (kernel.has_value() != symbols.has_value())
    throw py::value_error("building a profile needs both kernel= and symbols=");
  if (!kernel) {
    if (path)
      throw imee::Exception("profile " + *path +
                            " not found (pass kernel= and symbols= to build it)");
    return std::nullopt;
  }
  imee::LinuxProfile p = imee::LinuxProfile::build(*kernel, *symbols);
  if (path) p.save(*path);
  return p;
}

py::object open_target(std::optional<pid_t> pid, std::optional<std::string> ram,
                       const py::object& profile, std::optional<std::string> kernel,
                       std::optional<std::string> symbols, const std::string& backend,
                       std::optional<std::string> machine) {
  const imee::TargetSpec spec = target_spec({pid, ram, machine});
  std::optional<imee::LinuxProfile> p = resolve_profile(profile, kernel, symbols);
  if (!p) {
    if (backend != "soft" && backend != "auto")
      throw py::value_error("backend '" + backend +
                            "' needs a profile (the ImEE's agent lives at the kernel's syscall "
                            "entry); without one only 'soft' reads");
    std::unique_ptr<RawTarget> t;
    {
      py::gil_scoped_release release;
      t = std::make_unique<RawTarget>(spec);
    }
    return py::cast(std::move(t));
  }
  std::unique_ptr<imee::LinuxSession> s;
  {
    py::gil_scoped_release release;
    s = imee::LinuxSession::open(spec, std::move(*p), backend);
  }
  return py::cast(std::make_unique<Session>(std::move(s)));
}

std::vector<imee::Task> tasks(const Session& s) {
  py::gil_scoped_release release;
  std::lock_guard lock(s.mutex());
  return imee::read_tasks(s.linux());
}

AddressSpace task_space(const Session& s, const imee::Task& t) {
  if (t.mm == 0)
    throw py::value_error("task " + std::to_string(t.pid) + " (" + t.comm +
                          ") is a kernel thread: it has no address space of its own");
  const std::uint64_t pgd =
      read_int<std::uint64_t>(s, t.mm + s.linux().profile().layout.mm_pgd, std::nullopt);
  return s.linux().user_space(pgd);
}

// Adds the reading methods every readable class has. `space=None`: the default space (a
// session's kernel space); required for targets opened without a profile.
template <class Class>
void add_reads(Class& c) {
  auto space = py::arg("space") = py::none();
  c.def("read", &read, py::arg("va"), py::arg("n"), space,
        "Reads n bytes at virtual address va through the guest's current page tables.")
      .def("u8", &read_int<std::uint8_t>, py::arg("va"), space)
      .def("u16", &read_int<std::uint16_t>, py::arg("va"), space)
      .def("u32", &read_int<std::uint32_t>, py::arg("va"), space)
      .def("u64", &read_int<std::uint64_t>, py::arg("va"), space)
      .def("cstring", &cstring, py::arg("va"), py::arg("max_len") = 4096, space,
           "A NUL-terminated string of at most max_len bytes, without the NUL.")
      .def("read_batch", &read_batch, py::arg("requests"),
           "Reads [(va, n) or (va, n, space), ...] in one backend call; returns a list of bytes, "
           "or imee.ReadError objects (not raised) for the requests that failed.")
      .def("translate", &translate, py::arg("va"), space)
      .def("read_physical", &read_physical, py::arg("gpa"), py::arg("n"))
      .def("ram_regions",
           [](const Reader& r) {
             std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
             for (const auto& region : r.backend().ram_regions())
               out.emplace_back(region.gpa, region.size);
             return out;
           })
      .def_property_readonly("backend",
                             [](const Reader& r) { return std::string(r.backend().name()); })
      .def("stats", &stats)
      .def("_bench_cpp_reads", &bench_cpp_reads, py::arg("vas"), py::arg("n"),
           py::arg("rounds") = 1)
      .def("_bench_cpp_batch", &bench_cpp_batch, py::arg("vas"), py::arg("n"),
           py::arg("rounds") = 1);
}

}  // namespace

PYBIND11_MODULE(imee, m) {
  m.doc() = "ImEE: read a live KVM/QEMU guest's memory from the host (libimee).";
  m.attr("__version__") = IMEE_VERSION_STRING;

  g_error = PyErr_NewException("imee.Error", PyExc_RuntimeError, nullptr);
  g_read_error = PyErr_NewException("imee.ReadError", g_error, nullptr);
  m.attr("Error") = py::handle(g_error);
  m.attr("ReadError") = py::handle(g_read_error);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const imee::ReadFailure& e) {
      py::object exc = make_read_error(e.error());
      PyErr_SetObject(g_read_error, exc.ptr());
    } catch (const imee::Exception& e) {
      PyErr_SetString(g_error, e.what());
    }
  });

  py::enum_<Fault>(m, "Fault", "Why a guest read failed (imee::Fault).")
      .value("NOT_PRESENT", Fault::kNotPresent)
      .value("RESERVED_BIT", Fault::kReservedBit)
      .value("NON_CANONICAL", Fault::kNonCanonical)
      .value("BEYOND_RAM", Fault::kBeyondRam)
      .value("BAD_LENGTH", Fault::kBadLength);

  py::class_<AddressSpace>(m, "AddressSpace",
                           "Top-level page table GPA, paging levels (4 or 5) and EFER.NXE.")
      .def(py::init([](std::uint64_t root, int levels, bool nxe) {
             if (levels != 4 && levels != 5) throw py::value_error("levels must be 4 or 5");
             return AddressSpace{root, static_cast<imee::PagingMode>(levels), nxe};
           }),
           py::arg("root"), py::arg("levels") = 4, py::arg("nxe") = true)
      .def_readwrite("root", &AddressSpace::root)
      .def_property_readonly("levels",
                             [](const AddressSpace& a) { return static_cast<int>(a.mode); })
      .def_readwrite("nxe", &AddressSpace::nxe)
      .def(py::self == py::self)
      .def("__repr__", [](const AddressSpace& a) {
        return "AddressSpace(root=" + std::to_string(a.root) +
               ", levels=" + std::to_string(static_cast<int>(a.mode)) + ")";
      });

  py::class_<imee::Translation>(m, "Translation")
      .def_readonly("gpa", &imee::Translation::gpa)
      .def_readonly("page_size", &imee::Translation::page_size)
      .def_readonly("writable", &imee::Translation::writable)
      .def_readonly("user", &imee::Translation::user)
      .def_readonly("executable", &imee::Translation::executable);

  py::class_<imee::LinuxProfile>(m, "Profile", "A Linux kernel build's profile (symbols, offsets).")
      .def_static("load", &imee::LinuxProfile::load, py::arg("path"))
      .def_static(
          "build",
          py::overload_cast<const std::string&, const std::string&>(&imee::LinuxProfile::build),
          py::arg("kernel"), py::arg("symbols") = "", py::call_guard<py::gil_scoped_release>())
      .def("save", &imee::LinuxProfile::save, py::arg("path"))
      .def_readonly("banner", &imee::LinuxProfile::banner);

  py::class_<imee::Task>(m, "Task", "One task_struct on the guest's task list.")
      .def_readonly("address", &imee::Task::address)
      .def_readonly("pid", &imee::Task::pid)
      .def_readonly("tgid", &imee::Task::tgid)
      .def_readonly("ppid", &imee::Task::ppid)
      .def_readonly("comm", &imee::Task::comm)
      .def_readonly("mm", &imee::Task::mm)
      .def_readonly("real_cred", &imee::Task::real_cred)
      .def_readonly("cred", &imee::Task::cred)
#define IMEE_CRED_FIELD(f) .def_property_readonly(#f, [](const imee::Task& t) { return t.creds.f; })
          IMEE_CRED_FIELD(uid) IMEE_CRED_FIELD(gid) IMEE_CRED_FIELD(suid) IMEE_CRED_FIELD(sgid)
              IMEE_CRED_FIELD(euid) IMEE_CRED_FIELD(egid) IMEE_CRED_FIELD(fsuid)
                  IMEE_CRED_FIELD(fsgid) IMEE_CRED_FIELD(cap_inheritable)
                      IMEE_CRED_FIELD(cap_permitted) IMEE_CRED_FIELD(cap_effective)
                          IMEE_CRED_FIELD(cap_bset) IMEE_CRED_FIELD(cap_ambient)
#undef IMEE_CRED_FIELD
      .def("__repr__", [](const imee::Task& t) {
        return "Task(pid=" + std::to_string(t.pid) + ", ppid=" + std::to_string(t.ppid) +
               ", comm='" + t.comm + "')";
      });

  py::class_<Reader> reader(m, "Reader", "What Target and Session share: guest memory reads.");
  add_reads(reader);

  py::class_<RawTarget, Reader>(m, "Target",
                                "A target opened without a profile: the software walk over its "
                                "RAM; virtual reads need space=.")
      .def_property_readonly("description",
                             [](const RawTarget& t) { return t.target().describe(); });

  py::class_<Session, Reader>(m, "Session", "A Linux session: reads default to kernel space.")
      .def_property_readonly("backend_choice",
                             [](const Session& s) { return s.linux().backend_choice(); })
      .def_property_readonly("kernel_space",
                             [](const Session& s) { return s.linux().kernel_space(); })
      .def_property_readonly("text_va", [](const Session& s) { return s.linux().kernel().text_va; })
      .def_property_readonly("text_gpa",
                             [](const Session& s) { return s.linux().kernel().text_gpa; })
      .def_property_readonly("page_offset_base",
                             [](const Session& s) { return s.linux().kernel().page_offset_base; })
      .def_property_readonly("profile", [](const Session& s) { return s.linux().profile(); })
      .def(
          "symbol",
          [](const Session& s, const std::string& name) { return s.linux().symbol(name); },
          py::arg("name"), "This boot's virtual address of a profile symbol.")
      .def(
          "user_space",
          [](const Session& s, std::uint64_t pgd) { return s.linux().user_space(pgd); },
          py::arg("pgd_va"), "The address space whose top-level table is at direct-map VA pgd_va.")
      .def("task_space", &task_space, py::arg("task"),
           "A process's address space (from its mm->pgd); ValueError for kernel threads.")
      .def("tasks", &tasks, "Every task on init_task.tasks as the guest has it now.")
      .def("syscall_table",
           [](const Session& s) {
             py::gil_scoped_release release;
             std::lock_guard lock(s.mutex());
             return imee::syscall_table(s.linux());
           })
      .def(
          "syscall_dispatch",
          [](const Session& s, const std::string& symbols) {
            imee::SyscallDispatch d;
            {
              py::gil_scoped_release release;
              std::lock_guard lock(s.mutex());
              d = imee::syscall_dispatch(s.linux(), imee::boot_symbols(s.linux(), symbols));
            }
            py::dict out;
            out["through_table"] = d.through_table;
            out["confirmed"] = d.confirmed;
            out["via"] = d.via;
            out["how_decided"] = d.how_decided;
            return out;
          },
          py::arg("symbols") = "",
          "Whether the kernel dispatches system calls through sys_call_table (syscalldmp's "
          "dispatch line).");

  m.def("open", &open_target, py::kw_only(), py::arg("pid") = py::none(),
        py::arg("ram") = py::none(), py::arg("profile") = py::none(),
        py::arg("kernel") = py::none(), py::arg("symbols") = py::none(),
        py::arg("backend") = "auto", py::arg("machine") = py::none(),
        R"(Opens a target: pid= (a running QEMU) or ram= (RAM file or dump).
With profile= (a Profile, or a cached profile file, built there from kernel= and symbols= when
missing) or kernel= + symbols=: a Session on its Linux kernel, read with backend= "auto", "soft",
"kvm" or "kernel". Without: a Target (software walk; physical reads, virtual reads with space=).
machine=: "pc", "q35" or "flat" RAM layout (default: QEMU's, or flat for files).)");
}
