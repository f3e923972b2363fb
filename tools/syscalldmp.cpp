// syscalldmp: every entry of the guest's sys_call_table, resolved to a symbol, with entries that
// point outside the kernel's text flagged (the mark of a hooked table).
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
      "from any boot of the same kernel build (the KASLR slide is applied).",
      ""};
  return imee::tools::run_tool(argc, argv, info, [](imee::tools::Context& ctx) {
    imee::LinuxSession& s = *ctx.session;
    const imee::SymbolTable symbols = imee::boot_symbols(s, ctx.options.symbols_path);
    const std::vector<std::uint64_t> table = imee::syscall_table(s);

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
                               {"outside_kernel_text", hooked}});
    } else {
      std::printf("%zu entries, %zu outside kernel text\n", table.size(), hooked);
    }
  });
}
