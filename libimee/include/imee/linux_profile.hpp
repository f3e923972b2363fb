// What libimee needs to know about one Linux kernel build: where a few symbols are (relative to
// _text, so one profile serves every KASLR boot of that build) and the struct offsets it reads.
// Built once from the kernel's BTF and a symbol list, then cached as a small JSON file.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace imee {

// Byte offsets (and the sizes that vary between kernel versions) from BTF.
struct LinuxLayout {
  std::uint64_t task_tasks, task_pid, task_tgid, task_comm, comm_size, task_real_parent, task_cred,
      task_real_cred, task_mm;
  std::uint64_t mm_pgd;
  std::uint64_t cred_uid, cred_gid, cred_suid, cred_sgid, cred_euid, cred_egid, cred_fsuid,
      cred_fsgid;
  std::uint64_t cred_cap_inheritable, cred_cap_permitted, cred_cap_effective, cred_cap_bset,
      cred_cap_ambient, cap_size;
  std::uint64_t cred_size;
};

struct LinuxProfile {
  static constexpr int kFormatVersion = 1;

  std::string banner;  // "Linux version ..." of the build, or empty when the BTF came without it
  std::map<std::string, std::uint64_t, std::less<>> symbols;  // offset from _text
  std::uint64_t syscall_slots = 0;  // sys_call_table size bound, from the next symbol's address
  LinuxLayout layout{};
  std::string symbols_path;  // the full symbol list it was built from (for address resolution)

  // `btf_source`: vmlinuz, vmlinux or raw BTF. `symbols_path`: a kallsyms dump or System.map.
  static LinuxProfile build(const std::string& btf_source, const std::string& symbols_path);
  // Loads a cached profile; throws imee::Exception on a missing, malformed or incomplete file.
  static LinuxProfile load(const std::string& path);
  void save(const std::string& path) const;

  std::uint64_t symbol_offset(std::string_view name) const;  // throws if absent
};

}  // namespace imee
