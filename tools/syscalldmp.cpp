// syscalldmp: every entry of the guest's sys_call_table, resolved to a symbol, with entries that
// point outside the kernel's text flagged (the mark of a hooked table), and whether the kernel
// dispatches system calls through that table at all (imee::syscall_dispatch).
#include <cstdio>
#include <vector>

#include "common/tool.hpp"
#include "imee/linux.hpp"

int main(int argc, char** argv) {
  const imee::tools::ToolInfo info{
      "syscalldmp",
      "Dumps the guest's system call table: index, handler address, the symbol it resolves to,\n"
      "and a HOOKED flag for entries outside kernel text [_text, _etext).\n"
      "Symbols come from --symbols, or from the list the profile was built from; they may come\n"
      "from any boot of the same kernel build (the KASLR slide is applied).\n"
      "After the table it says whether the kernel dispatches system calls through it at all:\n"
      "kernels with the 2024 branch-history-injection fix (6.9 and later, and backports such\n"
      "as Debian's 6.1.192) call x64_sys_call(), a switch, not the table's entries, so a clean\n"
      "table proves nothing there (entries outside kernel text are still flagged). Decided from\n"
      "the guest, not its version: whether do_syscall_64's code in guest memory references\n"
      "sys_call_table or calls x64_sys_call (code that references neither is taken as not\n"
      "through the table); only where that code cannot be read, whether the symbol list has\n"
      "x64_sys_call. Both of the latter are reported as not confirmed. JSON: \"dispatch\":\n"
      "{\"through_sys_call_table\", \"via\", \"confirmed_from_code\", \"evidence\"}.",
      ""};
  return imee::tools::run_tool(argc, argv, info, [](imee::tools::Context& ctx) {
    imee::LinuxSession& s = *ctx.session;
    const imee::SymbolTable symbols = imee::boot_symbols(s, ctx.options.symbols_path);
    const std::vector<std::uint64_t> table = imee::syscall_table(s);
    const imee::SyscallDispatch dispatch = imee::syscall_dispatch(s, symbols);

    const std::uint64_t text_begin = s.symbol("_text"), text_end = s.symbol("_etext");
    nlohmann::ordered_json entries = nlohmann::ordered_json::array();
    std::size_t hooked = 0;
    if (!ctx.options.json) std::printf("%5s %-18s %-6s %s\n", "NR", "ADDRESS", "FLAG", "SYMBOL");
    for (std::size_t nr = 0; nr < table.size(); ++nr) {
      const std::uint64_t addr = table[nr];
      const bool in_text = addr >= text_begin && addr < text_end;
      hooked += !in_text;
      std::string name;
      std::uint64_t offset = 0;
      if (const auto r = symbols.resolve(addr)) {
        name = r->symbol->name;
        offset = r->offset;
      }
      if (ctx.options.json) {
        entries.push_back(
            {{"nr", nr},
             {"address", addr},
             {"symbol", name.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(name)},
             {"offset", offset},
             {"in_kernel_text", in_text}});
        continue;
      }
      std::string shown = name.empty() ? "?" : name;
      if (!name.empty() && offset != 0)
        shown += "+0x" + [&] {
          char b[20];
          std::snprintf(b, sizeof b, "%llx", static_cast<unsigned long long>(offset));
          return std::string(b);
        }();
      std::printf("%5zu 0x%016llx %-6s %s\n", nr, static_cast<unsigned long long>(addr),
                  in_text ? "" : "HOOKED", shown.c_str());
    }
    if (ctx.options.json) {
      imee::tools::print_json({{"tool", "syscalldmp"},
                               {"backend", ctx.session->backend().name()},
                               {"sys_call_table", s.symbol("sys_call_table")},
                               {"entries", entries},
                               {"outside_kernel_text", hooked},
                               {"dispatch",
                                {{"through_sys_call_table", dispatch.through_table},
                                 {"via", dispatch.via},
                                 {"confirmed_from_code", dispatch.confirmed},
                                 {"evidence", dispatch.how_decided}}}});
    } else {
      std::printf("%zu entries, %zu outside kernel text\n", table.size(), hooked);
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
