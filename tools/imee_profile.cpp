// imee-profile: the profile of a live guest's kernel as a Volatility 3 ISF (JSON, or xz
// compressed), made from the guest itself: every BTF type, every kallsyms symbol at its link-time
// address, the linux_banner.
#include <cstdio>
#include <cstring>
#include <string>

#include "common/tool.hpp"
#include "imee/isf.hpp"
#include "imee/kernel_types.hpp"
#include "imee/linux.hpp"

namespace {

constexpr std::uint64_t kDefaultLinkText = 0xffffffff81000000ull;  // x86-64 __START_KERNEL

// The KASLR slide the guest kernel itself records for crash dumps: "KERNELOFFSET=<hex>" in its
// vmcoreinfo note (kexec/crash_core), through this boot's vmcoreinfo_data pointer.
std::optional<std::uint64_t> kernel_offset(imee::LinuxSession& s, const imee::SymbolTable& boot) {
  const auto data = boot.find("vmcoreinfo_data");
  if (!data) return std::nullopt;
  const auto page = s.pointer(*data);
  if (!page || *page == 0) return std::nullopt;
  const auto text = s.cstring(*page, 4096);
  if (!text) return std::nullopt;
  const auto at = text->find("KERNELOFFSET=");
  if (at == std::string::npos) return std::nullopt;
  return std::strtoull(text->c_str() + at + 13, nullptr, 16);
}

}  // namespace

int main(int argc, char** argv) {
  const imee::tools::ToolInfo info{
      "imee-profile",
      "Writes the guest kernel's profile as a Volatility 3 ISF (format 6.2.0): every type of\n"
      "its BTF (structs and unions with every field, bitfields, arrays, pointers, enums), every\n"
      "kallsyms symbol at its link-time address (KASLR undone with the guest's own\n"
      "KERNELOFFSET from vmcoreinfo), and linux_banner. The BTF comes from --kernel if given,\n"
      "else from guest memory. Tools read the file back with --profile FILE.",
      "ISF:\n"
      "  --isf FILE         where to write it (required); FILE.xz is xz-compressed\n"
      "  --link-text HEX    link-time address of _text, when the guest does not say\n"
      "                     (default: from vmcoreinfo, else 0xffffffff81000000)\n",
      {"--isf", "--link-text"}};
  return imee::tools::run_tool(argc, argv, info, [](imee::tools::Context& ctx) {
    if (!ctx.options.extra.contains("--isf"))
      throw imee::Exception("no output: give --isf FILE (.json or .json.xz)");
    imee::LinuxSession& s = *ctx.session;
    const imee::SymbolTable boot = ctx.boot_symbols();

    // Link-time _text: from the guest's vmcoreinfo, or given, or the x86-64 default.
    std::uint64_t link_text = kDefaultLinkText;
    std::string link_how = "x86-64 default (the guest's vmcoreinfo has no KERNELOFFSET)";
    if (ctx.options.extra.contains("--link-text")) {
      link_text = std::strtoull(ctx.options.extra["--link-text"].c_str(), nullptr, 16);
      link_how = "given with --link-text";
    } else if (const auto slide = kernel_offset(s, boot)) {
      link_text = s.kernel().text_va - *slide;
      link_how = "this boot's _text minus the guest's vmcoreinfo KERNELOFFSET";
    }

    // The types: the kernel image's BTF if given, else the guest's own, between __start_BTF and
    // __stop_BTF at this boot.
    std::optional<imee::KernelTypes> types;
    std::string types_how;
    if (!ctx.options.kernel_path.empty()) {
      types.emplace(imee::KernelTypes::load(ctx.options.kernel_path));
      types_how = ctx.options.kernel_path;
    } else {
      const auto start = boot.find("__start_BTF"), stop = boot.find("__stop_BTF");
      if (!start || !stop || *stop <= *start)
        throw imee::Exception(
            "the symbol list has no __start_BTF/__stop_BTF: give --kernel FILE for the types");
      const auto bytes = s.read(*start, *stop - *start);
      if (!bytes) throw imee::ReadFailure(bytes.error());
      types.emplace(imee::KernelTypes::from_btf(
          std::span(reinterpret_cast<const std::uint8_t*>(bytes->data()), bytes->size()),
          "the guest's BTF"));
      types_how =
          "guest memory (__start_BTF..__stop_BTF, " + std::to_string(bytes->size()) + " bytes)";
    }
    imee::IsfCounts counts;
    const auto isf = imee::make_isf(*types, boot, link_text, s.profile().banner, &counts);
    const std::string path = ctx.options.extra["--isf"];
    imee::write_isf(isf, path);
    char link_hex[24];
    std::snprintf(link_hex, sizeof link_hex, "0x%llx", static_cast<unsigned long long>(link_text));
    if (ctx.options.json) {
      imee::tools::print_json({{"tool", "imee-profile"},
                               {"isf", path},
                               {"format", imee::kIsfFormat},
                               {"banner", s.profile().banner},
                               {"link_text", link_text},
                               {"link_text_from", link_how},
                               {"types_from", types_how},
                               {"base_types", counts.base_types},
                               {"user_types", counts.user_types},
                               {"enums", counts.enums},
                               {"symbols", counts.symbols}});
      return;
    }
    std::printf(
        "wrote %s: ISF %s, %zu base types, %zu user types, %zu enums, %zu symbols\n"
        "banner: %s\ntypes from: %s\n_text at link time: %s (%s)\n",
        path.c_str(), imee::kIsfFormat, counts.base_types, counts.user_types, counts.enums,
        counts.symbols, s.profile().banner.c_str(), types_how.c_str(), link_hex, link_how.c_str());
  });
}
