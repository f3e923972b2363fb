#include "imee/soft_backend.hpp"

#include <algorithm>
#include <cstring>

namespace imee {

Status check_range(std::uint64_t va, std::size_t len) {
  if (len > kMaxReadLength || (len > 0 && va + (len - 1) < va))
    return Error{Fault::kBadLength, va, 0, 0};
  return {};
}

Status SoftBackend::read(const AddressSpace& space, std::uint64_t va, std::span<std::byte> dst) {
  if (Status s = check_range(va, dst.size()); !s) return s;
  std::size_t done = 0;
  while (done < dst.size()) {
    const std::uint64_t cur = va + done;
    Expected<Translation> t = imee::translate(ram_, space, cur);
    if (!t) return t.error();
    // Copy up to the end of this page (of whatever size the walk found).
    const std::uint64_t in_page = t->page_size - (cur & (t->page_size - 1));
    const std::size_t n =
        static_cast<std::size_t>(std::min<std::uint64_t>(in_page, dst.size() - done));
    const std::byte* src = ram_.host(t->gpa, n);
    if (src == nullptr) return Error{Fault::kBeyondRam, cur, t->gpa, 0};
    std::memcpy(dst.data() + done, src, n);
    done += n;
  }
  return {};
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
