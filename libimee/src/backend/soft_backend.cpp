#include "imee/soft_backend.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace imee {

std::string who_answered(const BackendStats& s) {
  char line[320];
  std::snprintf(line, sizeof line,
                "%llu reads by the ImEE, %llu re-read by software (%llu fault, %llu accessed "
                "bit, %llu blind spot, %llu no LA57, %llu paging feature, %llu agent failed)",
                static_cast<unsigned long long>(s.imee_reads),
                static_cast<unsigned long long>(s.software_rereads),
                static_cast<unsigned long long>(s.reread_fault),
                static_cast<unsigned long long>(s.reread_accessed_bit),
                static_cast<unsigned long long>(s.reread_blind_spot),
                static_cast<unsigned long long>(s.reread_no_la57),
                static_cast<unsigned long long>(s.reread_paging_feature),
                static_cast<unsigned long long>(s.reread_agent_failed));
  return line;
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
