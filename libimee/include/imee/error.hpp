// Typed results for guest memory access.
//
// Memory reads never throw on a guest fault: they return Expected<T>, whose Error says which VA
// failed, at which paging level and why. Setup problems (files, profiles, arguments) throw
// imee::Exception with a message meant for the user.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

namespace imee {

enum class Fault : std::uint8_t {
  kNotPresent,    // a paging-structure entry (or the leaf) is not present
  kReservedBit,   // a reserved bit is set in a paging-structure entry
  kNonCanonical,  // the VA is not canonical for the paging mode
  kBeyondRam,     // a GPA (table or data) is not backed by guest RAM
  kBadLength,     // a range that wraps around or exceeds kMaxReadLength
};

const char* to_string(Fault fault);

struct Error {
  Fault fault = Fault::kNotPresent;
  std::uint64_t va = 0;   // the virtual address that failed (first failing byte)
  std::uint64_t gpa = 0;  // the GPA involved, where there is one (table entry or data)
  int level = 0;          // paging level of the failing entry: 5..1, 0 when not a walk fault

  std::string describe() const;
  friend bool operator==(const Error&, const Error&) = default;
};

class Exception : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Thrown by Expected<T>::value() on an error: lets tools treat a failed read as fatal in one line.
class ReadFailure : public Exception {
 public:
  explicit ReadFailure(const Error& error) : Exception(error.describe()), error_(error) {}
  const Error& error() const { return error_; }

 private:
  Error error_;
};

template <class T>
class [[nodiscard]] Expected {
 public:
  Expected(T value) : value_(std::move(value)), ok_(true) {}  // NOLINT: implicit by design
  Expected(Error error) : error_(error), ok_(false) {}        // NOLINT: implicit by design

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }
  const T& value() const& {
    if (!ok_) throw ReadFailure(error_);
    return value_;
  }
  T&& value() && {
    if (!ok_) throw ReadFailure(error_);
    return std::move(value_);
  }
  const T& operator*() const { return value_; }
  const T* operator->() const { return &value_; }

 private:
  T value_{};
  Error error_{};
  bool ok_;
};

template <>
class [[nodiscard]] Expected<void> {
 public:
  Expected() = default;
  Expected(Error error) : error_(error), ok_(false) {}  // NOLINT: implicit by design

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }
  void value() const {
    if (!ok_) throw ReadFailure(error_);
  }

 private:
  Error error_{};
  bool ok_ = true;
};

using Status = Expected<void>;

}  // namespace imee
