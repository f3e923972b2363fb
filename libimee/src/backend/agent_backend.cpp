// What both ImEE backends share above their runners: see imee/agent_backend.hpp for what they
// do, agent/README.md for the protocol.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <iterator>

#include "agent_core.hpp"

namespace imee {

namespace {

constexpr std::uint64_t kPage = IMEE_PAGE_SIZE;

// The largest piece of a request handed to the agent at once; requests are split into these.
constexpr std::uint64_t kJobBytes = 64 * 1024;
static_assert(kJobBytes <= IMEE_OUTPUT_SIZE);

}  // namespace

AgentCore::AgentCore(std::string name, std::unique_ptr<AgentRunner> runner, const GuestRam& ram,
                     const AgentHome& home)
    : runner_(std::move(runner)), shell_(std::move(name), home) {
  check_ram(ram);
  set_ram(ram);
  move_home(home);
}

AgentCore::~AgentCore() {
  stop_polling();
}

void AgentCore::check_ram(const GuestRam& ram) const {
  for (const RamRegion& r : ram.regions()) {
    if (r.gpa + r.size > shell_.local_gpa())
      shell_.fail("target RAM reaches the ImEE's local GPA range");
    const std::byte* host = ram.host(r.gpa, r.size);
    if (host == nullptr || reinterpret_cast<std::uintptr_t>(host) % kPage != 0 ||
        r.gpa % kPage != 0)
      shell_.fail("target RAM region at GPA " + std::to_string(r.gpa) +
                  " is not page aligned in host memory");
  }
  runner_->check_ram(shell_, ram);
}

void AgentCore::set_ram(const GuestRam& ram) {
  ram_ = &ram;
  soft_ = std::make_unique<SoftBackend>(ram);
  regions_ = ram.regions();
}

void AgentCore::move_home(const AgentHome& home) {
  PollPause pause(*this);
  const std::uint64_t gpa = shell_.home_gpa_for(*ram_, home);
  shell_.set_home(home, gpa);
  runner_->map_target(shell_, *ram_);
  shell_.restart();
}

// The blind spot was read: move the agent to a nearby page of the same executable mapping
// (kernel text is mapped in large runs), any page whose GPA is not the current home.
bool AgentCore::relocate() {
  const std::uint64_t old_gpa = shell_.home_gpa();
  for (int step = 1; step <= 1024; ++step) {
    for (int sign : {1, -1}) {
      const AgentHome home{shell_.home_space(),
                           shell_.home_va() + static_cast<std::uint64_t>(sign * step) * kPage};
      std::uint64_t gpa = 0;
      try {
        gpa = shell_.home_gpa_for(*ram_, home);
      } catch (const Exception&) {
        continue;
      }
      if (gpa == old_gpa) continue;
      move_home(home);
      ++shell_.stats.relocations;
      return true;
    }
  }
  return false;
}

AgentCore::PollPause::PollPause(AgentCore& core)
    : core_(core), was_polling_(core.polling()), exceptions_(std::uncaught_exceptions()) {
  if (was_polling_) core_.stop_polling();
}

AgentCore::PollPause::~PollPause() {
  if (was_polling_ && std::uncaught_exceptions() == exceptions_) core_.start_polling();
}

void AgentCore::start_polling() {
  if (poller_.joinable()) return;
  stopping_ = false;
  poller_done_ = false;
  shell_.header().mode = IMEE_MODE_POLL;
  poller_ = std::thread([this] {
    if (!runner_->run_polled(shell_) || !stopping_.load()) shell_.broken = true;
    poller_done_.store(true, std::memory_order_release);
  });
}

void AgentCore::stop_polling() {
  if (!poller_.joinable()) return;
  // Batch mode again: the agent halts once it sees no work, and the thread returns.
  stopping_ = true;
  std::atomic_ref<std::uint32_t>(shell_.header().mode)
      .store(IMEE_MODE_BATCH, std::memory_order_release);
  poller_.join();
  if (shell_.broken) shell_.restart();  // counted by whoever noticed the failure
}

bool AgentCore::wait_for_poller() {
  const std::uint64_t want = seq_;
  std::atomic_ref<std::uint64_t> completed(shell_.header().completed);
  for (std::uint64_t spins = 0;; ++spins) {
    if (completed.load(std::memory_order_acquire) == want) return !shell_.broken;
    if (poller_done_.load(std::memory_order_acquire)) return false;
    if (spins < 4096)
      _mm_pause();
    else  // the vCPU thread may need our CPU: sleep rather than yield (CFS may not switch)
      std::this_thread::sleep_for(std::chrono::microseconds(10));
  }
}

// Posts up to IMEE_MAX_REQUESTS jobs of one paging mode, runs them, and sorts the results:
// bytes copied out, faulting owners marked for the software path, blind-spot reads queued for
// a retry. Returns false if the agent failed as a whole (every job then goes to software).
bool AgentCore::run_jobs(std::span<Job> jobs, std::vector<Reread>& reread,
                         std::vector<Job>& retry) {
  auto mark = [&](const Job& j, Reread why) {
    if (reread[j.owner] == Reread::kNone) reread[j.owner] = why;
  };
  AgentShell& s = shell_;
  const PagingMode mode = jobs.front().space.mode;
  const bool nxe = jobs.front().space.nxe;
  if (mode != s.cpu_mode() || nxe != s.cpu_nxe()) {
    PollPause pause(*this);
    s.restart(mode, nxe);
  }

  std::uint32_t out = IMEE_OUTPUT_OFFSET;
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    imee_request& r = s.slot(i);
    r = imee_request{};
    r.cr3 = jobs[i].space.root & pte::kAddressMask;
    r.va = jobs[i].va;
    r.len = jobs[i].len;
    r.out = out;
    out += jobs[i].len;
    s.hit[i].store(Hit::kNone);
    s.served[i] = 0;
  }
  s.header().count = static_cast<std::uint32_t>(jobs.size());
  const std::uint32_t faults_before = s.header().faults;
  std::atomic_ref<std::uint64_t>(s.header().doorbell).store(++seq_, std::memory_order_release);

