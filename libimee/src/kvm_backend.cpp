// The kvm backend: see imee/kvm_backend.hpp for what it does, agent/README.md for the protocol.
#include "imee/kvm_backend.hpp"

#include <fcntl.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <thread>

#include "imee/agent_protocol.h"
#include "imee/soft_backend.hpp"
#include "kvm_vm.hpp"

// The agent image, embedded by agent/CMakeLists.txt (agent_image.S).
extern "C" const unsigned char imee_agent_image[];
extern "C" const unsigned char imee_agent_image_end[];

namespace imee {

namespace {

constexpr std::uint64_t kPage = IMEE_PAGE_SIZE;
constexpr std::uint64_t k2M = 2ull << 20, k1G = 1ull << 30;

// Local memory, in pages: the agent page, the data area, the local page tables.
constexpr std::uint64_t kCodePage = 0;
constexpr std::uint64_t kDataPage = 1;
constexpr std::uint64_t kTablePage = kDataPage + IMEE_DATA_PAGES;
constexpr std::uint64_t kTablePages = 2 * 4 + 2 * 5;  // a generic and a data path, per mode
constexpr std::uint64_t kLocalPages = kTablePage + kTablePages;
constexpr std::uint64_t kLocalSpan = k2M;  // GPA room reserved for it, 2 MiB aligned
static_assert(kLocalPages * kPage <= kLocalSpan);

// Memslots: local memory, the agent's home page in target space, then two per target region
// (below and above the home page; a region without it uses only the first).
constexpr std::uint32_t kSlotLocal = 0;
constexpr std::uint32_t kSlotHome = 1;
constexpr std::uint32_t kSlotTarget = 2;

// The largest piece of a request handed to the agent at once; requests are split into these.
constexpr std::uint64_t kJobBytes = 64 * 1024;
static_assert(kJobBytes <= IMEE_OUTPUT_SIZE);

// Paging-structure entry flags for the local tables.
constexpr std::uint64_t kPW = pte::kPresent | pte::kWritable;

// Control-register and EFER bits (Intel SDM vol. 3, 2.5).
constexpr std::uint64_t kCr0PE = 1ull << 0, kCr0MP = 1ull << 1, kCr0ET = 1ull << 4,
                        kCr0NE = 1ull << 5, kCr0PG = 1ull << 31;
constexpr std::uint64_t kCr4PAE = 1ull << 5, kCr4OSFXSR = 1ull << 9, kCr4OSXMMEXCPT = 1ull << 10,
                        kCr4LA57 = 1ull << 12;
constexpr std::uint64_t kEferLME = 1ull << 8, kEferLMA = 1ull << 10, kEferNXE = 1ull << 11;

int index_at(std::uint64_t va, int level) {
  return (va >> (12 + 9 * (level - 1))) & 511;
}

// Whether any byte of [p, p+len) is mapped writable in this process. A read-only memslot is
// not enough on its own: KVM's shadow walker skips Accessed/Dirty updates in read-only slots,
// but under EPT the CPU sets them itself, and KVM (arch/x86/kvm/mmu/paging_tmpl.h) notes that it
// "will simply overwrite the read-only memory". With a PROT_READ host mapping KVM can only map
// the pages read-only, so such a write faults instead (and becomes an MMIO exit).
bool host_range_writable(const void* p, std::uint64_t len) {
  const auto begin = reinterpret_cast<std::uintptr_t>(p), end = begin + len;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    std::uintptr_t lo = 0, hi = 0;
    char perms[5] = {};
    if (std::sscanf(line.c_str(), "%lx-%lx %4s", &lo, &hi, perms) != 3) continue;
    if (lo < end && begin < hi && perms[1] == 'w') return true;
  }
  return false;
}

// Why a request slot needs more than the agent's answer.
constexpr std::uint8_t kHitSoft = 1;       // answer it in software
constexpr std::uint8_t kHitBlindSpot = 2;  // retry it after moving the agent (kernel backend)

struct Job {
  AddressSpace space;
  std::uint64_t va = 0;
  std::byte* dst = nullptr;
  std::uint32_t len = 0;
  std::size_t owner = 0;  // index of the caller's request
};

}  // namespace

struct KvmBackend::Impl {
  explicit Impl(const GuestRam& r) : ram(&r), soft(std::make_unique<SoftBackend>(r)) {}

  const GuestRam* ram;
  std::unique_ptr<SoftBackend> soft;
  kvm::Vm vm;
  kvm::Mapping local;  // agent page, data area, local tables
  std::uint64_t local_gpa = 0;
  std::uint64_t data_va = 0;
  std::uint64_t local_root[6] = {};  // by paging levels (4, 5)
  std::vector<RamRegion> regions;
  bool la57 = false;

