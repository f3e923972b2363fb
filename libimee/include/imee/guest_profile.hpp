// Zero-configuration profiles: a kernel's profile built from guest memory alone (its .BTF and
// its kallsyms tables, both loaded with the kernel), cached per kernel build.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "imee/address_space.hpp"
#include "imee/guest_ram.hpp"
#include "imee/linux_profile.hpp"
#include "imee/symbols.hpp"

namespace imee {

// A linux_banner in guest RAM: "Linux version <release> ...\n" and its terminating NUL.
struct GuestBanner {
  std::uint64_t gpa = 0;
  std::string text;  // without the trailing newline, as LinuxProfile::banner
};
std::vector<GuestBanner> find_guest_banners(const GuestRam& ram);

// What a profile built from guest memory came from.
struct MemoryProfile {
  LinuxProfile profile;  // all_symbols set: the decoded kallsyms at this boot's addresses
  std::uint64_t text_gpa = 0;
  std::uint64_t text_va = 0;  // this boot's _text, from kallsyms
  std::string how;            // one line for people: where the BTF and kallsyms were found
};

// Builds the profile of the kernel whose banner is `banner` from guest memory: the kallsyms
// tables are found by their structure in the image's read-only data and decoded, the BTF is
// read between __start_BTF and __stop_BTF (or found by its header). Throws imee::Exception
// saying which of the two is missing and what to pass instead.
MemoryProfile build_profile_from_memory(const GuestRam& ram, const GuestBanner& banner);

// $XDG_CACHE_HOME/imee, else $HOME/.cache/imee ("" if neither variable is set).
std::string default_profile_cache();

struct GuestProfile {
  LinuxProfile profile;
  bool from_cache = false;
  std::string cache_path;             // the cache entry (.profile) it came from or went to
  std::string how;                    // cache hit / built from memory, and where it is cached
  std::vector<std::string> warnings;  // e.g. an unwritable cache directory
};

// The profile of the kernel running in `ram`: from `cache_dir` when it holds this build (same
// banner and same BTF hash), else built from guest memory and saved there ("" = do not cache).
// `exclude_text_gpa`: candidates already tried and rejected by the caller (e.g. a stale image).
// A cache entry is two binary files, <stem>.profile (LinuxProfile::save_binary, its
// symbols_path naming the other) and <stem>.symbols (SymbolTable::save_binary).
GuestProfile guest_profile(const GuestRam& ram, const std::string& cache_dir,
                           const std::vector<std::uint64_t>& exclude_banner_gpas = {});

// Whether `profile` (one built from guest memory) describes the kernel image loaded at
// `text_gpa` in `ram`: its banner at linux_banner's offset, and the BTF at its offset hashing
// to the profile's btf_hash (same banner, another build: kOtherBuild).
enum class ProfileFit { kFits, kNoBanner, kOtherBuild };
ProfileFit profile_fits(const GuestRam& ram, const LinuxProfile& profile, std::uint64_t text_gpa);

// Where a target's kernel was found the last time (the cache keeps one record per target, named
// after its RAM file): which cached profile, and where that boot put the kernel. A hint only:
// the caller checks it against guest memory (profile_fits, the page tables, the task list) and
// scans as usual when it no longer holds (another boot, another kernel).
struct RememberedKernel {
  std::string profile_path;
  std::uint64_t text_gpa = 0, text_va = 0;
  PagingMode mode = PagingMode::k4Level;
  friend bool operator==(const RememberedKernel&, const RememberedKernel&) = default;
};
std::optional<RememberedKernel> recall_kernel(const std::string& cache_dir, const GuestRam& ram);
// Best effort: an unwritable cache only costs the next run its scan.
void remember_kernel(const std::string& cache_dir, const GuestRam& ram,
                     const RememberedKernel& kernel);

}  // namespace imee