  bool ok;
  if (polling()) {
    ++s.stats.runs;
    ok = wait_for_poller();
  } else {
    ok = runner_->run_batch(s) && !s.broken && s.header().stray_vector == IMEE_STRAY_NONE;
  }
  if (!ok || s.header().completed != seq_) {
    PollPause pause(*this);
    if (runner_->target_gone()) s.fail("the target VM is gone (its VMM exited)");
    ++s.stats.vcpu_resets;
    s.restart();
    // The doorbell stays rung: the restarted agent would serve the stale batch. Retire it.
    s.header().completed = seq_;
    for (const Job& j : jobs) mark(j, Reread::kAgentFailed);
    return false;
  }
  const bool faulted = s.header().faults != faults_before;
  s.stats.agent_faults += s.header().faults - faults_before;

  for (std::size_t i = 0; i < jobs.size(); ++i) {
    const Job& j = jobs[i];
    const imee_request& r = s.slot(i);
    ++s.stats.agent_jobs;
    const Hit h = s.hit[i].load();
    if (h == Hit::kBlindSpot) {
      ++s.stats.blind_spot_hits;
      retry.push_back(j);
      continue;
    }
    if (!s.served[i] && (h != Hit::kNone || r.status != IMEE_STATUS_OK || r.done != j.len)) {
      const bool reserved_bit = r.status == IMEE_STATUS_FAULT && r.vector == kPageFault &&
                                (r.error_code & kPfReservedBit) != 0;
      mark(j, h == Hit::kAccessedBit                     ? Reread::kAccessedBit
              : h == Hit::kWalkCopy                      ? Reread::kWalkCopy
              : h == Hit::kPagingFeature || reserved_bit ? Reread::kPagingFeature
                                                         : Reread::kFault);
      continue;
    }
    const std::byte* got = s.data() + r.out;
    std::memcpy(j.dst, got, j.len);
    if (!runner_->home_faults_on_read()) check_blind_spot(j, got, faulted, retry);
  }
  return true;
}

// Did a page of this read come back as the agent page? Compare each 4 KiB piece with the agent
// page at the same offset (a canary fills its unused bytes); confirm a match by a software walk.
void AgentCore::check_blind_spot(const Job& j, const std::byte* got, bool faulted,
                                 std::vector<Job>& retry) {
  for (std::uint64_t off = 0; off < j.len;) {
    const std::uint64_t va = j.va + off;
    const std::uint64_t in_page = va & (kPage - 1);
    const std::uint64_t n = std::min<std::uint64_t>(kPage - in_page, j.len - off);
    const bool on_stack = faulted && in_page + n > IMEE_AGENT_STACK_OFFSET;
    if (on_stack || std::memcmp(got + off, shell_.agent_page() + in_page, n) == 0) {
      Expected<Translation> t = imee::translate(*ram_, j.space, va);
      if (t && (t->gpa & ~(kPage - 1)) == shell_.home_gpa()) {
        ++shell_.stats.blind_spot_hits;
        retry.push_back({j.space, va, j.dst + off, static_cast<std::uint32_t>(n), j.owner});
      }
    }
    off += n;
  }
}

// Batches of one paging mode, within the request slots and the output buffer.
void AgentCore::run_all(std::vector<Job>& jobs, std::vector<Reread>& reread,
                        std::vector<Job>& retry) {
  for (std::size_t first = 0; first < jobs.size();) {
    std::size_t last = first, bytes = 0;
    while (last < jobs.size() && last - first < IMEE_MAX_REQUESTS &&
           bytes + jobs[last].len <= IMEE_OUTPUT_SIZE &&
           jobs[last].space.mode == jobs[first].space.mode &&
           jobs[last].space.nxe == jobs[first].space.nxe)
      bytes += jobs[last++].len;
    run_jobs(std::span<Job>(jobs).subspan(first, last - first), reread, retry);
    first = last;
  }
}