  AddressSpace home_space;
  std::uint64_t home_va = 0;   // page aligned
  std::uint64_t home_gpa = 0;  // page aligned: the blind spot

  // The vCPU's paging controls; requests of another mode need a restart.
  PagingMode cpu_mode = PagingMode::k4Level;
  bool cpu_nxe = true;

  std::uint64_t seq = 0;
  std::array<std::atomic<std::uint8_t>, IMEE_MAX_REQUESTS> hit{};  // kHit*, by request slot
  std::atomic<bool> broken{false};           // the agent stopped in an unexpected way
  std::atomic<std::uint64_t> mmio_exits{0};  // counted on the poll thread too
  Stats stats;

  // Kernel backend (ImEE of the patched kvm-intel).
  bool kernel = false;
  kvm::Fd target_vm;  // our duplicate of the target's VM fd
  std::uint32_t target_vcpu = 0;
  kvm::Fd imee;                                  // once launched
  std::array<char, IMEE_MAX_REQUESTS> served{};  // served before a fault restarted the agent
  std::atomic<std::uint64_t> vm_exits{0}, kernel_faults{0};
  std::atomic<std::uint64_t> last_cr3{0};
  std::atomic<std::uint32_t> last_paging{0};
  std::atomic<bool> target_gone{false};

  // Poll mode.
  std::thread poller;
  std::atomic<bool> stopping{false};
  std::atomic<bool> poller_done{false};

  std::byte* page(std::uint64_t index) const { return local.data() + index * kPage; }
  std::byte* agent_page() const { return page(kCodePage); }
  imee_agent_config& config() const {
    return *reinterpret_cast<imee_agent_config*>(agent_page() + IMEE_AGENT_CONFIG_OFFSET);
  }
  std::byte* data() const { return page(kDataPage); }
  imee_data_header& header() const { return *reinterpret_cast<imee_data_header*>(data()); }
  imee_request& slot(std::size_t i) const {
    return reinterpret_cast<imee_request*>(data() + IMEE_HEADER_SIZE)[i];
  }

  void set_up_local();
  void build_local_tables(int levels, std::uint64_t first_table);
  void install_target_slots();
  void check_home(const AddressSpace& space, std::uint64_t va, std::uint64_t* gpa) const;
  void move_home(const AddressSpace& space, std::uint64_t va);
  bool relocate();
  void restart_agent(PagingMode mode, bool nxe);
  void start(const AddressSpace& home_space, std::uint64_t home_va);
  bool run_kernel(std::uint32_t mode);
  bool absorb_fault(const imee_activate& a);

  bool run_jobs(std::span<Job> jobs, std::vector<char>& soft_needed, std::vector<Job>& retry);
  bool run_batch();
  bool wait_for_poller();
  void handle_mmio();
  void poll_loop();
  void start_polling();
  void stop_polling();
};

void KvmBackend::Impl::set_up_local() {
  const kvm::Capabilities& caps = kvm::capabilities();
  la57 = caps.la57;
  regions = ram->regions();
  // The top of the guest-physical space: no RAM there, and no sane target PTE points there.
  local_gpa = (1ull << caps.phys_bits) - kLocalSpan;
  for (const RamRegion& r : regions) {
    if (r.gpa + r.size > local_gpa)
      throw Exception("kvm: target RAM reaches the ImEE's local GPA range");
    const std::byte* host = ram->host(r.gpa, r.size);
    if (host == nullptr || reinterpret_cast<std::uintptr_t>(host) % kPage != 0 ||
        r.gpa % kPage != 0)
      throw Exception("kvm: target RAM region at GPA " + std::to_string(r.gpa) +
                      " is not page aligned in host memory");
    if (!kernel && host_range_writable(host, r.size))
      throw Exception(
          "kvm: target RAM is mapped writable in this process; the ImEE needs a read-only "
          "(PROT_READ) mapping so that KVM cannot set Accessed/Dirty bits in it");
  }

  local = kvm::Mapping::anonymous(kLocalPages * kPage);
  const auto image_size = static_cast<std::size_t>(imee_agent_image_end - imee_agent_image);
  if (image_size != kPage) throw Exception("kvm: the embedded agent image is not one page");
  std::memcpy(agent_page(), imee_agent_image, kPage);
  if (config().magic != IMEE_AGENT_MAGIC || config().version != IMEE_AGENT_PROTOCOL_VERSION)
    throw Exception("kvm: the embedded agent speaks another protocol version");

  // Canary in the unused bytes of the agent page: a read that returns them is a suspect for
  // the blind spot (confirmed by a software translation before anything is done about it).
  std::mt19937_64 rng(std::random_device{}());
  std::size_t code_end = IMEE_AGENT_CODE_LIMIT;
  while (code_end > 0 && agent_page()[code_end - 1] == std::byte{0}) --code_end;
  for (std::size_t i = (code_end + 15) & ~std::size_t{15}; i < IMEE_AGENT_CODE_LIMIT; ++i)
    agent_page()[i] = static_cast<std::byte>(rng());
  for (std::size_t i = IMEE_AGENT_STACK_OFFSET; i < IMEE_AGENT_STACK_TOP; ++i)
    agent_page()[i] = static_cast<std::byte>(rng());

  imee_data_header& h = header();
  h.magic = IMEE_AGENT_MAGIC;
  h.version = IMEE_AGENT_PROTOCOL_VERSION;
  h.mode = IMEE_MODE_BATCH;
  h.stray_vector = IMEE_STRAY_NONE;

  vm.set_memslot(kSlotLocal, local_gpa, local.size(), local.data(), false);
}

