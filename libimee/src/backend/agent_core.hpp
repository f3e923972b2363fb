// The part of both ImEE backends above their runners: requests split into jobs the agent
// serves, reads of the blind spot retried after relocating the agent, everything else the agent
// could not answer re-read by the software walker, and the poll thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "agent_runner.hpp"
#include "agent_shell.hpp"
#include "imee/agent_backend.hpp"
#include "imee/soft_backend.hpp"

namespace imee {

class AgentCore {
 public:
  // Starts the agent at `home` over `ram` (which must outlive it, or the next set_ram).
  AgentCore(std::string name, std::unique_ptr<AgentRunner> runner, const GuestRam& ram,
            const AgentHome& home);
  ~AgentCore();
  AgentCore(const AgentCore&) = delete;
  AgentCore& operator=(const AgentCore&) = delete;

  void read_batch(std::span<ReadRequest> requests);
  SoftBackend& soft() { return *soft_; }
  const std::vector<RamRegion>& regions() const { return regions_; }
  AgentShell& shell() { return shell_; }
  const AgentShell& shell() const { return shell_; }
  AgentRunner& runner() const { return *runner_; }
  BackendStats stats() const;

  // Throws if the runner cannot serve `ram` or it reaches the shell's local GPA range.
  void check_ram(const GuestRam& ram) const;
  // Serves `ram` from now on (checked by check_ram).
  void set_ram(const GuestRam& ram);
  // Moves the agent to `home`, maps the target for it and restarts it (polling paused).
  void move_home(const AgentHome& home);

  void start_polling();
  void stop_polling();
  bool polling() const { return poller_.joinable(); }

  // Polling stopped for as long as it lives, restarted after unless it ends by an exception.
  class PollPause {
   public:
    explicit PollPause(AgentCore& core);
    ~PollPause();
    PollPause(const PollPause&) = delete;
    PollPause& operator=(const PollPause&) = delete;

   private:
    AgentCore& core_;
    bool was_polling_;
    int exceptions_;
  };

 private:
  // Why a caller's request is re-read in software (the first reason it met).
  enum class Reread : std::uint8_t {
    kNone,
    kFault,
    kAccessedBit,
    kBlindSpot,
    kNoLa57,
    kPagingFeature,
    kAgentFailed,
    kWalkCopy
  };
  struct Job {
    AddressSpace space;
    std::uint64_t va = 0;
    std::byte* dst = nullptr;
    std::uint32_t len = 0;
    std::size_t owner = 0;  // index of the caller's request
  };
  void run_all(std::vector<Job>& jobs, std::vector<Reread>& reread, std::vector<Job>& retry);
  bool run_jobs(std::span<Job> jobs, std::vector<Reread>& reread, std::vector<Job>& retry);
  void count(std::span<const ReadRequest> requests, const std::vector<Reread>& reread);
  void check_blind_spot(const Job& job, const std::byte* got, bool faulted,
                        std::vector<Job>& retry);
  bool relocate();
  bool wait_for_poller();

  std::unique_ptr<AgentRunner> runner_;
  AgentShell shell_;
  const GuestRam* ram_ = nullptr;
  std::unique_ptr<SoftBackend> soft_;
  std::vector<RamRegion> regions_;
  std::uint64_t seq_ = 0;

  std::thread poller_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> poller_done_{false};
};

}  // namespace imee
