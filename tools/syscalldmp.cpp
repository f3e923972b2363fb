// syscalldmp: every entry of the guest's sys_call_table, checked against the handler the kernel's
// own image puts there; the owner (module and symbol) of every address outside core kernel text;
// whether each handler's entry is traced or redirected, and by whom; and whether the kernel
// dispatches system calls through the table at all (imee::syscall_dispatch).
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <map>
#include <set>
#include <vector>

#include "common/tool.hpp"
#include "imee/linux.hpp"

namespace {

using nlohmann::ordered_json;

std::string hex(std::uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

ordered_json owner_json(const imee::AddressOwner& o) {
  static const char* const kinds[] = {"kernel_text", "module", "unknown"};
  return {{"kind", kinds[static_cast<int>(o.kind)]},
          {"module", o.module.empty() ? ordered_json() : ordered_json(o.module)},
          {"symbol", o.symbol.empty() ? ordered_json() : ordered_json(o.symbol)},
          {"offset", o.offset}};
}

const char* state_name(imee::EntryCheck::State s) {
  switch (s) {
    case imee::EntryCheck::State::clean:
      return "clean";
    case imee::EntryCheck::State::traced:
      return "traced";
    case imee::EntryCheck::State::redirected:
      return "redirected";
    case imee::EntryCheck::State::breakpoint:
      return "breakpoint";
    case imee::EntryCheck::State::unreadable:
      return "unreadable";
  }
  return "?";
}

}  // namespace

int main(int argc, char** argv) {
  const imee::tools::ToolInfo info{
      "syscalldmp",
      "Dumps the guest's system call table: index, handler address, who owns it, and flags:\n"
      "  HOOKED    the entry points outside core kernel text [_text, _etext);\n"
      "  TAMPERED  it points inside kernel text, but not at the handler the kernel's own image\n"
      "            puts at that index (sys_call_table's initial contents in --kernel's image,\n"
      "            moved by this boot's KASLR slide; kept in the profile);\n"
      "  TRACED / REDIRECTED / BREAKPOINT   what runs at the entry of that image handler is not\n"
      "            the untraced kernel's: its ftrace call site (after an endbr64) holds a call\n"
      "            (ftrace) or a jmp (inline hook) instead of the 5-byte nop, or an int3 "
      "(kprobe).\n"
      "            A call is attributed to the ftrace_ops whose trampoline it calls or whose\n"
      "            filter names the site, and each ops to the owner of its callback (IPMODIFY\n"
      "            ops can redirect the call); a kprobe at the site (kprobe_table) to the owner "
      "of\n"
      "            its pre_handler.\n"
      "Every address outside core kernel text is named by its owner: the module (the guest's\n"
      "module list: name and core text range) and the module's own symbol (its kallsyms).\n"
      "Each flagged entry is a finding (exit status 3).\n"
      "Symbols come from --symbols, or from the list the profile was built from; they may come\n"
      "from any boot of the same kernel build (the KASLR slide is applied).\n"
      "After the table it says whether the kernel dispatches system calls through it at all:\n"
      "kernels with the 2024 branch-history-injection fix (6.9 and later, and backports such\n"
      "as Debian's 6.1.192) call x64_sys_call(), a switch, not the table's entries, so a clean\n"
      "table proves nothing there (tampered entries are still flagged; the entry checks are what\n"
      "matters there). Decided from the guest, not its version: whether do_syscall_64's code in\n"
      "guest memory references sys_call_table or calls x64_sys_call (code that references\n"
      "neither is taken as not through the table); only where that code cannot be read,\n"
      "whether the symbol list has x64_sys_call. Both of the latter are reported as not\n"
      "confirmed. JSON: \"dispatch\": {\"through_sys_call_table\", \"via\",\n"
      "\"confirmed_from_code\", \"evidence\"}.",
      ""};
  return imee::tools::run_tool(argc, argv, info, [&](imee::tools::Context& ctx) {
    imee::LinuxSession& s = *ctx.session;
    const imee::SymbolTable symbols = ctx.boot_symbols();
    const std::vector<std::uint64_t> table = imee::syscall_table(s);
    const imee::SyscallDispatch dispatch = imee::syscall_dispatch(s, symbols);
    const std::vector<imee::KernelModule> modules = imee::kernel_modules(s);
    const std::vector<imee::FtraceOps> ops = imee::ftrace_ops_list(s, symbols);
    const std::vector<imee::Kprobe> kprobes = imee::kprobe_list(s, symbols);

    const std::uint64_t text_begin = s.symbol("_text"), text_end = s.symbol("_etext");
    const std::vector<std::uint64_t>& image = s.profile().syscall_handlers;
    auto expected_at = [&](std::size_t nr) -> std::uint64_t {
      return nr < image.size() && image[nr] ? text_begin + image[nr] : 0;
    };
    // What runs: the entry of each image handler (and of each table entry in kernel text).
    std::vector<std::uint64_t> functions;
    for (std::size_t nr = 0; nr < table.size(); ++nr) {
      if (const std::uint64_t e = expected_at(nr)) functions.push_back(e);
      if (table[nr] >= text_begin && table[nr] < text_end) functions.push_back(table[nr]);
    }
    std::sort(functions.begin(), functions.end());
    functions.erase(std::unique(functions.begin(), functions.end()), functions.end());
    std::map<std::uint64_t, imee::EntryCheck> entry;
    for (const imee::EntryCheck& c : imee::check_entries(s, functions)) entry[c.function] = c;

    auto hooks_of = [&](const imee::EntryCheck& c) {
      ordered_json out = ordered_json::array();
      std::string text;
      for (const imee::FtraceOps& o : ops) {
        const bool by_trampoline = c.target != 0 && o.trampoline == c.target;
        if (!by_trampoline && std::find(o.filter.begin(), o.filter.end(), c.site) == o.filter.end())
          continue;
        const imee::AddressOwner owner = imee::address_owner(s, symbols, modules, o.func);
        const bool ipmodify = (o.flags & imee::kFtraceOpsFlIpModify) != 0;
        out.push_back({{"ftrace_ops", o.address},
                       {"func", o.func},
                       {"trampoline", o.trampoline},
                       {"calls_its_trampoline", by_trampoline},
                       {"owner", owner_json(owner)},
                       {"ipmodify", ipmodify}});
        text += " ftrace_ops " + hex(o.address) + (by_trampoline ? " (its trampoline)" : "") +
                " func " + owner.describe() + (ipmodify ? " IPMODIFY" : "");
      }
      // kprobes at the site (on ftrace call sites they run through kprobes' own ftrace_ops,
      // whose callback is core kernel code: the probe's handlers name the real owner).
      for (const imee::Kprobe& k : kprobes) {
        if (k.addr != c.site && k.addr != c.function) continue;
        const imee::AddressOwner owner = imee::address_owner(s, symbols, modules, k.pre_handler);
        out.push_back({{"kprobe", k.address},
                       {"addr", k.addr},
                       {"pre_handler", k.pre_handler},
                       {"post_handler", k.post_handler},
                       {"owner", owner_json(owner)}});
        text += " kprobe " + hex(k.address) + " pre_handler " + owner.describe();
      }
      return std::pair{out, text};
    };

    // A call target no module owns may be an ftrace_ops' trampoline.
    auto target_name = [&](std::uint64_t target) {
      const imee::AddressOwner o = imee::address_owner(s, symbols, modules, target);
      if (o.kind == imee::AddressOwner::Kind::unknown)
        for (const imee::FtraceOps& f : ops)
          if (f.trampoline == target) return "trampoline of ftrace_ops " + hex(f.address);
      return o.describe();
    };
    // Of the names at one address, the system call's own (__x64_sys_...) if there is one.
    auto handler_name = [&](std::uint64_t a) -> std::string {
      const auto r = symbols.resolve(a);
      if (!r) return hex(a);
      const auto& all = symbols.symbols();
      auto it =
          std::lower_bound(all.begin(), all.end(), a,
                           [](const imee::Symbol& x, std::uint64_t v) { return x.address < v; });
      for (; it != all.end() && it->address == a; ++it)
        if (it->name.starts_with("__x64_sys_")) return it->name;
      return r->symbol->name;
    };
    ordered_json entries = ordered_json::array();
    std::size_t outside = 0, tampered = 0, hooked_handlers = 0;
    std::vector<std::string> notes;
    if (!ctx.options.json)
      std::printf("%5s %-18s %-10s %s\n", "NR", "ADDRESS", "FLAG", "OWNER / SYMBOL");
    for (std::size_t nr = 0; nr < table.size(); ++nr) {
      const std::uint64_t addr = table[nr];
      const bool in_text = addr >= text_begin && addr < text_end;
      const std::uint64_t expected = expected_at(nr);
      const bool wrong = in_text && expected != 0 && addr != expected;
      const imee::AddressOwner owner = imee::address_owner(s, symbols, modules, addr);
      outside += !in_text;
      tampered += wrong;
      std::string flag = !in_text ? "HOOKED" : wrong ? "TAMPERED" : "";
      // The handler the kernel runs for this number (x64_sys_call's direct call, or the table's
      // entry when it is the image's): is its entry what the kernel left there?
      const std::uint64_t runs = expected ? expected : (in_text ? addr : 0);
      const auto it = runs ? entry.find(runs) : entry.end();
      std::string entry_note;
      ordered_json handler;
      if (it != entry.end()) {
        const imee::EntryCheck& c = it->second;
        handler = {{"function", c.function}, {"state", state_name(c.state)}, {"bytes", c.bytes}};
        if (c.state != imee::EntryCheck::State::clean) {
          ++hooked_handlers;
          const std::string st = state_name(c.state);
          std::string upper;
          for (char ch : st) upper += static_cast<char>(std::toupper(ch));
          flag += (flag.empty() ? "" : ",") + upper;
          auto [hooks, text] = hooks_of(c);
          handler["target"] = c.target;
          if (c.target)
            handler["target_owner"] =
                owner_json(imee::address_owner(s, symbols, modules, c.target));
          handler["hooks"] = hooks;
          entry_note =
              "handler " + imee::address_owner(s, symbols, modules, c.function).describe() + " " +
              st + (c.target ? " -> " + hex(c.target) + " (" + target_name(c.target) + ")" : "") +
              text;
        }
      }
      if (ctx.options.json) {
        std::string name;
        std::uint64_t offset = 0;
        if (const auto r = symbols.resolve(addr); r && in_text) {
          name = r->symbol->name;
          offset = r->offset;
        } else if (!owner.symbol.empty()) {
          name = owner.symbol;
          offset = owner.offset;
        }
        ordered_json e{
            {"nr", nr},
            {"address", addr},
            {"symbol", name.empty() ? ordered_json() : ordered_json(name)},
            {"offset", offset},
            {"in_kernel_text", in_text},
            {"owner", owner_json(owner)},
            {"image_handler", expected ? ordered_json(expected) : ordered_json()},
            {"image_handler_symbol",
             expected ? ordered_json(handler_name(expected)) : ordered_json()},
            {"matches_image", expected ? ordered_json(addr == expected) : ordered_json()},
            {"flags", flag}};
        if (!handler.is_null()) e["handler_entry"] = handler;
        entries.push_back(e);
        continue;
      }
      std::string shown = owner.describe();
      if (wrong) {
        shown += " (image: " + handler_name(expected) + ")";
      }
      if (!entry_note.empty()) shown += "; " + entry_note;
      std::printf("%5zu 0x%016llx %-10s %s\n", nr, static_cast<unsigned long long>(addr),
                  flag.c_str(), shown.c_str());
    }
    ctx.findings = outside + tampered + hooked_handlers;
    if (ctx.options.json) {
      ordered_json mods = ordered_json::array();
      for (const imee::KernelModule& m : modules)
        mods.push_back({{"name", m.name}, {"text", m.text}, {"text_size", m.text_size}});
      imee::tools::print_json({{"tool", "syscalldmp"},
                               {"backend", ctx.session->backend().name()},
                               {"sys_call_table", s.symbol("sys_call_table")},
                               {"entries", entries},
                               {"outside_kernel_text", outside},
                               {"not_image_handler", tampered},
                               {"image_handlers_known", !image.empty()},
                               {"handlers_hooked", hooked_handlers},
                               {"findings", ctx.findings},
                               {"modules", mods},
                               {"dispatch",
                                {{"through_sys_call_table", dispatch.through_table},
                                 {"via", dispatch.via},
                                 {"confirmed_from_code", dispatch.confirmed},
                                 {"evidence", dispatch.how_decided}}}});
    } else {
      std::printf(
          "%zu entries, %zu outside kernel text, %zu not the image's handler%s, %zu handlers "
          "traced or redirected\n",
          table.size(), outside, tampered,
          image.empty() ? " (unknown: profile built without a kernel image)" : "", hooked_handlers);
      std::printf("dispatch: %s; %s%s\ndispatch evidence: %s\n", dispatch.via.c_str(),
                  dispatch.through_table
                      ? "this table is what the kernel indexes on every 64-bit system call"
                      : "this table is NOT used to dispatch system calls on this kernel (tampering "
                        "with it is still reported)",
                  dispatch.confirmed ? "" : " [not confirmed from code]",
                  dispatch.how_decided.c_str());
    }
  });
}