// The local address space maps every VA to the agent page, except IMEE_DATA_PAGES pages at
// data_va, mapped to the data area. One "generic" table per level (all 512 entries pointing to
// the next generic table, the last one to the agent page) serves every VA; only the path to
// data_va needs its own copy of each level.
void KvmBackend::Impl::build_local_tables(int levels, std::uint64_t first_table) {
  auto table = [&](std::uint64_t i) {
    return reinterpret_cast<std::uint64_t*>(page(first_table + i));
  };
  auto gpa_of = [&](std::uint64_t i) { return local_gpa + (first_table + i) * kPage; };
  // Tables [0, levels): generic, index level-1. Tables [levels, 2*levels): data path.
  for (int level = 1; level <= levels; ++level) {
    const std::uint64_t next =
        level == 1 ? local_gpa + kCodePage * kPage : gpa_of(static_cast<std::uint64_t>(level) - 2);
    for (int i = 0; i < 512; ++i) table(level - 1)[i] = next | kPW;
    std::memcpy(table(levels + level - 1), table(level - 1), kPage);
  }
  for (int level = 2; level <= levels; ++level)
    table(levels + level - 1)[index_at(data_va, level)] = gpa_of(levels + level - 2) | kPW;
  for (std::uint64_t p = 0; p < IMEE_DATA_PAGES; ++p)
    table(levels)[index_at(data_va, 1) + p] = (local_gpa + (kDataPage + p) * kPage) | kPW;
  local_root[levels] = gpa_of(2 * static_cast<std::uint64_t>(levels) - 1);
}

// Target RAM as read-only slots at its own GPAs, with a hole at the home page, which the agent
// page fills (read-write: exception frames land on the agent's stack in either space).
void KvmBackend::Impl::install_target_slots() {
  if (kernel) {  // the ImEE's EPT maps the target and the home page
    const std::uint64_t agent_local_gpa = local_gpa + kCodePage * kPage;
    if (!imee)
      imee = kvm::launch_imee(vm, target_vm.get(), target_vcpu, home_gpa, agent_local_gpa);
    else
      kvm::retarget_imee(imee.get(), target_vm.get(), target_vcpu, home_gpa, agent_local_gpa);
    return;
  }
  vm.set_memslot(kSlotHome, 0, 0, nullptr, false);
  for (std::uint32_t i = 0; i < regions.size(); ++i) {
    vm.set_memslot(kSlotTarget + 2 * i, 0, 0, nullptr, true);
    vm.set_memslot(kSlotTarget + 2 * i + 1, 0, 0, nullptr, true);
  }
  for (std::uint32_t i = 0; i < regions.size(); ++i) {
    const RamRegion& r = regions[i];
    const std::uint64_t size = r.size & ~(kPage - 1);  // a partial last page stays unbacked
    const std::byte* host = ram->host(r.gpa, r.size);
    const bool has_home = home_gpa >= r.gpa && home_gpa < r.gpa + size;
    const std::uint64_t below = has_home ? home_gpa - r.gpa : size;
    if (below > 0) vm.set_memslot(kSlotTarget + 2 * i, r.gpa, below, host, true);
    if (has_home && below + kPage < size)
      vm.set_memslot(kSlotTarget + 2 * i + 1, home_gpa + kPage, size - below - kPage,
                     host + below + kPage, true);
  }
  vm.set_memslot(kSlotHome, home_gpa, kPage, agent_page(), false);
}

