// What libimee needs to know about one Linux kernel build: where a few symbols are (relative to
// _text, so one profile serves every KASLR boot of that build) and the struct offsets it reads.
// Built once from the kernel's BTF and a symbol list, then cached as a small JSON file.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace imee {

class KernelTypes;
class SymbolTable;

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
  // The pid namespace's IDR (an xarray) of struct pid, and the tasks attached to each pid.
  std::uint64_t pidns_idr, idr_rt, xarray_head, xa_node_shift, xa_node_slots, xa_slots_size;
  std::uint64_t pid_tasks, pid_numbers, upid_nr, task_pid_links;
  // Thread groups: task->signal->thread_head lists every thread through task->thread_node.
  std::uint64_t task_signal, signal_thread_head, task_thread_node;
  std::uint64_t cred_usage, cred_usage_size;
  // Loaded modules (the `modules` list): name, core text range, symbols (struct mod_kallsyms).
  std::uint64_t module_list, module_name, module_name_size, module_text_base, module_text_size,
      module_core_size, module_kallsyms, kallsyms_symtab, kallsyms_num_symtab, kallsyms_strtab;
  // ftrace_ops (ftrace_ops_list, chained by next) and their filter hashes.
  std::uint64_t ftrace_ops_func, ftrace_ops_next, ftrace_ops_flags, ftrace_ops_trampoline,
      ftrace_ops_func_hash, ftrace_ops_hash_filter,
      // struct kprobe in kprobe_table's hash lists (and an aggregate's list of its probes).
      kprobe_hlist, kprobe_list, kprobe_addr, kprobe_pre_handler, kprobe_post_handler,
      ftrace_hash_size_bits, ftrace_hash_buckets, ftrace_func_entry_ip;
};

struct LinuxProfile {
  static constexpr int kFormatVersion = 2;

  std::string banner;  // "Linux version ..." of the build, or empty when the BTF came without it
  std::map<std::string, std::uint64_t, std::less<>> symbols;  // offset from _text
  std::uint64_t syscall_slots = 0;  // sys_call_table size bound, from the next symbol's address
  // sys_call_table as the kernel image links it: each handler's offset from _text (0 where the
  // entry is not in kernel text); empty when the profile was built from raw BTF (no image).
  std::vector<std::uint64_t> syscall_handlers;
  LinuxLayout layout{};
  std::string symbols_path;  // the full symbol list it was built from (for address resolution)
  // The full symbol list itself when it came with the profile (an ISF), else null: then
  // symbols_path names it.
  std::shared_ptr<const SymbolTable> all_symbols;
  // Where the kernel's .BTF is (offset from _text, bytes) and a hash of it (sampled: see
  // guest_profile.cpp), when it was read
  // from guest memory (0 otherwise): what tells one build from another beside the banner.
  std::uint64_t btf_offset = 0, btf_size = 0, btf_hash = 0;

  // `btf_source`: vmlinuz, vmlinux or raw BTF. `symbols_path`: a kallsyms dump or System.map;
  // empty: the kallsyms tables of the kernel image `btf_source` itself.
  static LinuxProfile build(const std::string& btf_source, const std::string& symbols_path);
  // From parsed types and symbols (any boot's addresses); the names are for messages.
  static LinuxProfile build(const KernelTypes& types, const SymbolTable& symbols,
                            const std::string& types_origin, const std::string& symbols_origin);
  // The same from any source of types: `member` gives a member's byte offset and size (through
  // anonymous members; nullopt for bitfields and absent members), `size` a type's size.
  struct MemberInfo {
    std::uint64_t offset = 0, size = 0;
  };
  using MemberLookup =
      std::function<std::optional<MemberInfo>(std::string_view type, std::string_view member)>;
  using SizeLookup = std::function<std::optional<std::uint64_t>(std::string_view type)>;
  static LinuxProfile build(const MemberLookup& member, const SizeLookup& size,
                            const SymbolTable& symbols, const std::string& types_origin,
                            const std::string& symbols_origin);
  // Loads a profile: ImEE JSON, its binary form or a Volatility 3 ISF (told apart by their
  // first bytes); throws imee::Exception on a missing, malformed or incomplete file.
  static LinuxProfile load(const std::string& path);
  void save(const std::string& path) const;  // ImEE JSON
  // The same fields in a compact binary form (the zero-config cache's, quick to load): magic,
  // format version, size and checksum first, so a corrupted, truncated or foreign file is
  // refused, never trusted. all_symbols is not in it: symbols_path is.
  void save_binary(const std::string& path) const;

  std::uint64_t symbol_offset(std::string_view name) const;  // throws if absent
  // The full symbol list (all_symbols, or loaded from symbols_path); throws if there is none.
  SymbolTable full_symbols() const;
};

// A hash of bytes (64-bit, not cryptographic): tells kernel builds apart in the cache, and checks
// the cache's binary files.
std::uint64_t hash_btf(std::span<const std::uint8_t> btf);

}  // namespace imee
