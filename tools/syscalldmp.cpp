// syscalldmp: every entry of the guest's sys_call_table, resolved to a symbol, with entries that
// point outside the kernel's text flagged (the mark of a hooked table).
#include <cstdio>
#include <vector>

#include "common/tool.hpp"
#include "imee/symbols.hpp"

int main(int argc, char** argv) {
  const imee::tools::ToolInfo info{
      "syscalldmp",
      "Dumps the guest's system call table: index, handler address, the symbol it resolves to,\n"
      "and a HOOKED flag for entries outside kernel text [_text, _etext).\n"
      "Symbols come from --symbols, or from the list the profile was built from; they may come\n"
      "from any boot of the same kernel build (the KASLR slide is applied).",
      ""};
  return imee::tools::run_tool(argc, argv, info, [](imee::tools::Context& ctx) {
    imee::Session& s = *ctx.session;
    const std::string& path =
        ctx.options.symbols_path.empty() ? s.profile().symbols_path : ctx.options.symbols_path;
    if (path.empty()) throw imee::Exception("no symbol list to resolve addresses: give --symbols");
    imee::SymbolTable symbols = imee::SymbolTable::load(path);
    const auto listed_text = symbols.find("_text");
    if (!listed_text) throw imee::Exception(path + ": no _text symbol");
    symbols.shift(static_cast<std::int64_t>(s.kernel().text_va - *listed_text));

    // The table's slots run to the next symbol; alignment padding after the last real entry
    // reads as zero, and no live handler is ever a null pointer.
    std::vector<std::uint64_t> table(s.profile().syscall_slots);
    s.read(s.symbol("sys_call_table"), std::as_writable_bytes(std::span(table))).value();
    while (!table.empty() && table.back() == 0) table.pop_back();

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
                               {"backend", ctx.backend->name()},
                               {"sys_call_table", s.symbol("sys_call_table")},
                               {"entries", entries},
                               {"outside_kernel_text", hooked}});
    } else {
      std::printf("%zu entries, %zu outside kernel text\n", table.size(), hooked);
    }
  });
}