// A home must be a page the target maps executable (the agent fetches its instructions there
// after loading the target's CR3), in RAM the ImEE maps, and away from the local data VAs.
void KvmBackend::Impl::check_home(const AddressSpace& space, std::uint64_t va,
                                  std::uint64_t* gpa) const {
  const std::uint64_t page_va = va & ~(kPage - 1);
  Expected<Translation> t = imee::translate(*ram, space, page_va);
  if (!t) throw Exception("kvm: agent home " + t.error().describe());
  if (!t->executable) throw Exception("kvm: agent home VA is mapped no-execute");
  const std::uint64_t page_gpa = t->gpa & ~(kPage - 1);
  if (ram->host(page_gpa, kPage) == nullptr)
    throw Exception("kvm: agent home page is not wholly in guest RAM");
  if (data_va != 0 && page_va + kPage > data_va && page_va < data_va + IMEE_DATA_SIZE)
    throw Exception("kvm: agent home VA collides with the ImEE's data VAs");
  *gpa = page_gpa;
}

void KvmBackend::Impl::move_home(const AddressSpace& space, std::uint64_t va) {
  std::uint64_t gpa = 0;
  check_home(space, va, &gpa);
  home_space = space;
  home_va = va & ~(kPage - 1);
  home_gpa = gpa;
  install_target_slots();
  restart_agent(cpu_mode, cpu_nxe);
}

// The blind spot was read: move the agent to a nearby page of the same executable mapping
// (kernel text is mapped in large runs), any page whose GPA is not the current home.
bool KvmBackend::Impl::relocate() {
  const std::uint64_t old_gpa = home_gpa;
  for (int step = 1; step <= 1024; ++step) {
    for (int sign : {1, -1}) {
      const std::uint64_t va = home_va + static_cast<std::uint64_t>(sign * step) * kPage;
      std::uint64_t gpa = 0;
      try {
        check_home(home_space, va, &gpa);
      } catch (const Exception&) {
        continue;
      }
      if (gpa == old_gpa) continue;
      move_home(home_space, va);
      ++stats.relocations;
      return true;
    }
  }
  return false;
}

void KvmBackend::Impl::restart_agent(PagingMode mode, bool nxe) {
  const int levels = static_cast<int>(mode);
  config().local_cr3 = local_root[levels];
  config().data_va = data_va;

  kvm_sregs s = vm.sregs();
  kvm_segment code{};
  code.base = 0;
  code.limit = 0xffffffff;
  code.selector = IMEE_AGENT_CODE_SELECTOR;
  code.type = 11;  // execute/read, accessed
  code.present = 1;
  code.s = 1;
  code.l = 1;
  code.g = 1;
  kvm_segment data = code;
  data.selector = IMEE_AGENT_DATA_SELECTOR;
  data.type = 3;  // read/write, accessed
  data.l = 0;
  data.db = 1;
  s.cs = code;
  s.ds = s.es = s.fs = s.gs = s.ss = data;
  s.tr = kvm_segment{};
  s.tr.base = home_va;  // never used: no IST, no privilege change
  s.tr.limit = 0x67;
  s.tr.type = 11;  // 64-bit TSS, busy
  s.tr.present = 1;
  s.ldt = kvm_segment{};
  s.ldt.type = 2;
  s.ldt.unusable = 1;
  s.gdt.base = home_va + IMEE_AGENT_GDT_OFFSET;
  s.gdt.limit = 8 * IMEE_AGENT_GDT_ENTRIES - 1;
  s.idt.base = home_va + IMEE_AGENT_IDT_OFFSET;
  s.idt.limit = 16 * IMEE_AGENT_IDT_VECTORS - 1;
  // WP off: an exception taken in target space pushes its frame onto the agent's stack through
  // the target's mapping of the home page, which is read-only kernel text. The write lands in
  // the home memslot (ours); target RAM stays behind read-only memslots whatever WP says.
  s.cr0 = kCr0PE | kCr0MP | kCr0ET | kCr0NE | kCr0PG;
  s.cr3 = local_root[levels];
  // PGE off: every CR3 write flushes the whole TLB. No SMEP/SMAP: the agent reads user pages.
  s.cr4 = kCr4PAE | kCr4OSFXSR | kCr4OSXMMEXCPT | (mode == PagingMode::k5Level ? kCr4LA57 : 0);
  s.efer = kEferLME | kEferLMA | (nxe ? kEferNXE : 0);
  vm.set_sregs(s);

  kvm_regs r{};
  r.rip = home_va + IMEE_AGENT_ENTRY_OFFSET;
  r.rsp = home_va + IMEE_AGENT_STACK_TOP;
  r.rflags = 2;
  vm.set_regs(r);
  cpu_mode = mode;
  cpu_nxe = nxe;
  header().stray_vector = IMEE_STRAY_NONE;
  broken = false;
}