void AgentCore::read_batch(std::span<ReadRequest> requests) {
  std::vector<Reread> reread(requests.size(), Reread::kNone);
  std::vector<Job> jobs;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    ReadRequest& r = requests[i];
    r.status = check_range(r.va, r.dst.size());
    if (!r.status) continue;
    if (r.space.mode == PagingMode::k5Level && !shell_.la57()) {
      reread[i] = Reread::kNoLa57;  // this KVM offers its guests no 5-level paging
      continue;
    }
    for (std::size_t off = 0; off < r.dst.size(); off += kJobBytes) {
      const auto n =
          static_cast<std::uint32_t>(std::min<std::size_t>(kJobBytes, r.dst.size() - off));
      jobs.push_back({r.space, r.va + off, r.dst.data() + off, n, i});
    }
  }

  std::vector<Job> retry;
  run_all(jobs, reread, retry);
  // Reads of the blind spot: move the agent and read those pieces again. Twice unlucky (the
  // new home is read too) is left to the software path.
  if (!retry.empty()) {
    std::vector<Job> again;
    if (relocate())
      run_all(retry, reread, again);
    else
      again = retry;
    for (const Job& j : again)
      if (reread[j.owner] == Reread::kNone) reread[j.owner] = Reread::kBlindSpot;
  }

  for (std::size_t i = 0; i < requests.size(); ++i)
    if (reread[i] != Reread::kNone)
      requests[i].status = soft_->read(requests[i].space, requests[i].va, requests[i].dst);
  count(requests, reread);
}

// Every request once: by the ImEE, or re-read for its first reason. A request refused by the
// range check has an error status and no reason: neither.
void AgentCore::count(std::span<const ReadRequest> requests, const std::vector<Reread>& reread) {
  // The counter of each Reread, in the enum's order.
  static constexpr std::uint64_t BackendStats::*kByReason[] = {nullptr,
                                                               &BackendStats::reread_fault,
                                                               &BackendStats::reread_accessed_bit,
                                                               &BackendStats::reread_blind_spot,
                                                               &BackendStats::reread_no_la57,
                                                               &BackendStats::reread_paging_feature,
                                                               &BackendStats::reread_agent_failed,
                                                               &BackendStats::reread_walk_copy};
  static_assert(std::size(kByReason) == static_cast<std::size_t>(Reread::kWalkCopy) + 1);
  BackendStats& s = shell_.stats;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    if (reread[i] == Reread::kNone) {
      s.imee_reads += requests[i].status.ok();
      continue;
    }
    ++s.software_rereads;
    ++(s.*kByReason[static_cast<std::size_t>(reread[i])]);
  }
}

BackendStats AgentCore::stats() const {
  BackendStats s = shell_.stats;
  runner_->add_stats(s);
  s.agent_polls =
      std::atomic_ref<std::uint64_t>(shell_.header().polls).load(std::memory_order_relaxed);
  return s;
}

// The public face: every call goes to the core.

AgentBackend::AgentBackend(std::unique_ptr<AgentCore> core) : core_(std::move(core)) {}
AgentBackend::~AgentBackend() = default;

std::string_view AgentBackend::name() const {
  return core_->shell().name();
}

Status AgentBackend::read(const AddressSpace& space, std::uint64_t va, std::span<std::byte> dst) {
  ReadRequest r{space, va, dst, {}};
  core_->read_batch(std::span<ReadRequest>(&r, 1));
  return r.status;
}

void AgentBackend::read_batch(std::span<ReadRequest> requests) {
  core_->read_batch(requests);
}

Expected<Translation> AgentBackend::translate(const AddressSpace& space, std::uint64_t va) {
  return core_->soft().translate(space, va);
}

Status AgentBackend::read_physical(std::uint64_t gpa, std::span<std::byte> dst) {
  return core_->soft().read_physical(gpa, dst);
}

AgentBackend::Paging AgentBackend::host_paging() {
  const kvm::Capabilities& caps = kvm::capabilities();
  return {.la57 = caps.la57, .gbpages = caps.gbpages};
}

std::vector<RamRegion> AgentBackend::ram_regions() const {
  return core_->regions();
}

BackendStats AgentBackend::stats() const {
  return core_->stats();
}

void AgentBackend::set_agent_home(const AgentHome& home) {
  core_->move_home(home);
}

std::uint64_t AgentBackend::agent_home_va() const {
  return core_->shell().home_va();
}

std::uint64_t AgentBackend::agent_home_gpa() const {
  return core_->shell().home_gpa();
}

void AgentBackend::start_polling() {
  core_->start_polling();
}

void AgentBackend::stop_polling() {
  core_->stop_polling();
}

bool AgentBackend::polling() const {
  return core_->polling();
}

}  // namespace imee
