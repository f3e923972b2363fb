// The shell every ImEE runs in: a one-vCPU VM on this host's KVM holding the agent page, its
// data area and the local page tables in a range at the top of the guest-physical space, and
// where the agent is placed (its home) and how its vCPU is set up. Both runners (agent_runner.hpp)
// drive the agent through it; neither maps target RAM here.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <string>

#include "agent_protocol.h"
#include "imee/agent_backend.hpp"
#include "imee/backend.hpp"
#include "kvm_vm.hpp"

namespace imee {

// A #PF whose error code has the reserved-bit flag (Intel SDM vol. 3, 4.7): the vCPU found an
// entry bit reserved that the target's CPU uses (the PS bit of a 1 GiB page, without PDPE1GB).
inline constexpr std::uint32_t kPageFault = 14;
inline constexpr std::uint32_t kPfReservedBit = 1u << 3;

// Why a request slot needs more than the agent's answer.
enum class Hit : std::uint8_t {
  kNone = 0,
  kFault,          // the agent faulted on it: re-read in software
  kAccessedBit,    // the MMU would have set an A/D bit in target RAM: re-read in software
  kPagingFeature,  // a reserved-bit #PF: the vCPU lacks a paging feature the target uses
  kBlindSpot,      // it read the agent's home: retry after moving the agent
  kWalkCopy,       // its batch's page-table copies changed (AMD): re-read in software
};

class AgentShell {
 public:
  // `name` ("kvm", "kernel") starts every message. The local page tables are placed away from
  // `first_home`; the vCPU starts in its paging mode where KVM offers it.
  AgentShell(std::string name, const AgentHome& first_home);

  const std::string& name() const { return name_; }
  [[noreturn]] void fail(const std::string& what) const;  // Exception "<name>: <what>"

  kvm::Vm& vm() { return vm_; }
  bool la57() const { return la57_; }
  std::uint64_t local_gpa() const { return local_gpa_; }
  std::uint64_t agent_local_gpa() const;

  std::byte* agent_page() const;
  std::byte* data() const;
  imee_data_header& header() const;
  imee_request& slot(std::size_t i) const;
  // The request slot a register of the agent (r15) points to, if it points to one.
  std::optional<std::size_t> request_at(std::uint64_t va) const;

  // The home: a page the target maps executable in `home.space` (the agent fetches its
  // instructions there after loading the target's CR3), in `ram`, away from the local data VAs.
  // Returns its GPA; throws otherwise.
  std::uint64_t home_gpa_for(const GuestRam& ram, const AgentHome& home) const;
  void set_home(const AgentHome& home, std::uint64_t gpa);
  const AddressSpace& home_space() const { return home_space_; }
  std::uint64_t home_va() const { return home_va_; }
  std::uint64_t home_gpa() const { return home_gpa_; }

  // Resets the vCPU to the agent's entry at the home, in `mode`/`nxe` (or the current ones).
  void restart(PagingMode mode, bool nxe);
  void restart() { restart(cpu_mode_, cpu_nxe_); }
  PagingMode cpu_mode() const { return cpu_mode_; }
  bool cpu_nxe() const { return cpu_nxe_; }

  // Per request slot, set by whoever saw the agent stop on it (on the poll thread too).
  std::array<std::atomic<Hit>, IMEE_MAX_REQUESTS> hit{};
  // Served before a fault restarted the agent (kernel runner).
  std::array<char, IMEE_MAX_REQUESTS> served{};
  std::atomic<bool> broken{false};  // the agent stopped in an unexpected way
  BackendStats stats;               // the caller's thread only

 private:
  void build_local_tables(int levels, std::uint64_t first_table);

  std::string name_;
  kvm::Vm vm_;
  kvm::Mapping local_;  // agent page, data area, local tables
  bool la57_ = false;
  std::uint64_t local_gpa_ = 0;
  std::uint64_t data_va_ = 0;
  std::uint64_t local_root_[6] = {};  // by paging levels (4, 5)
  PagingMode cpu_mode_ = PagingMode::k4Level;
  bool cpu_nxe_ = true;
  AddressSpace home_space_;
  std::uint64_t home_va_ = 0;   // page aligned
  std::uint64_t home_gpa_ = 0;  // page aligned: the blind spot
};

}  // namespace imee