// An access the agent made to a GPA without a memslot (beyond RAM) or a write to a read-only
// one. Mark the request being served (r15 points to its slot) for the software path, and let
// the access complete with all-ones: its bytes will not be used.
void KvmBackend::Impl::handle_mmio() {
  kvm_run& run = vm.run_state();
  mmio_exits.fetch_add(1, std::memory_order_relaxed);
  if (!run.mmio.is_write) std::memset(run.mmio.data, 0xff, sizeof run.mmio.data);
  const kvm_regs r = vm.regs();
  const std::uint64_t first = data_va + IMEE_HEADER_SIZE;
  if (r.r15 >= first && r.r15 < first + IMEE_MAX_REQUESTS * IMEE_REQUEST_SIZE &&
      (r.r15 - first) % IMEE_REQUEST_SIZE == 0)
    hit[(r.r15 - first) / IMEE_REQUEST_SIZE].store(kHitSoft);
  else
    broken = true;  // not inside a request: the agent itself went astray
}

// Kernel backend: an activation ended with a fault before the agent touched anything it must
// not. The agent was serving the request whose slot r15 points to: that one goes to software (a
// blind spot: to a retry after relocation), the ones before it are done, and the restarted
// agent serves the rest (served and failed requests get length 0, so it skips them).
bool KvmBackend::Impl::absorb_fault(const imee_activate& a) {
  const kvm_regs r = vm.regs();
  const std::uint64_t first = data_va + IMEE_HEADER_SIZE;
  if (r.r15 < first || r.r15 >= first + IMEE_MAX_REQUESTS * IMEE_REQUEST_SIZE ||
      (r.r15 - first) % IMEE_REQUEST_SIZE != 0)
    return false;  // not inside a request: the agent itself went astray
  const std::size_t current = (r.r15 - first) / IMEE_REQUEST_SIZE;
  hit[current].store(a.fault_kind == IMEE_FAULT_BLIND_SPOT ? kHitBlindSpot : kHitSoft);
  for (std::size_t i = 0; i <= current; ++i) {
    imee_request& s = slot(i);
    if (i < current && s.len != 0 && s.status == IMEE_STATUS_OK && s.done == s.len) served[i] = 1;
    s.len = 0;
  }
  restart_agent(cpu_mode, cpu_nxe);
  return true;
}

// Kernel backend: activations until the agent halts (batch done, or poll mode stopped).
// Returns false if the agent failed as a whole.
bool KvmBackend::Impl::run_kernel(std::uint32_t mode) {
  for (int interrupts = 0;;) {
    const imee_activate a = kvm::activate_imee(imee.get(), mode);
    vm_exits.fetch_add(a.exits, std::memory_order_relaxed);
    last_cr3.store(a.target_cr3, std::memory_order_relaxed);
    last_paging.store(a.target_paging, std::memory_order_relaxed);
    switch (a.status) {
      case IMEE_RESULT_DONE:
        return true;
      case IMEE_RESULT_INTERRUPTED:
        if (mode == IMEE_ACTIVATE_BATCH && ++interrupts > 1000) return false;
        continue;
      case IMEE_RESULT_FAULT:
        kernel_faults.fetch_add(1, std::memory_order_relaxed);
        if (absorb_fault(a)) continue;
        return false;
      case IMEE_RESULT_TARGET_GONE:
        target_gone = true;
        return false;
      default:
        return false;
    }
  }
}

// Batch mode: one KVM_RUN serves the posted batch; the agent halts when it is done.
bool KvmBackend::Impl::run_batch() {
  if (kernel) {
    ++stats.runs;
    return run_kernel(IMEE_ACTIVATE_BATCH) && header().stray_vector == IMEE_STRAY_NONE;
  }
  for (int spins = 0;; ++spins) {
    const std::uint32_t reason = vm.run();
    ++stats.runs;
    if (reason == KVM_EXIT_HLT) return !broken && header().stray_vector == IMEE_STRAY_NONE;
    if (reason == KVM_EXIT_MMIO) {
      handle_mmio();
      continue;
    }
    if (reason == KVM_EXIT_INTR && spins < 1000) continue;
    return false;  // shutdown (triple fault), internal error, ...: the caller restarts the agent
  }
}

