#include "imee/error.hpp"

#include <cstdio>

namespace imee {

const char* to_string(Fault fault) {
  switch (fault) {
    case Fault::kNotPresent:
      return "not present";
    case Fault::kReservedBit:
      return "reserved bit set";
    case Fault::kNonCanonical:
      return "non-canonical address";
    case Fault::kBeyondRam:
      return "beyond guest RAM";
    case Fault::kBadLength:
      return "bad length";
  }
  return "unknown fault";
}

std::string Error::describe() const {
  char buf[160];
  if (level > 0)
    std::snprintf(buf, sizeof buf,
                  "read of VA 0x%llx failed: %s at paging level %d (entry GPA 0x%llx)",
                  static_cast<unsigned long long>(va), to_string(fault), level,
                  static_cast<unsigned long long>(gpa));
  else if (fault == Fault::kBeyondRam)
    std::snprintf(buf, sizeof buf, "read of VA 0x%llx failed: GPA 0x%llx is beyond guest RAM",
                  static_cast<unsigned long long>(va), static_cast<unsigned long long>(gpa));
  else
    std::snprintf(buf, sizeof buf, "read of VA 0x%llx failed: %s",
                  static_cast<unsigned long long>(va), to_string(fault));
  return buf;
}

}  // namespace imee
