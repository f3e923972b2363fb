// imee-profile on the live lab guests: the Volatility 3 ISF it writes, checked for structure
// against the ISF 6.x schema's rules (Volatility 3's schema file is not packaged by Debian, so
// the rules are checked here: required and allowed keys, kinds, every type reference resolving),
// its symbols against the link-time addresses of the kernel image file's own kallsyms tables,
// and round-tripped: the tools given the ISF as --profile print what they print without it.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "imee/isf.hpp"
#include "imee/linux_profile.hpp"
#include "lab_guest.hpp"

namespace imee::test {
namespace {

namespace fs = std::filesystem;
using ordered_json = nlohmann::json;  // std::map: fast for ~90k symbols

// Checks one ISF against the format-6 rules; returns the first violation ("" if none).
class IsfRules {
 public:
  explicit IsfRules(const ordered_json& isf) : isf_(isf) {}

  std::string check() {
    only(isf_, {"metadata", "base_types", "user_types", "enums", "symbols"},
         {"metadata", "base_types", "user_types", "enums", "symbols"}, "top level");
    const ordered_json& meta = isf_["metadata"];
    only(meta, {"format", "producer", "linux"}, {"format", "linux"}, "metadata");
    if (!std::regex_match(meta["format"].get<std::string>(), std::regex("^6\\.[0-9]+\\.[0-9]+$")))
      fail("metadata.format");
    only(meta["producer"], {"name", "version", "datetime"}, {"name", "version"}, "producer");
    only(meta["linux"], {"symbols", "types"}, {}, "metadata.linux");
    for (const auto& [name, b] : isf_["base_types"].items()) {
      only(b, {"size", "signed", "kind", "endian"}, {"size", "signed", "kind", "endian"},
           "base " + name);
      static const std::set<std::string> kinds = {"void", "int", "float", "char", "bool"};
      if (!b["size"].is_number_integer() || !b["signed"].is_boolean() ||
          !kinds.contains(b["kind"].get<std::string>()) || b["endian"] != "little")
        fail("base type " + name);
    }
    for (const auto& [name, u] : isf_["user_types"].items()) {
      only(u, {"kind", "size", "fields"}, {"kind", "size", "fields"}, "user type " + name);
      static const std::set<std::string> kinds = {"struct", "union", "class"};
      if (!kinds.contains(u["kind"].get<std::string>()) || !u["size"].is_number_integer())
        fail("user type " + name);
      for (const auto& [field, f] : u["fields"].items()) {
        only(f, {"type", "offset", "anonymous"}, {"type", "offset"}, name + "." + field);
        if (!f["offset"].is_number_integer()) fail(name + "." + field + " offset");
        descriptor(f["type"], name + "." + field);
        ++fields_;
      }
    }
    for (const auto& [name, e] : isf_["enums"].items()) {
      only(e, {"size", "base", "constants"}, {"size", "base", "constants"}, "enum " + name);
      if (!isf_["base_types"].contains(e["base"].get<std::string>())) fail("enum base " + name);
      for (const auto& [c, v] : e["constants"].items())
        if (!v.is_number_integer()) fail("enum constant " + c);
    }
    for (const auto& [name, s] : isf_["symbols"].items()) {
      only(s, {"address", "linkage_name", "type", "constant_data"}, {"address"}, "symbol " + name);
      if (!s["address"].is_number()) fail("symbol address " + name);
    }
    return error_;
  }
  std::size_t fields() const { return fields_; }
  std::size_t bitfields() const { return bitfields_; }
  std::size_t anonymous() const { return anonymous_; }