void KvmBackend::Impl::poll_loop() {
  if (kernel) {
    if (!run_kernel(IMEE_ACTIVATE_POLL) || !stopping.load()) broken = true;
    poller_done.store(true, std::memory_order_release);
    return;
  }
  for (;;) {
    const std::uint32_t reason = vm.run();
    if (reason == KVM_EXIT_MMIO) {
      handle_mmio();
      continue;
    }
    if (reason == KVM_EXIT_INTR) continue;
    if (reason != KVM_EXIT_HLT || !stopping.load()) broken = true;
    break;
  }
  poller_done.store(true, std::memory_order_release);
}

bool KvmBackend::Impl::wait_for_poller() {
  const std::uint64_t want = seq;
  std::atomic_ref<std::uint64_t> completed(header().completed);
  for (std::uint64_t spins = 0;; ++spins) {
    if (completed.load(std::memory_order_acquire) == want) return !broken;
    if (poller_done.load(std::memory_order_acquire)) return false;
    if (spins < 4096)
      _mm_pause();
    else  // the vCPU thread may need our CPU: sleep rather than yield (CFS may not switch)
      std::this_thread::sleep_for(std::chrono::microseconds(10));
  }
}

void KvmBackend::Impl::start_polling() {
  if (poller.joinable()) return;
  stopping = false;
  poller_done = false;
  header().mode = IMEE_MODE_POLL;
  poller = std::thread([this] { poll_loop(); });
}

void KvmBackend::Impl::stop_polling() {
  if (!poller.joinable()) return;
  // Batch mode again: the agent halts once it sees no work, and the thread returns.
  stopping = true;
  std::atomic_ref<std::uint32_t>(header().mode).store(IMEE_MODE_BATCH, std::memory_order_release);
  poller.join();
  if (broken) restart_agent(cpu_mode, cpu_nxe);  // counted by whoever noticed the failure
}

// Posts up to IMEE_MAX_REQUESTS jobs of one paging mode, runs them, and sorts the results:
// bytes copied out, faulting owners marked for the software path, blind-spot reads queued for
// a retry. Returns false if the agent failed as a whole (every job then goes to software).
bool KvmBackend::Impl::run_jobs(std::span<Job> jobs, std::vector<char>& soft_needed,
                                std::vector<Job>& retry) {
  const PagingMode mode = jobs.front().space.mode;
  const bool nxe = jobs.front().space.nxe;
  const bool polled = poller.joinable();
  if (mode != cpu_mode || nxe != cpu_nxe) {
    if (polled) stop_polling();
    restart_agent(mode, nxe);
    if (polled) start_polling();
  }

  std::uint32_t out = IMEE_OUTPUT_OFFSET;
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    imee_request& r = slot(i);
    r = imee_request{};
    r.cr3 = jobs[i].space.root & pte::kAddressMask;
    r.va = jobs[i].va;
    r.len = jobs[i].len;
    r.out = out;
    out += jobs[i].len;
    hit[i].store(0);
    served[i] = 0;
  }
  header().count = static_cast<std::uint32_t>(jobs.size());
  const std::uint32_t faults_before = header().faults;
  std::atomic_ref<std::uint64_t>(header().doorbell).store(++seq, std::memory_order_release);

  const bool ok = polled ? (++stats.runs, wait_for_poller()) : run_batch();
  if (!ok || header().completed != seq) {
    if (polled) stop_polling();
    if (target_gone) throw Exception("kernel: the target VM is gone (its VMM exited)");
    ++stats.vcpu_resets;
    restart_agent(cpu_mode, cpu_nxe);
    // The doorbell stays rung: the restarted agent would serve the stale batch. Retire it.
    header().completed = seq;
    if (polled) start_polling();
    for (const Job& j : jobs) soft_needed[j.owner] = 1;
    return false;
  }
  const bool faulted = header().faults != faults_before;
  stats.agent_faults += header().faults - faults_before;

  for (std::size_t i = 0; i < jobs.size(); ++i) {
    const Job& j = jobs[i];
    const imee_request& r = slot(i);
    ++stats.agent_requests;
    const std::uint8_t h = hit[i].load();
    if (h == kHitBlindSpot) {
      ++stats.blind_spot_hits;
      retry.push_back(j);
      continue;
    }
    if (!served[i] && (h != 0 || r.status != IMEE_STATUS_OK || r.done != j.len)) {
      soft_needed[j.owner] = 1;
      continue;
    }
    const std::byte* got = data() + r.out;
    std::memcpy(j.dst, got, j.len);
    if (kernel) continue;  // its agent page is execute-only: a read of it faults, see above
    // Blind spot: did a page of this read come back as the agent page? Compare each 4 KiB
    // piece with the agent page at the same offset; confirm a match by a software walk.
    for (std::uint64_t off = 0; off < j.len;) {
      const std::uint64_t va = j.va + off;
      const std::uint64_t in_page = va & (kPage - 1);
      const std::uint64_t n = std::min<std::uint64_t>(kPage - in_page, j.len - off);
      const bool on_stack = faulted && in_page + n > IMEE_AGENT_STACK_OFFSET;
      if (on_stack || std::memcmp(got + off, agent_page() + in_page, n) == 0) {
        Expected<Translation> t = imee::translate(*ram, j.space, va);
        if (t && (t->gpa & ~(kPage - 1)) == home_gpa) {
          ++stats.blind_spot_hits;
          retry.push_back({j.space, va, j.dst + off, static_cast<std::uint32_t>(n), j.owner});
        }
      }
      off += n;
    }
  }
  return true;
}

