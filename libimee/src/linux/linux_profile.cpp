#include "imee/linux_profile.hpp"

#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <utility>
#include <vector>

#include "imee/error.hpp"
#include "imee/kernel_types.hpp"
#include "imee/symbols.hpp"

namespace imee {

namespace {

// Symbols the Linux layer and the tools use. _text is the origin of every offset.
constexpr const char* kProfileSymbols[] = {
    "_text",        "_etext",       "entry_SYSCALL_64", "init_task",
    "init_top_pgt", "linux_banner", "page_offset_base", "sys_call_table",
    "init_pid_ns",  "init_cred",    "modules",
};

// One table maps JSON keys to layout fields, for building, saving and loading alike.
struct LayoutField {
  const char* key;  // "type.member", or "sizeof(type)"
  std::uint64_t LinuxLayout::*field;
};
constexpr LayoutField kLayoutFields[] = {
    {"task_struct.tasks", &LinuxLayout::task_tasks},
    {"task_struct.pid", &LinuxLayout::task_pid},
    {"task_struct.tgid", &LinuxLayout::task_tgid},
    {"task_struct.comm", &LinuxLayout::task_comm},
    {"sizeof(task_struct.comm)", &LinuxLayout::comm_size},
    {"task_struct.real_parent", &LinuxLayout::task_real_parent},
    {"task_struct.cred", &LinuxLayout::task_cred},
    {"task_struct.real_cred", &LinuxLayout::task_real_cred},
    {"task_struct.mm", &LinuxLayout::task_mm},
    {"mm_struct.pgd", &LinuxLayout::mm_pgd},
    {"cred.uid", &LinuxLayout::cred_uid},
    {"cred.gid", &LinuxLayout::cred_gid},
    {"cred.suid", &LinuxLayout::cred_suid},
    {"cred.sgid", &LinuxLayout::cred_sgid},
    {"cred.euid", &LinuxLayout::cred_euid},
    {"cred.egid", &LinuxLayout::cred_egid},
    {"cred.fsuid", &LinuxLayout::cred_fsuid},
    {"cred.fsgid", &LinuxLayout::cred_fsgid},
    {"cred.cap_inheritable", &LinuxLayout::cred_cap_inheritable},
    {"cred.cap_permitted", &LinuxLayout::cred_cap_permitted},
    {"cred.cap_effective", &LinuxLayout::cred_cap_effective},
    {"cred.cap_bset", &LinuxLayout::cred_cap_bset},
    {"cred.cap_ambient", &LinuxLayout::cred_cap_ambient},
    {"sizeof(kernel_cap_t)", &LinuxLayout::cap_size},
    {"sizeof(cred)", &LinuxLayout::cred_size},
    {"pid_namespace.idr", &LinuxLayout::pidns_idr},
    {"idr.idr_rt", &LinuxLayout::idr_rt},
    {"xarray.xa_head", &LinuxLayout::xarray_head},
    {"xa_node.shift", &LinuxLayout::xa_node_shift},
    {"xa_node.slots", &LinuxLayout::xa_node_slots},
    {"sizeof(xa_node.slots)", &LinuxLayout::xa_slots_size},
    {"pid.tasks", &LinuxLayout::pid_tasks},
    {"pid.numbers", &LinuxLayout::pid_numbers},
    {"upid.nr", &LinuxLayout::upid_nr},
    {"task_struct.pid_links", &LinuxLayout::task_pid_links},
    {"task_struct.signal", &LinuxLayout::task_signal},
    {"signal_struct.thread_head", &LinuxLayout::signal_thread_head},
    {"task_struct.thread_node", &LinuxLayout::task_thread_node},
    {"cred.usage", &LinuxLayout::cred_usage},
    {"sizeof(cred.usage)", &LinuxLayout::cred_usage_size},
    {"module.list", &LinuxLayout::module_list},
    {"module.name", &LinuxLayout::module_name},
    {"sizeof(module.name)", &LinuxLayout::module_name_size},
    {"module.text_base", &LinuxLayout::module_text_base},
    {"module.text_size", &LinuxLayout::module_text_size},
    {"module.core_size", &LinuxLayout::module_core_size},
    {"module.kallsyms", &LinuxLayout::module_kallsyms},
    {"mod_kallsyms.symtab", &LinuxLayout::kallsyms_symtab},
    {"mod_kallsyms.num_symtab", &LinuxLayout::kallsyms_num_symtab},
    {"mod_kallsyms.strtab", &LinuxLayout::kallsyms_strtab},
    {"ftrace_ops.func", &LinuxLayout::ftrace_ops_func},
    {"ftrace_ops.next", &LinuxLayout::ftrace_ops_next},
    {"ftrace_ops.flags", &LinuxLayout::ftrace_ops_flags},
    {"ftrace_ops.trampoline", &LinuxLayout::ftrace_ops_trampoline},
    {"ftrace_ops.func_hash", &LinuxLayout::ftrace_ops_func_hash},
    {"ftrace_ops_hash.filter_hash", &LinuxLayout::ftrace_ops_hash_filter},
    {"ftrace_hash.size_bits", &LinuxLayout::ftrace_hash_size_bits},
    {"ftrace_hash.buckets", &LinuxLayout::ftrace_hash_buckets},
    {"ftrace_func_entry.ip", &LinuxLayout::ftrace_func_entry_ip},
    {"kprobe.hlist", &LinuxLayout::kprobe_hlist},
    {"kprobe.list", &LinuxLayout::kprobe_list},
    {"kprobe.addr", &LinuxLayout::kprobe_addr},
    {"kprobe.pre_handler", &LinuxLayout::kprobe_pre_handler},
    {"kprobe.post_handler", &LinuxLayout::kprobe_post_handler},
};

// A module's core text and whole core: struct module_layout core_layout (to 6.3), or
// struct module_memory mem[MOD_MEM_NUM_TYPES] with mem[MOD_TEXT = 0] (6.4 on).
std::optional<std::uint64_t> module_field(const KernelTypes& types, const std::string& key) {
  if (auto core = types.member("module", "core_layout")) {
    const char* inner = key == "module.text_base"   ? "base"
                        : key == "module.text_size" ? "text_size"
                                                    : "size";
    if (auto m = types.member("module_layout", inner)) return core->offset + m->offset;
    return std::nullopt;
  }
  if (auto mem = types.member("module", "mem")) {
    // module_memory.size of MOD_TEXT: its text; the whole core is not one range there, so the
    // text bounds it too (ftrace_ops and such are attributed by their functions).
    const char* inner = key == "module.text_base" ? "base" : "size";
    if (auto m = types.member("module_memory", inner)) return mem->offset + m->offset;
  }
  return std::nullopt;
}

std::uint64_t from_btf(const KernelTypes& types, const std::string& key) {
  if (key == "module.text_base" || key == "module.text_size" || key == "module.core_size") {
    if (auto v = module_field(types, key)) return *v;
    throw Exception("kernel BTF lacks " + key + " (neither module.core_layout nor module.mem)");
  }
  if (key.starts_with("sizeof(")) {
    const std::string inner = key.substr(7, key.size() - 8);
    const auto dot = inner.find('.');
    std::optional<std::uint64_t> size;
    if (dot == std::string::npos) {
      size = types.type_size(inner);
    } else if (auto m = types.member(inner.substr(0, dot), inner.substr(dot + 1))) {
      size = m->size;
    }
    if (!size) throw Exception("kernel BTF lacks " + key);
    return *size;
  }
  const auto dot = key.find('.');
  auto m = types.member(key.substr(0, dot), key.substr(dot + 1));
  if (!m) throw Exception("kernel BTF lacks " + key);
  return m->offset;
}

void check_layout(const LinuxLayout& l, const std::string& origin) {
  // Sizes the readers depend on: ids are 32-bit, capability sets 64-bit, comm a short array.
  if (l.cap_size != 8)
    throw Exception(origin + ": unsupported kernel_cap_t size " + std::to_string(l.cap_size));
  if (l.comm_size == 0 || l.comm_size > 64) throw Exception(origin + ": implausible comm size");
  if (l.cred_usage_size != 4 && l.cred_usage_size != 8)
    throw Exception(origin + ": unsupported cred.usage size " + std::to_string(l.cred_usage_size));
  for (const LayoutField& f : kLayoutFields)
    if (l.*f.field > (1u << 16)) throw Exception(origin + ": implausible offset for " + f.key);
}

// A non-negative integer, refusing floats (converting 1e82 to an integer is undefined) and
// negative numbers alike.
std::uint64_t unsigned_at(const nlohmann::json& j, const std::string& bad) {
  if (!j.is_number_unsigned())
    throw Exception(bad + "expected a non-negative integer, got " + j.dump());
  return j.get<std::uint64_t>();
}

}  // namespace

LinuxProfile LinuxProfile::build(const std::string& btf_source, const std::string& symbols_path) {
  const SymbolTable symbols = SymbolTable::load(symbols_path);
  LinuxProfile p;
  p.symbols_path = symbols_path;
  const auto text = symbols.find("_text");
  if (!text) throw Exception(symbols_path + ": no _text symbol; is this a kernel symbol list?");
  // sys_call_table as the image links it: the handlers the kernel's own image puts there.
  std::vector<KernelTypes::ImageRange> ranges;
  const auto table_at = symbols.find("sys_call_table");
  const auto table_end = table_at ? symbols.next_address_after(*table_at) : std::nullopt;
  if (table_at && table_end && *table_end - *table_at <= 8 * 4096)
    ranges.push_back({*table_at - *text, *table_end - *table_at});
  const KernelTypes types = KernelTypes::load(btf_source, ranges);
  for (const char* name : kProfileSymbols) {
    const auto addr = symbols.find(name);
    if (!addr) throw Exception(symbols_path + ": symbol '" + name + "' is missing");
    p.symbols[name] = *addr - *text;
  }
  // The banner at linux_banner's offset ties the image to the symbol list: both must come from
  // one build. Raw BTF carries no banner; the kernel is then located by "Linux version ".
  p.banner = types.banner_at(p.symbols["linux_banner"]);
  if (p.banner.empty() && !types.banners().empty())
    throw Exception(btf_source + " and " + symbols_path +
                    " are not from the same kernel build (no banner at linux_banner's offset)");
  const std::uint64_t table = *symbols.find("sys_call_table");
  const auto next = symbols.next_address_after(table);
  if (!next) throw Exception(symbols_path + ": cannot bound sys_call_table (no symbol after it)");
  p.syscall_slots = (*next - table) / 8;
  if (!ranges.empty() && !types.image_range(0).empty()) {
    // Link-time addresses: the image's _text is its first PT_LOAD's address, 0xffffffff81000000
    // on x86-64 (every KASLR boot adds its slide to all of them).
    const std::vector<std::uint8_t>& raw = types.image_range(0);
    const std::uint64_t link_text = 0xffffffff81000000ull;
    for (std::size_t i = 0; i + 8 <= raw.size(); i += 8) {
      std::uint64_t v = 0;
      for (int b = 7; b >= 0; --b) v = v << 8 | raw[i + b];
      p.syscall_handlers.push_back(v >= link_text && v - link_text < (1ull << 30) ? v - link_text
                                                                                  : 0);
    }
    while (!p.syscall_handlers.empty() && p.syscall_handlers.back() == 0)
      p.syscall_handlers.pop_back();
  }
  for (const LayoutField& f : kLayoutFields) p.layout.*f.field = from_btf(types, f.key);
  check_layout(p.layout, btf_source);
  return p;
}

void LinuxProfile::save(const std::string& path) const {
  nlohmann::ordered_json j;
  j["format"] = "imee-linux-profile";
  j["version"] = kFormatVersion;
  j["banner"] = banner;
  j["symbols_path"] = symbols_path;
  j["syscall_slots"] = syscall_slots;
  j["syscall_handlers"] = syscall_handlers;
  for (const auto& [name, offset] : symbols) j["symbols"][name] = offset;
  for (const LayoutField& f : kLayoutFields) j["layout"][f.key] = layout.*f.field;
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    if (!out) throw Exception(path + ": cannot write profile");
    out << j.dump(1) << '\n';
    if (!out.flush()) throw Exception(path + ": cannot write profile");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw Exception(path + ": cannot write profile");
}

LinuxProfile LinuxProfile::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Exception(path + ": cannot open profile");
  const std::string bad = path + ": not a valid ImEE Linux profile: ";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Exception(bad + e.what());
  }
  try {
    if (j.value("format", "") != "imee-linux-profile") throw Exception(bad + "missing format tag");
    if (unsigned_at(j.at("version"), bad) != kFormatVersion)
      throw Exception(bad + "format version " + j.at("version").dump() + ", this build reads " +
                      std::to_string(kFormatVersion) + " (rebuild the profile)");
    LinuxProfile p;
    p.banner = j.at("banner").get<std::string>();
    p.symbols_path = j.at("symbols_path").get<std::string>();
    p.syscall_slots = unsigned_at(j.at("syscall_slots"), bad);
    for (const auto& h : j.at("syscall_handlers"))
      p.syscall_handlers.push_back(unsigned_at(h, bad));
    if (p.syscall_handlers.size() > p.syscall_slots)
      throw Exception(bad + "more syscall_handlers than syscall_slots");
    for (const char* name : kProfileSymbols)
      p.symbols[name] = unsigned_at(j.at("symbols").at(name), bad);
    for (const LayoutField& f : kLayoutFields)
      p.layout.*f.field = unsigned_at(j.at("layout").at(f.key), bad);
    if (p.syscall_slots == 0 || p.syscall_slots > 4096)
      throw Exception(bad + "implausible syscall_slots");
    check_layout(p.layout, path);
    return p;
  } catch (const nlohmann::json::exception& e) {
    throw Exception(bad + e.what());
  }
}

std::uint64_t LinuxProfile::symbol_offset(std::string_view name) const {
  const auto it = symbols.find(name);
  if (it == symbols.end()) throw Exception("profile has no symbol '" + std::string(name) + "'");
  return it->second;
}

}  // namespace imee
