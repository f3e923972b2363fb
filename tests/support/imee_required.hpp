// Whether this machine can run an ImEE backend: "kvm" (a usable /dev/kvm) or "kernel" (the
// patched kvm-intel). Where it cannot, IMEE_NEED_BACKEND skips the test and says why, unless
// the environment requires the ImEE backends (IMEE_REQUIRE_KERNEL=1, set in the VT-x lab): there
// a missing backend fails the test instead.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/imee.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <string_view>

#include "imee/kernel_backend.hpp"
#include "imee/kvm_backend.hpp"

namespace imee::test {

inline bool imee_required() {
  const char* v = std::getenv("IMEE_REQUIRE_KERNEL");
  return v != nullptr && std::string_view(v) != "0";
}

// Empty if `backend` can run here, else why not.
inline std::string imee_missing(std::string_view backend) {
  std::string why;
  const bool ok =
      backend == "kernel" ? KernelBackend::available(&why) : KvmBackend::available(&why);
  return ok ? std::string() : why;
}

// The kernel ImEE gives its walks copies of the target's page-table pages in batch mode
// (IMEE_FEATURE_WALK_COPIES: AMD, whose nested walks write every entry they read).
inline bool kernel_walk_copies() {
  const int kvm = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) return false;
  imee_query q{};
  const bool yes = ::ioctl(kvm, IMEE_QUERY, &q) == 0 && q.magic == IMEE_MAGIC &&
                   (q.features & IMEE_FEATURE_WALK_COPIES) != 0;
  ::close(kvm);
  return yes;
}

}  // namespace imee::test

#define IMEE_NEED_BACKEND(backend)                                                             \
  do {                                                                                         \
    if (const std::string imee_why = ::imee::test::imee_missing(backend); !imee_why.empty()) { \
      if (::imee::test::imee_required()) FAIL() << (backend) << " backend: " << imee_why;      \
      GTEST_SKIP() << "this machine cannot run the " << (backend) << " backend ("              \
                   << ((std::string_view(backend) == "kernel")                                 \
                           ? "the patched kvm-intel: tests/vtx-lab runs it"                    \
                           : "a usable /dev/kvm")                                              \
                   << "): " << imee_why;                                                       \
    }                                                                                          \
  } while (0)