void KvmBackend::Impl::start(const AddressSpace& home_space, std::uint64_t home_va) {
  set_up_local();
  // Data VAs: in another 1 GiB of the home's half of the address space, so never on the home.
  data_va = ((home_va & ~(k1G - 1)) ^ k1G);
  build_local_tables(4, kTablePage);
  build_local_tables(5, kTablePage + 8);
  cpu_mode = la57 ? home_space.mode : PagingMode::k4Level;
  cpu_nxe = home_space.nxe;
  move_home(home_space, home_va);
}

namespace {

kvm::Fd duplicate(int fd) {
  kvm::Fd copy(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!copy) throw Exception("kernel: the target's VM fd " + std::to_string(fd) + " is not open");
  return copy;
}

}  // namespace

KvmBackend::KvmBackend(const GuestRam& ram, const AddressSpace& home_space, std::uint64_t home_va)
    : impl_(std::make_unique<Impl>(ram)) {
  impl_->start(home_space, home_va);
}

KvmBackend::KvmBackend(const GuestRam& ram, const AddressSpace& home_space, std::uint64_t home_va,
                       const KernelTarget& target)
    : impl_(std::make_unique<Impl>(ram)) {
  std::string why;
  if (!available(&why, true)) throw Exception("kernel: " + why);
  impl_->kernel = true;
  impl_->target_vm = target.vm_fd >= 0 ? duplicate(target.vm_fd) : kvm::qemu_vm_fd(target.qemu_pid);
  impl_->target_vcpu = target.vcpu_index;
  impl_->start(home_space, home_va);
}

std::string_view KvmBackend::name() const {
  return impl_->kernel ? "kernel" : "kvm";
}

KvmBackend::~KvmBackend() {
  impl_->stop_polling();
}

bool KvmBackend::available(std::string* why, bool kernel) {
  const kvm::Capabilities& caps = kvm::capabilities();
  std::string reason = caps.usable ? (kernel ? kvm::imee_kernel_missing() : "") : caps.why_not;
  if (why != nullptr) *why = reason;
  return reason.empty();
}

Status KvmBackend::read(const AddressSpace& space, std::uint64_t va, std::span<std::byte> dst) {
  ReadRequest r{space, va, dst, {}};
  read_batch(std::span<ReadRequest>(&r, 1));
  return r.status;
}