 private:
  void fail(const std::string& what) {
    if (error_.empty()) error_ = what;
  }
  void only(const ordered_json& j, const std::set<std::string>& allowed,
            const std::set<std::string>& required, const std::string& where) {
    if (!j.is_object()) return fail(where + " is not an object");
    for (const auto& [k, v] : j.items())
      if (!allowed.contains(k)) fail(where + " has unexpected '" + k + "'");
    for (const std::string& k : required)
      if (!j.contains(k)) fail(where + " lacks '" + k + "'");
  }
  void descriptor(const ordered_json& d, const std::string& where) {
    const std::string kind = d.value("kind", "");
    if (kind == "pointer") {
      only(d, {"kind", "subtype", "base"}, {"kind", "subtype"}, where);
      descriptor(d["subtype"], where + "*");
    } else if (kind == "base") {
      only(d, {"kind", "name"}, {"kind", "name"}, where);
      if (!isf_["base_types"].contains(d["name"].get<std::string>()))
        fail(where + ": unknown base type " + d["name"].dump());
    } else if (kind == "array") {
      only(d, {"kind", "subtype", "count"}, {"kind", "subtype", "count"}, where);
      descriptor(d["subtype"], where + "[]");
    } else if (kind == "struct" || kind == "union" || kind == "class") {
      only(d, {"kind", "name"}, {"kind", "name"}, where);
      if (!isf_["user_types"].contains(d["name"].get<std::string>()))
        fail(where + ": unknown user type " + d["name"].dump());
    } else if (kind == "enum") {
      only(d, {"kind", "name"}, {"kind", "name"}, where);
      if (!isf_["enums"].contains(d["name"].get<std::string>()))
        fail(where + ": unknown enum " + d["name"].dump());
    } else if (kind == "function") {
      only(d, {"kind"}, {"kind"}, where);
    } else if (kind == "bitfield") {
      only(d, {"kind", "bit_position", "bit_length", "type"},
           {"kind", "bit_position", "bit_length", "type"}, where);
      const std::string sub = d["type"].value("kind", "");
      if (sub != "base" && sub != "enum") fail(where + ": bitfield of " + sub);
      descriptor(d["type"], where);
      ++bitfields_;
    } else {
      fail(where + ": unknown type kind '" + kind + "'");
    }
  }

