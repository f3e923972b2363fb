#include "imee/linux_profile.hpp"

#include <bit>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <utility>
#include <vector>

#include "checked_file.hpp"
#include "imee/error.hpp"
#include "imee/isf.hpp"
#include "imee/kallsyms.hpp"
#include "imee/kernel_types.hpp"
#include "imee/symbols.hpp"
#include "kernel_image.hpp"

namespace imee {

namespace {

constexpr std::string_view kBinaryMagic = "IMEEPROF";
constexpr std::uint32_t kBinaryVersion = 1;

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
std::optional<std::uint64_t> module_field(const LinuxProfile::MemberLookup& member,
                                          const std::string& key) {
  if (auto core = member("module", "core_layout")) {
    const char* inner = key == "module.text_base"   ? "base"
                        : key == "module.text_size" ? "text_size"
                                                    : "size";
    if (auto m = member("module_layout", inner)) return core->offset + m->offset;
    return std::nullopt;
  }
  if (auto mem = member("module", "mem")) {
    // module_memory.size of MOD_TEXT: its text; the whole core is not one range there, so the
    // text bounds it too (ftrace_ops and such are attributed by their functions).
    const char* inner = key == "module.text_base" ? "base" : "size";
    if (auto m = member("module_memory", inner)) return mem->offset + m->offset;
  }
  return std::nullopt;
}

std::uint64_t layout_value(const LinuxProfile::MemberLookup& member,
                           const LinuxProfile::SizeLookup& size_of, const std::string& key,
                           const std::string& origin) {
  if (key == "module.text_base" || key == "module.text_size" || key == "module.core_size") {
    if (auto v = module_field(member, key)) return *v;
    throw Exception(origin + " lacks " + key + " (neither module.core_layout nor module.mem)");
  }
  if (key.starts_with("sizeof(")) {
    const std::string inner = key.substr(7, key.size() - 8);
    const auto dot = inner.find('.');
    std::optional<std::uint64_t> size;
    if (dot == std::string::npos) {
      size = size_of(inner);
    } else if (auto m = member(inner.substr(0, dot), inner.substr(dot + 1))) {
      size = m->size;
    }
    if (!size) throw Exception(origin + " lacks " + key);
    return *size;
  }
  const auto dot = key.find('.');
  auto m = member(key.substr(0, dot), key.substr(dot + 1));
  if (!m) throw Exception(origin + " lacks " + key);
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

// sys_call_table's span (offset from _text, size), to read as the kernel image links it; empty
// if the symbol list cannot bound it.
std::vector<KernelTypes::ImageRange> syscall_table_range(const SymbolTable& symbols) {
  const auto text = symbols.find("_text");
  const auto at = symbols.find("sys_call_table");
  const auto end = at ? symbols.next_address_after(*at) : std::nullopt;
  if (!text || !at || !end || *at < *text || *end - *at > 8 * 4096) return {};
  return {{*at - *text, *end - *at}};
}

// The handlers the kernel's own image puts in sys_call_table, as offsets from _text (0 for an
// entry that is not in the image's text). Link-time addresses: the image's _text is its first
// PT_LOAD's address, 0xffffffff81000000 on x86-64 (every KASLR boot adds its slide to all).
std::vector<std::uint64_t> image_syscall_handlers(std::span<const std::uint8_t> raw) {
  constexpr std::uint64_t kLinkText = 0xffffffff81000000ull;
  std::vector<std::uint64_t> out;
  for (std::size_t i = 0; i + 8 <= raw.size(); i += 8) {
    std::uint64_t v = 0;
    for (int b = 7; b >= 0; --b) v = v << 8 | raw[i + b];
    out.push_back(v >= kLinkText && v - kLinkText < (1ull << 30) ? v - kLinkText : 0);
  }
  while (!out.empty() && out.back() == 0) out.pop_back();
  return out;
}

}  // namespace

LinuxProfile LinuxProfile::build(const std::string& btf_source, const std::string& symbols_path) {
  if (!symbols_path.empty()) {
    const SymbolTable symbols = SymbolTable::load(symbols_path);
    const std::vector<KernelTypes::ImageRange> table = syscall_table_range(symbols);
    const KernelTypes types = KernelTypes::load(btf_source, table);
    LinuxProfile p = build(types, symbols, btf_source, symbols_path);
    p.symbols_path = symbols_path;
    if (!table.empty()) p.syscall_handlers = image_syscall_handlers(types.image_range(0));
    return p;
  }
  // No symbol list: the image's own kallsyms tables (link-time addresses).
  const KernelImage image = read_kernel_image(btf_source, KernelImagePart::kWhole);
  const KernelTypes types = KernelTypes::from_btf(image.btf, image.btf_origin);
  const auto layout = find_kallsyms(image.loaded);
  if (!layout)
    throw Exception(btf_source +
                    ": no kallsyms tables found in the kernel image (built without "
                    "CONFIG_KALLSYMS?); give --symbols (a kallsyms dump or System.map)");
  const std::string origin = btf_source + " kallsyms";
  const SymbolTable symbols =
      SymbolTable::from_symbols(decode_kallsyms(image.loaded, *layout), origin);
  LinuxProfile p = build(types, symbols, btf_source, origin);
  for (const KernelTypes::ImageRange& r : syscall_table_range(symbols))
    if (r.text_offset <= image.loaded.size() && r.size <= image.loaded.size() - r.text_offset)
      p.syscall_handlers =
          image_syscall_handlers(std::span(image.loaded).subspan(r.text_offset, r.size));
  // The banner: find_banners knew the offsets from the ELF's segments.
  for (const KernelBanner& b : image.banners)
    if (b.text_offset == p.symbols["linux_banner"]) p.banner = b.text;
  p.all_symbols = std::make_shared<const SymbolTable>(symbols);
  return p;
}

LinuxProfile LinuxProfile::build(const KernelTypes& types, const SymbolTable& symbols,
                                 const std::string& types_origin,
                                 const std::string& symbols_origin) {
  LinuxProfile p = build(
      [&](std::string_view type, std::string_view name) -> std::optional<MemberInfo> {
        const auto m = types.member(type, name);
        if (!m) return std::nullopt;
        return MemberInfo{m->offset, m->size};
      },
      [&](std::string_view type) { return types.type_size(type); }, symbols, types_origin,
      symbols_origin);
  // The banner at linux_banner's offset ties the image to the symbol list: both must come from
  // one build. Raw BTF carries no banner; the kernel is then located by "Linux version ".
  p.banner = types.banner_at(p.symbols["linux_banner"]);
  if (p.banner.empty() && !types.banners().empty())
    throw Exception(types_origin + " and " + symbols_origin +
                    " are not from the same kernel build (no banner at linux_banner's offset)");
  return p;
}

LinuxProfile LinuxProfile::build(const MemberLookup& member, const SizeLookup& size,
                                 const SymbolTable& symbols, const std::string& types_origin,
                                 const std::string& symbols_origin) {
  LinuxProfile p;
  const auto text = symbols.find("_text");
  if (!text) throw Exception(symbols_origin + ": no _text symbol; is this a kernel symbol list?");
  for (const char* name : kProfileSymbols) {
    const auto addr = symbols.find(name);
    if (!addr) throw Exception(symbols_origin + ": symbol '" + name + "' is missing");
    p.symbols[name] = *addr - *text;
  }
  const std::uint64_t table = *symbols.find("sys_call_table");
  const auto next = symbols.next_address_after(table);
  if (!next) throw Exception(symbols_origin + ": cannot bound sys_call_table (no symbol after it)");
  p.syscall_slots = (*next - table) / 8;
  for (const LayoutField& f : kLayoutFields)
    p.layout.*f.field = layout_value(member, size, f.key, types_origin);
  check_layout(p.layout, types_origin);
  return p;
}

std::uint64_t hash_btf(std::span<const std::uint8_t> btf) {
  // 64-bit words folded with a multiply and rotate into four independent lanes (so the CPU
  // overlaps them: ~0.3 ms for a 5 MB BTF, which every cached run hashes), then the lanes, the
  // tail bytes and the length.
  constexpr std::uint64_t kMul = 0x9e3779b97f4a7c15ull;
  const auto fold = [](std::uint64_t h, std::uint64_t w) { return std::rotl((h ^ w) * kMul, 29); };
  std::uint64_t lane[4] = {0xcbf29ce484222325ull, 0x84222325cbf29ce4ull, 0x2325cbf29ce48422ull,
                           0x9ce484222325cbf2ull};
  std::size_t i = 0;
  for (; i + 32 <= btf.size(); i += 32) {
    std::uint64_t w[4];
    std::memcpy(w, btf.data() + i, 32);
    for (int l = 0; l < 4; ++l) lane[l] = fold(lane[l], w[l]);
  }
  std::uint64_t h = fold(fold(fold(lane[0], lane[1]), lane[2]), lane[3]);
  for (; i < btf.size(); ++i) h = fold(h, btf[i]);
  h ^= btf.size();
  h *= kMul;
  return h ^ (h >> 32);
}

SymbolTable LinuxProfile::full_symbols() const {
  if (all_symbols) return *all_symbols;
  if (symbols_path.empty()) throw Exception("no symbol list to resolve addresses: give --symbols");
  return SymbolTable::load(symbols_path);
}

void LinuxProfile::save(const std::string& path) const {
  nlohmann::ordered_json j;
  j["format"] = "imee-linux-profile";
  j["version"] = kFormatVersion;
  j["banner"] = banner;
  // A symbol list held only in memory (from an image's kallsyms or an ISF) goes beside the file.
  std::string list = symbols_path;
  if (list.empty() && all_symbols) {
    list = path + ".kallsyms";
    all_symbols->save(list);
  }
  j["symbols_path"] = list;
  j["syscall_slots"] = syscall_slots;
  j["syscall_handlers"] = syscall_handlers;
  for (const auto& [name, offset] : symbols) j["symbols"][name] = offset;
  for (const LayoutField& f : kLayoutFields) j["layout"][f.key] = layout.*f.field;
  if (btf_size != 0) j["btf"] = {{"offset", btf_offset}, {"size", btf_size}, {"hash", btf_hash}};
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    if (!out) throw Exception(path + ": cannot write profile");
    out << j.dump(1) << '\n';
    if (!out.flush()) throw Exception(path + ": cannot write profile");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw Exception(path + ": cannot write profile");
}

void LinuxProfile::save_binary(const std::string& path) const {
  ByteWriter w;
  w.str(banner);
  w.str(symbols_path);
  w.u64(syscall_slots);
  w.u32(static_cast<std::uint32_t>(syscall_handlers.size()));
  for (std::uint64_t h : syscall_handlers) w.u64(h);
  w.u32(std::size(kProfileSymbols));
  for (const char* name : kProfileSymbols) w.u64(symbol_offset(name));
  w.u32(std::size(kLayoutFields));
  for (const LayoutField& f : kLayoutFields) w.u64(layout.*f.field);
  w.u64(btf_offset);
  w.u64(btf_size);
  w.u64(btf_hash);
  write_checked_file(path, kBinaryMagic, kBinaryVersion, w.bytes());
}

namespace {

// Every check load() makes of a JSON profile, on the binary form.
LinuxProfile profile_from_binary(std::string_view file, const std::string& path) {
  const std::string bad = path + ": not a valid ImEE Linux profile";
  ByteReader r(checked_payload(file, kBinaryMagic, kBinaryVersion, bad), bad);
  LinuxProfile p;
  p.banner = r.str(4096);
  p.symbols_path = r.str(4096);
  p.syscall_slots = r.u64();
  if (p.syscall_slots == 0 || p.syscall_slots > 4096) r.fail("implausible syscall_slots");
  const std::uint32_t handlers = r.u32();
  if (handlers > p.syscall_slots) r.fail("more syscall_handlers than syscall_slots");
  for (std::uint32_t i = 0; i < handlers; ++i) p.syscall_handlers.push_back(r.u64());
  if (r.u32() != std::size(kProfileSymbols)) r.fail("another set of symbols");
  for (const char* name : kProfileSymbols) p.symbols[name] = r.u64();
  if (r.u32() != std::size(kLayoutFields)) r.fail("another set of layout fields");
  for (const LayoutField& f : kLayoutFields) p.layout.*f.field = r.u64();
  p.btf_offset = r.u64();
  p.btf_size = r.u64();
  p.btf_hash = r.u64();
  if (!r.at_end()) r.fail("trailing bytes");
  check_layout(p.layout, path);
  return p;
}

}  // namespace

LinuxProfile LinuxProfile::load(const std::string& path) {
  std::string text;
  try {
    text = read_maybe_xz(path);
  } catch (const Exception& e) {
    throw Exception(path + ": cannot open profile (" + e.what() + ")");
  }
  if (has_magic(text, kBinaryMagic)) return profile_from_binary(text, path);
  const std::string bad = path + ": not a valid ImEE Linux profile: ";
  nlohmann::json j;
  std::vector<std::string> symbol_order;
  try {
    j = parse_json_keeping_symbol_order(text, &symbol_order);
  } catch (const nlohmann::json::exception& e) {
    throw Exception(bad + e.what());
  }
  if (is_isf(j)) return profile_from_isf(j, path, symbol_order);
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
    if (j.contains("btf")) {
      const nlohmann::json& btf = j.at("btf");
      p.btf_offset = unsigned_at(btf.at("offset"), bad);
      p.btf_size = unsigned_at(btf.at("size"), bad);
      p.btf_hash = unsigned_at(btf.at("hash"), bad);
    }
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
