// How the agent gets to run against a target: the one thing the two ImEE backends do
// differently. MemslotRunner (kvm_backend.cpp) maps the target's RAM as read-only memslots of
// the shell VM and runs it with KVM_RUN; KernelImeeRunner (kernel_backend.cpp) has the patched
// module's ImEE map it through its own EPT and runs it with IMEE_ACTIVATE. Above them,
// AgentCore (agent_core.hpp) posts the requests and decides what software re-reads.
#pragma once

#include "imee/backend.hpp"

namespace imee {

class AgentShell;

class AgentRunner {
 public:
  virtual ~AgentRunner() = default;

  // Refuses target RAM the runner cannot serve safely (throws imee::Exception).
  virtual void check_ram(const AgentShell& shell, const GuestRam& ram) const = 0;
  // Maps `ram` and the agent's home (shell.home_gpa()) for the agent.
  virtual void map_target(AgentShell& shell, const GuestRam& ram) = 0;
  // Runs the agent on the posted batch until it halts. false: the agent failed as a whole.
  // Marks in shell.hit the requests it saw fail.
  virtual bool run_batch(AgentShell& shell) = 0;
  // Poll mode, on the poll thread: runs the agent until it halts (true) or fails (false).
  virtual bool run_polled(AgentShell& shell) = 0;
  // Whether a read of the home faults (execute-only) rather than returning the agent page.
  virtual bool home_faults_on_read() const = 0;
  // The target VM is gone (its VMM exited): no read can succeed any more.
  virtual bool target_gone() const { return false; }
  // Adds the runner's own counters (kept on the poll thread too).
  virtual void add_stats(BackendStats& stats) const = 0;
};

}  // namespace imee