  const ordered_json& isf_;
  std::string error_;
  std::size_t fields_ = 0, bitfields_ = 0, anonymous_ = 0;
};

class LiveIsf : public ::testing::TestWithParam<LabGuest> {
 protected:
  void SetUp() override {
    guest_ = GetParam();
    dir_ = fs::temp_directory_path() /
           ("imee-isf-" + std::to_string(getpid()) + "-" + GetParam().test_name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string target() const {
    return (guest_.levels == 5 ? "--pid " + guest_.qemu_pid() : "--ram " + guest_.ram()) +
           " --backend " + LabGuest::backend();
  }
  // The ISF made from the live guest alone.
  std::string export_isf(const std::string& name) {
    const std::string path = (dir_ / name).string();
    const RunResult r = run(LabGuest::tools() + "/imee-profile " + target() + " --cache " +
                            (dir_ / "cache").string() + " --isf " + path);
    EXPECT_EQ(r.status, 0) << r.err;
    std::printf("%s", r.out.c_str());
    return path;
  }

  LabGuest guest_;
  fs::path dir_;
};

TEST_P(LiveIsf, ExportedIsfFollowsTheFormatAndHoldsEveryTypeAndLinkTimeSymbols) {
  const std::string path = export_isf("kernel.json");
  const ordered_json isf = ordered_json::parse(read_maybe_xz(path));
  IsfRules rules(isf);
  EXPECT_EQ(rules.check(), "");
  EXPECT_EQ(isf["metadata"]["format"], "6.2.0");
  EXPECT_GT(isf["user_types"].size(), 5000u);
  EXPECT_GT(rules.fields(), 50000u);
  EXPECT_GT(rules.bitfields(), 100u);
  EXPECT_GT(isf["enums"].size(), 500u);

  // Offsets: the ISF's task_struct and cred against the profile built from the image file.
  const LinuxProfile file = LinuxProfile::build(guest_.kernel, "");
  const LinuxProfile from_isf = LinuxProfile::load(path);
  EXPECT_EQ(std::memcmp(&file.layout, &from_isf.layout, sizeof file.layout), 0);
  EXPECT_EQ(from_isf.banner, file.banner);
  EXPECT_EQ(isf["enums"]["pid_type"]["constants"]["PIDTYPE_PID"], 0);
  EXPECT_EQ(isf["user_types"]["task_struct"]["fields"]["comm"]["type"]["count"], 16);

  // Symbols at link time: the image file's own kallsyms hold link-time addresses.
  std::size_t compared = 0, wrong = 0;
  for (const Symbol& s : file.all_symbols->symbols()) {
    if (!isf["symbols"].contains(s.name)) {
      ++wrong;
      continue;
    }
    if (*file.all_symbols->find(s.name) != isf["symbols"][s.name]["address"].get<std::uint64_t>())
      ++wrong;
    ++compared;
  }
  EXPECT_EQ(wrong, 0u);
  std::printf("ISF symbols at link-time addresses: %zu compared, %zu wrong\n", compared, wrong);
}

TEST_P(LiveIsf, RoundTripGivesTheToolsIdenticalOutput) {
  const std::string plain = export_isf("kernel.json");
  const std::string packed = export_isf("kernel.json.xz");
  EXPECT_LT(fs::file_size(packed) * 4, fs::file_size(plain));
  for (const char* tool : {"pidlist", "pslist", "credlist", "syscalldmp"}) {
    bool same = false;
    std::string diff;
    for (int attempt = 0; attempt < 4 && !same; ++attempt) {
      const std::string base = LabGuest::tools() + "/" + tool + " " + target() + " --json ";
      const RunResult zero = run(base + "--cache " + (dir_ / "cache").string());
      const RunResult a = run(base + "--profile " + plain);
      const RunResult b = run(base + "--profile " + packed);
      ASSERT_EQ(zero.status, 0) << zero.err;
      ASSERT_EQ(a.status, 0) << a.err;
      ASSERT_EQ(b.status, 0) << b.err;
      same = zero.out == a.out && a.out == b.out;  // the task set may move: retry
      diff = zero.out.substr(0, 1500) + "\n--- ISF ---\n" + a.out.substr(0, 1500);
    }
    EXPECT_TRUE(same) << tool << ":\n" << diff;
  }
}

TEST_P(LiveIsf, BrokenIsfsAreRefusedClearly) {
  const std::string path = export_isf("kernel.json");
  const ordered_json good = ordered_json::parse(read_maybe_xz(path));
  struct Case {
    const char* name;
    std::function<void(ordered_json&)> spoil;
    const char* says;
  };
  const Case cases[] = {
      {"no user_types", [](ordered_json& j) { j.erase("user_types"); }, "not a valid"},
      {"format 5", [](ordered_json& j) { j["metadata"]["format"] = "5.0.0"; }, "format"},
      {"offset is text",
       [](ordered_json& j) { j["user_types"]["task_struct"]["fields"]["pid"]["offset"] = "x"; },
       "offset is not a non-negative integer"},
      {"no cred", [](ordered_json& j) { j["user_types"].erase("cred"); }, "lacks cred"},
      {"address is text", [](ordered_json& j) { j["symbols"]["init_task"]["address"] = "x"; },
       "address is not a non-negative integer"},
      {"no init_task", [](ordered_json& j) { j["symbols"].erase("init_task"); }, "init_task"},
      {"banner not base64",
       [](ordered_json& j) { j["symbols"]["linux_banner"]["constant_data"] = "!!"; }, "base64"},
  };
  for (const Case& c : cases) {
    ordered_json bad = good;
    c.spoil(bad);
    const std::string p = (dir_ / "bad.json").string();
    std::ofstream(p) << bad.dump();
    const RunResult r = run(LabGuest::tools() + "/pidlist " + target() + " --profile " + p);
    EXPECT_EQ(r.status, 1) << c.name << ": " << r.err;
    EXPECT_NE(r.err.find(c.says), std::string::npos) << c.name << ": " << r.err;
  }
}

INSTANTIATE_TEST_SUITE_P(Guests, LiveIsf, ::testing::ValuesIn(LabGuest::all()),
                         [](const auto& info) { return info.param.test_name(); });

}  // namespace
}  // namespace imee::test