void KvmBackend::read_batch(std::span<ReadRequest> requests) {
  Impl& m = *impl_;
  std::vector<char> soft_needed(requests.size(), 0);
  std::vector<Job> jobs;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    ReadRequest& r = requests[i];
    r.status = check_range(r.va, r.dst.size());
    if (!r.status) continue;
    if (r.space.mode == PagingMode::k5Level && !m.la57) {
      soft_needed[i] = 1;  // this KVM offers its guests no 5-level paging
      continue;
    }
    for (std::size_t off = 0; off < r.dst.size(); off += kJobBytes) {
      const auto n =
          static_cast<std::uint32_t>(std::min<std::size_t>(kJobBytes, r.dst.size() - off));
      jobs.push_back({r.space, r.va + off, r.dst.data() + off, n, i});
    }
  }

  // Batches of one paging mode, within the request slots and the output buffer.
  auto run_all = [&](std::vector<Job>& list, std::vector<Job>& retry) {
    for (std::size_t first = 0; first < list.size();) {
      std::size_t last = first, bytes = 0;
      while (last < list.size() && last - first < IMEE_MAX_REQUESTS &&
             bytes + list[last].len <= IMEE_OUTPUT_SIZE &&
             list[last].space.mode == list[first].space.mode &&
             list[last].space.nxe == list[first].space.nxe)
        bytes += list[last++].len;
      m.run_jobs(std::span<Job>(list).subspan(first, last - first), soft_needed, retry);
      first = last;
    }
  };
  std::vector<Job> retry;
  run_all(jobs, retry);
  // Reads of the blind spot: move the agent and read those pieces again. Twice unlucky (the
  // new home is read too) is left to the software path.
  if (!retry.empty()) {
    const bool polled = m.poller.joinable();
    if (polled) m.stop_polling();
    const bool moved = m.relocate();
    if (polled) m.start_polling();
    std::vector<Job> again;
    if (moved)
      run_all(retry, again);
    else
      again = retry;
    for (const Job& j : again) soft_needed[j.owner] = 1;
  }

  for (std::size_t i = 0; i < requests.size(); ++i) {
    if (!soft_needed[i]) continue;
    ++m.stats.software_requests;
    requests[i].status = m.soft->read(requests[i].space, requests[i].va, requests[i].dst);
  }
}

Expected<Translation> KvmBackend::translate(const AddressSpace& space, std::uint64_t va) {
  return impl_->soft->translate(space, va);
}

Status KvmBackend::read_physical(std::uint64_t gpa, std::span<std::byte> dst) {
  return impl_->soft->read_physical(gpa, dst);
}

std::vector<RamRegion> KvmBackend::ram_regions() const {
  return impl_->regions;
}

void KvmBackend::set_agent_home(const AddressSpace& space, std::uint64_t va) {
  const bool polled = impl_->poller.joinable();
  if (polled) impl_->stop_polling();
  impl_->move_home(space, va);
  if (polled) impl_->start_polling();
}

std::uint64_t KvmBackend::agent_home_va() const {
  return impl_->home_va;
}
std::uint64_t KvmBackend::agent_home_gpa() const {
  return impl_->home_gpa;
}

void KvmBackend::start_polling() {
  impl_->start_polling();
}
void KvmBackend::stop_polling() {
  impl_->stop_polling();
}
bool KvmBackend::polling() const {
  return impl_->poller.joinable();
}
void KvmBackend::retarget(const GuestRam& ram, const KernelTarget& target,
                          const AddressSpace& home_space, std::uint64_t home_va) {
  Impl& m = *impl_;
  if (!m.kernel) throw Exception("retarget: only the kernel backend retargets");
  const bool polled = m.poller.joinable();
  if (polled) m.stop_polling();
  const std::uint64_t top =
      ram.regions().empty() ? 0 : ram.regions().back().gpa + ram.regions().back().size;
  if (top > m.local_gpa) throw Exception("kernel: target RAM reaches the ImEE's local GPA range");
  m.target_vm = target.vm_fd >= 0 ? duplicate(target.vm_fd) : kvm::qemu_vm_fd(target.qemu_pid);
  m.target_vcpu = target.vcpu_index;
  m.ram = &ram;
  m.soft = std::make_unique<SoftBackend>(ram);
  m.regions = ram.regions();
  m.target_gone = false;
  m.move_home(home_space, home_va);
  if (polled) m.start_polling();
}

KvmBackend::TargetVcpu KvmBackend::target_vcpu() const {
  const std::uint32_t p = impl_->last_paging.load(std::memory_order_relaxed);
  return {.cr3 = impl_->last_cr3.load(std::memory_order_relaxed),
          .long_mode = (p & IMEE_PAGING_LONG) != 0,
          .la57 = (p & IMEE_PAGING_LA57) != 0,
          .nxe = (p & IMEE_PAGING_NXE) != 0,
          .wp = (p & IMEE_PAGING_WP) != 0,
          .pcide = (p & IMEE_PAGING_PCIDE) != 0,
          .stale = (p & IMEE_PAGING_STALE) != 0};
}

const KvmBackend::Stats& KvmBackend::stats() const {
  impl_->stats.vm_exits = impl_->vm_exits.load(std::memory_order_relaxed);
  impl_->stats.kernel_faults = impl_->kernel_faults.load(std::memory_order_relaxed);
  impl_->stats.mmio_exits = impl_->mmio_exits.load(std::memory_order_relaxed);
  impl_->stats.agent_polls =
      std::atomic_ref<std::uint64_t>(impl_->header().polls).load(std::memory_order_relaxed);
  return impl_->stats;
}

}  // namespace imee
