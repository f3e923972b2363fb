#include "imee/soft_backend.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace imee {

std::string who_answered(const BackendStats& s) {
  char line[384];
  std::snprintf(line, sizeof line,
                "%llu reads by the ImEE, %llu re-read by software (%llu fault, %llu accessed "
                "bit, %llu blind spot, %llu no LA57, %llu paging feature, %llu agent failed, "
                "%llu walk copy changed)",
                static_cast<unsigned long long>(s.imee_reads),
                static_cast<unsigned long long>(s.software_rereads),
                static_cast<unsigned long long>(s.reread_fault),
                static_cast<unsigned long long>(s.reread_accessed_bit),
                static_cast<unsigned long long>(s.reread_blind_spot),
                static_cast<unsigned long long>(s.reread_no_la57),
                static_cast<unsigned long long>(s.reread_paging_feature),
                static_cast<unsigned long long>(s.reread_agent_failed),
                static_cast<unsigned long long>(s.reread_walk_copy));
  return line;
}

std::string exit_reasons_text(const BackendStats& s) {
  // the reasons an ImEE vCPU can meet (SDM Vol. 3C, Appendix C); others by number only
  auto name = [](std::size_t reason) -> const char* {
    switch (reason) {
      case 0:
        return "exception or NMI";
      case 1:
        return "external interrupt";
      case 7:
        return "interrupt window";
      case 12:
        return "HLT";
      case 40:
        return "PAUSE";
      case 48:
        return "EPT violation";
      case 49:
        return "EPT misconfiguration";
      case 52:
        return "preemption timer";
      default:
        return nullptr;
    }
  };
  std::string out;
  for (std::size_t reason = 0; reason < s.exit_reasons.size(); ++reason) {
    if (s.exit_reasons[reason] == 0) continue;
    if (!out.empty()) out += ", ";
    out += std::to_string(reason);
    if (const char* n = name(reason)) out += std::string(" ") + n;
    out += ": " + std::to_string(s.exit_reasons[reason]);
  }
  return out.empty() ? "none" : out;
}

Status check_range(std::uint64_t va, std::size_t len) {
  if (len > kMaxReadLength || (len > 0 && va + (len - 1) < va))
    return Error{Fault::kBadLength, va, 0, 0};
  return {};
}

Status SoftBackend::read(const AddressSpace& space, std::uint64_t va, std::span<std::byte> dst) {
  return copy_translated(ram_, va, dst,
                         [&](std::uint64_t cur) { return imee::translate(ram_, space, cur); });
}

void SoftBackend::read_batch(std::span<ReadRequest> requests) {
  for (ReadRequest& r : requests) r.status = read(r.space, r.va, r.dst);
}

Expected<Translation> SoftBackend::translate(const AddressSpace& space, std::uint64_t va) {
  return imee::translate(ram_, space, va);
}

Status SoftBackend::read_physical(std::uint64_t gpa, std::span<std::byte> dst) {
  if (Status s = check_range(gpa, dst.size()); !s) return s;
  const std::byte* src = ram_.host(gpa, dst.size());
  if (src == nullptr) return Error{Fault::kBeyondRam, 0, gpa, 0};
  std::memcpy(dst.data(), src, dst.size());
  return {};
}

}  // namespace imee
