// A session on a live Linux target: a backend, the kernel's profile, and where this boot put the
// kernel (KASLR slide, page-table root, paging mode) found from guest memory alone.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "imee/agent_backend.hpp"
#include "imee/backend.hpp"
#include "imee/linux_profile.hpp"
#include "imee/target.hpp"

namespace imee {

struct KernelLocation {
  std::uint64_t text_va = 0;           // where _text is in this boot (KASLR)
  std::uint64_t text_gpa = 0;          // where the kernel image was loaded physically
  AddressSpace space;                  // the kernel's page tables (init_top_pgt) and paging mode
  std::uint64_t page_offset_base = 0;  // start of the direct map of physical memory
};

// Finds the kernel in guest RAM: the banner at a 2 MiB-aligned load address plus its offset
// from _text gives the image's GPA; init_top_pgt's GPA follows, and the paging mode and virtual
// slide are the ones under which _text translates back to that GPA. Throws if not found.
KernelLocation locate_kernel(MemoryBackend& backend, const LinuxProfile& profile);

class LinuxSession {
 public:
  // Opens the target, finds its kernel (a software walk over its RAM), builds backend
  // `backend_name` (see make_backend: "auto", "soft", "kvm", "kernel") with the ImEE's agent at
  // agent_home(), and returns a session that owns all of it. What tools, imee-bench and the
  // live tests open.
  static std::unique_ptr<LinuxSession> open(const TargetSpec& spec, LinuxProfile profile,
                                            const std::string& backend_name = "auto");
  // The same with no profile given: the kernel's profile comes from guest memory itself (its
  // BTF and kallsyms tables, guest_profile.hpp), from `cache_dir` when that holds this build,
  // and is saved there otherwise ("" = no cache; default_profile_cache() is the usual one).
  static std::unique_ptr<LinuxSession> open_zero_config(const TargetSpec& spec,
                                                        const std::string& backend_name,
                                                        const std::string& cache_dir);

  // A session over a backend the caller owns (which must outlive it); the kernel is located
  // through it, or given (e.g. found through a SoftBackend over the same RAM).
  LinuxSession(MemoryBackend& backend, LinuxProfile profile);
  LinuxSession(MemoryBackend& backend, LinuxProfile profile, const KernelLocation& kernel);
  LinuxSession(const LinuxSession&) = delete;
  LinuxSession& operator=(const LinuxSession&) = delete;

  MemoryBackend& backend() const { return *backend_; }
  const Target* target() const { return target_.get(); }                 // when opened by open()
  const std::string& backend_choice() const { return backend_choice_; }  // why auto chose it
  const LinuxProfile& profile() const { return profile_; }
  const KernelLocation& kernel() const { return kernel_; }
  // Where the profile came from (open_zero_config: cache hit or built from memory, and how long
  // it took; "" otherwise), and what went wrong on the way without stopping it.
  const std::string& profile_origin() const { return profile_origin_; }
  const std::vector<std::string>& profile_warnings() const { return profile_warnings_; }
  const AddressSpace& kernel_space() const { return kernel_.space; }

  std::uint64_t symbol(std::string_view name) const;  // this boot's VA
  // The address space of a process, from its mm_struct's pgd (a direct-map VA).
  AddressSpace user_space(std::uint64_t pgd_va) const;
  // Where an ImEE's agent lives: the page of the kernel's syscall entry (entry_SYSCALL_64, what
  // MSR_LSTAR points to), mapped executable in every address space, even under KPTI.
  AgentHome agent_home() const;

  // Kernel-space reads. Each walks the guest's current page tables.
  Status read(std::uint64_t va, std::span<std::byte> dst) {
    return backend_->read(kernel_.space, va, dst);
  }
  Expected<std::vector<std::byte>> read(std::uint64_t va, std::size_t len);
  Expected<std::uint32_t> u32(std::uint64_t va);
  Expected<std::uint64_t> u64(std::uint64_t va);
  Expected<std::uint64_t> pointer(std::uint64_t va) { return u64(va); }
  // A NUL-terminated string of at most max_len bytes (without the NUL).
  Expected<std::string> cstring(std::uint64_t va, std::size_t max_len);
  void read_batch(std::span<ReadRequest> requests) { backend_->read_batch(requests); }

 private:
  void adopt(std::unique_ptr<Target> target, const std::string& backend_name);
  // Owned by a session from open(), destroyed backend first.
  std::unique_ptr<Target> target_;
  std::unique_ptr<MemoryBackend> owned_backend_;
  std::string backend_choice_;
  MemoryBackend* backend_;
  LinuxProfile profile_;
  KernelLocation kernel_;
  std::string profile_origin_;
  std::vector<std::string> profile_warnings_;
};

}  // namespace imee
