// Volatility 3 ISF out of BTF and a symbol list, and an ISF back in as a profile (isf.hpp).
#include "imee/isf.hpp"

#include <bpf/btf.h>
#include <lzma.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <unordered_set>

#include "imee/error.hpp"
#include "input_file.hpp"

namespace imee {

namespace {

using ojson = nlohmann::ordered_json;
using json = nlohmann::json;

constexpr std::uint64_t kKernelHalf = 0xffff800000000000ull;
constexpr int kMaxTypeDepth = 64;  // qualifier/typedef/pointer/array chains in real BTF: < 10

std::string base64(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const std::uint32_t v =
        std::uint8_t(in[i]) << 16 | std::uint8_t(in[i + 1]) << 8 | std::uint8_t(in[i + 2]);
    for (int k = 18; k >= 0; k -= 6) out += kAlphabet[(v >> k) & 63];
  }
  if (i < in.size()) {
    std::uint32_t v = std::uint8_t(in[i]) << 16;
    if (i + 1 < in.size()) v |= std::uint8_t(in[i + 1]) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> unbase64(std::string_view in) {
  std::string out;
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v;
    if (c >= 'A' && c <= 'Z')
      v = c - 'A';
    else if (c >= 'a' && c <= 'z')
      v = c - 'a' + 26;
    else if (c >= '0' && c <= '9')
      v = c - '0' + 52;
    else if (c == '+')
      v = 62;
    else if (c == '/')
      v = 63;
    else if (c == '=')
      break;
    else
      return std::nullopt;
    acc = acc << 6 | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

// Walks the BTF once, filling the four ISF tables.
class IsfWriter {
 public:
  explicit IsfWriter(const btf* b) : b_(b) {
    base_types_["void"] = {{"size", 0}, {"signed", false}, {"kind", "void"}, {"endian", "little"}};
    base_types_["pointer"] = {
        {"size", 8}, {"signed", false}, {"kind", "int"}, {"endian", "little"}};
    // Names first, so that a reference never depends on the order of definition.
    for (std::uint32_t id = 1; id < btf__type_cnt(b_); ++id) {
      const btf_type* t = btf__type_by_id(b_, id);
      if (btf_is_composite(t)) {
        std::string name = name_at(t->name_off);
        if (name.empty())
          name = std::string("unnamed_") + (btf_is_union(t) ? "union_" : "struct_") +
                 std::to_string(id);
        names_[id] = name;
        if (!user_types_.contains(name)) defining_[name] = id;
        user_types_[name] = nullptr;  // placeholder, keeps first-seen order
      } else if (btf_is_any_enum(t)) {
        std::string name = name_at(t->name_off);
        if (name.empty()) name = "unnamed_enum_" + std::to_string(id);
        names_[id] = name;
      }
    }
    for (std::uint32_t id = 1; id < btf__type_cnt(b_); ++id) {
      const btf_type* t = btf__type_by_id(b_, id);
      if (btf_is_composite(t) && defining_[names_[id]] == id) define_user(id, t);
      if (btf_is_any_enum(t) && !enums_.contains(names_[id])) define_enum(id, t);
      if (btf_is_fwd(t)) {  // declared only: an empty type, so references resolve
        const std::string name = name_at(t->name_off);
        if (!name.empty() && (!user_types_.contains(name) || user_types_[name].is_null()))
          user_types_[name] = {
              {"kind", btf_kflag(t) ? "union" : "struct"}, {"size", 0}, {"fields", json::object()}};
      }
    }
    for (auto it = user_types_.begin(); it != user_types_.end();)
      it = it.value().is_null() ? user_types_.erase(it) : std::next(it);
  }

  json base_types_ = json::object(), user_types_ = json::object(), enums_ = json::object();

 private:
  std::string base_for(std::uint32_t size, bool is_signed) {
    static const std::map<std::uint32_t, std::array<const char*, 2>> kNames = {
        {1, {"unsigned char", "signed char"}},
        {2, {"short unsigned int", "short int"}},
        {4, {"unsigned int", "int"}},
        {8, {"long unsigned int", "long int"}}};
    const auto it = kNames.find(size);
    const std::string name = it == kNames.end() ? "unsigned int" : it->second[is_signed ? 1 : 0];
    if (!base_types_.contains(name))
      base_types_[name] = {{"size", it == kNames.end() ? 4 : size},
                           {"signed", is_signed},
                           {"kind", size == 1 ? "char" : "int"},
                           {"endian", "little"}};
    return name;
  }

  json descriptor(std::uint32_t id, int depth = 0) {
    if (id == 0 || depth > kMaxTypeDepth) return {{"kind", "base"}, {"name", "void"}};
    const btf_type* t = btf__type_by_id(b_, id);
    if (t == nullptr) return {{"kind", "base"}, {"name", "void"}};
    switch (btf_kind(t)) {
      case BTF_KIND_INT: {
        const std::string name = name_at(t->name_off);
        if (!base_types_.contains(name)) {
          const std::uint8_t enc = btf_int_encoding(t);
          const char* kind =
              (enc & BTF_INT_BOOL) ? "bool"
              : ((enc & BTF_INT_CHAR) || (t->size == 1 && name.find("char") != std::string::npos))
                  ? "char"
                  : "int";
          base_types_[name] = {{"size", t->size},
                               {"signed", (enc & BTF_INT_SIGNED) != 0},
                               {"kind", kind},
                               {"endian", "little"}};
        }
        return {{"kind", "base"}, {"name", name}};
      }
      case BTF_KIND_FLOAT: {
        const std::string name = name_at(t->name_off);
        if (!base_types_.contains(name))
          base_types_[name] = {
              {"size", t->size}, {"signed", true}, {"kind", "float"}, {"endian", "little"}};
        return {{"kind", "base"}, {"name", name}};
      }
      case BTF_KIND_PTR:
        return {{"kind", "pointer"}, {"subtype", descriptor(t->type, depth + 1)}};
      case BTF_KIND_ARRAY: {
        const struct btf_array* a = btf_array(t);
        return {
            {"kind", "array"}, {"count", a->nelems}, {"subtype", descriptor(a->type, depth + 1)}};
      }
      case BTF_KIND_STRUCT:
      case BTF_KIND_UNION:
        return {{"kind", btf_is_union(t) ? "union" : "struct"}, {"name", names_[id]}};
      case BTF_KIND_FWD:
        return {{"kind", btf_kflag(t) ? "union" : "struct"}, {"name", name_at(t->name_off)}};
      case BTF_KIND_ENUM:
      case BTF_KIND_ENUM64:
        return {{"kind", "enum"}, {"name", names_[id]}};
      case BTF_KIND_FUNC:
      case BTF_KIND_FUNC_PROTO:
        return {{"kind", "function"}};
      case BTF_KIND_TYPEDEF:
      case BTF_KIND_VOLATILE:
      case BTF_KIND_CONST:
      case BTF_KIND_RESTRICT:
      case BTF_KIND_TYPE_TAG:
        return descriptor(t->type, depth + 1);
      default:
        return {{"kind", "base"}, {"name", "void"}};
    }
  }

  void define_user(std::uint32_t id, const btf_type* t) {
    json fields = json::object();
    const btf_member* m = btf_members(t);
    for (std::uint16_t i = 0; i < btf_vlen(t); ++i) {
      const std::uint32_t bit = btf_member_bit_offset(t, i);
      std::uint32_t bits = btf_member_bitfield_size(t, i);
      std::string name = name_at(m[i].name_off);
      const int resolved = btf__resolve_type(b_, m[i].type);
      const btf_type* rt = resolved > 0 ? btf__type_by_id(b_, resolved) : nullptr;
      if (bits == 0 && rt != nullptr && btf_is_int(rt) && btf_int_bits(rt) != rt->size * 8)
        bits = btf_int_bits(rt);  // a bitfield without kind_flag
      json field;
      if (bits != 0) {
        const std::int64_t unit_size = btf__resolve_size(b_, m[i].type);
        std::uint64_t unit = unit_size > 0 ? (bit / (unit_size * 8)) * unit_size : bit / 8;
        if (unit_size <= 0 || bit - unit * 8 + bits > static_cast<std::uint64_t>(unit_size) * 8)
          unit = bit / 8;
        field = {{"type",
                  {{"kind", "bitfield"},
                   {"bit_position", bit - unit * 8},
                   {"bit_length", bits},
                   {"type", descriptor(m[i].type)}}},
                 {"offset", unit}};
      } else {
        if (bit % 8 != 0) continue;  // not representable
        field = {{"type", descriptor(m[i].type)}, {"offset", bit / 8}};
      }
      if (name.empty()) {
        if (rt == nullptr || !btf_is_composite(rt)) continue;
        name = names_[static_cast<std::uint32_t>(resolved)];
        field["anonymous"] = true;
      }
      fields[name] = std::move(field);
    }
    user_types_[names_[id]] = {
        {"kind", btf_is_union(t) ? "union" : "struct"}, {"size", t->size}, {"fields", fields}};
  }

  void define_enum(std::uint32_t id, const btf_type* t) {
    const bool is_signed = btf_kflag(t);
    json constants = json::object();
    for (std::uint16_t i = 0; i < btf_vlen(t); ++i) {
      if (btf_is_enum64(t)) {
        const struct btf_enum64* e = btf_enum64(t) + i;
        const std::uint64_t v = btf_enum64_value(e);
        const std::string name = name_at(e->name_off);
        if (is_signed)
          constants[name] = static_cast<std::int64_t>(v);
        else
          constants[name] = v;
      } else {
        const struct btf_enum* e = btf_enum(t) + i;
        const std::string name = name_at(e->name_off);
        if (is_signed)
          constants[name] = static_cast<std::int32_t>(e->val);
        else
          constants[name] = static_cast<std::uint32_t>(e->val);
      }
    }
    enums_[names_[id]] = {
        {"size", t->size}, {"base", base_for(t->size, is_signed)}, {"constants", constants}};
  }

  // A name from the string section; "" for an offset outside it (libbpf accepts some: found
  // by fuzz_btf_memory).
  std::string name_at(std::uint32_t offset) const {
    const char* s = btf__name_by_offset(b_, offset);
    return s != nullptr ? s : "";
  }
  const btf* b_;
  std::map<std::uint32_t, std::string> names_;
  std::map<std::string, std::uint32_t> defining_;
};

// The ISF's description of a field's type, and its size.
class IsfReader {
 public:
  IsfReader(const json& isf, std::string origin) : isf_(isf), origin_(std::move(origin)) {}

  [[noreturn]] void bad(const std::string& why) const {
    throw Exception(origin_ + ": not a usable Volatility 3 ISF: " + why);
  }
  const json& at(const json& j, const std::string& key, const std::string& where) const {
    if (!j.is_object() || !j.contains(key)) bad(where + " has no '" + key + "'");
    return j.at(key);
  }
  std::uint64_t uint_at(const json& j, const std::string& key, const std::string& where) const {
    const json& v = at(j, key, where);
    if (!v.is_number_unsigned()) bad(where + "." + key + " is not a non-negative integer");
    return v.get<std::uint64_t>();
  }

  std::optional<std::uint64_t> size_of(const json& d, int depth = 0) const {
    if (depth > kMaxTypeDepth || !d.is_object()) return std::nullopt;
    const std::string kind = d.value("kind", "");
    const std::string name =
        d.contains("name") && d["name"].is_string() ? d["name"].get<std::string>() : "";
    if (kind == "pointer") return 8;
    if (kind == "base") return table_size("base_types", name);
    if (kind == "struct" || kind == "union" || kind == "class")
      return table_size("user_types", name);
    if (kind == "enum") return table_size("enums", name);
    if (kind == "array") {
      if (!d.contains("count") || !d["count"].is_number_unsigned() || !d.contains("subtype"))
        return std::nullopt;
      const auto sub = size_of(d["subtype"], depth + 1);
      if (!sub) return std::nullopt;
      return *sub * d["count"].get<std::uint64_t>();
    }
    return std::nullopt;
  }

  // A member through anonymous members (depth-first, as Volatility 3 reduces them).
  std::optional<LinuxProfile::MemberInfo> member(std::string_view type, std::string_view name,
                                                 std::uint64_t base = 0, int depth = 0) const {
    if (depth > kMaxTypeDepth) return std::nullopt;
    const json& types = at(isf_, "user_types", "the ISF");
    const auto it = types.find(std::string(type));
    if (it == types.end()) return std::nullopt;
    const json& fields = at(*it, "fields", "user_types." + std::string(type));
    if (!fields.is_object()) bad("user_types." + std::string(type) + ".fields is not an object");
    for (const auto& [field_name, f] : fields.items()) {
      const std::string where = "user_types." + std::string(type) + ".fields." + field_name;
      const std::uint64_t offset = uint_at(f, "offset", where);
      const json& d = at(f, "type", where);
      if (f.value("anonymous", false)) {
        if (!d.is_object() || !d.contains("name") || !d["name"].is_string())
          bad(where + ": anonymous member without a type name");
        if (auto m = member(d["name"].get<std::string>(), name, base + offset, depth + 1)) return m;
        continue;
      }
      if (field_name != name) continue;
      if (d.value("kind", "") == "bitfield") return std::nullopt;
      const auto size = size_of(d);
      if (!size) bad(where + ": type of unknown size");
      return LinuxProfile::MemberInfo{base + offset, *size};
    }
    return std::nullopt;
  }

  std::optional<std::uint64_t> table_size(const char* table, const std::string& name) const {
    const json& t = at(isf_, table, "the ISF");
    const auto it = t.find(name);
    if (it == t.end()) return std::nullopt;
    return uint_at(*it, "size", std::string(table) + "." + name);
  }

 private:
  const json& isf_;
  std::string origin_;
};

}  // namespace

std::string make_isf(const KernelTypes& types, const SymbolTable& symbols, std::uint64_t link_text,
                     const std::string& banner, IsfCounts* counts) {
  if (types.btf() == nullptr) throw Exception("no BTF to export");
  IsfWriter w(types.btf());
  const auto text = symbols.find("_text");
  if (!text) throw Exception("the symbol list has no _text");
  // In table order (ties at one address keep kallsyms' order); appended to the ordered map's
  // vector directly, as its keyed insert is a linear search.
  ojson syms = ojson::object();
  auto& list = static_cast<ojson::object_t::Container&>(syms.get_ref<ojson::object_t&>());
  std::unordered_set<std::string_view> seen;
  for (const Symbol& s : symbols.symbols()) {
    if (!seen.insert(s.name).second) continue;  // ISF names are unique: the first (lowest) wins
    const bool absolute = s.type == 'A' || s.type == 'a';
    ojson entry = {{"address", absolute ? s.address : s.address - *text + link_text}};
    if (s.name == "linux_banner" && !banner.empty())
      entry["constant_data"] = base64(banner + "\n" + std::string(1, '\0'));
    list.emplace_back(s.name, std::move(entry));
  }
  if (counts) *counts = {w.base_types_.size(), w.user_types_.size(), w.enums_.size(), list.size()};
  const ojson meta = {{"format", kIsfFormat},
                      {"producer", {{"name", "imee-profile"}, {"version", "1.0.0"}}},
                      {"linux", {{"symbols", ojson::array()}, {"types", ojson::array()}}}};
  // Parts dumped one by one: the types in name order, the symbols in table order. Names are
  // bytes from guest memory: invalid UTF-8 becomes U+FFFD (found by fuzz_btf_memory).
  const auto dump = [](const auto& j) {
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  };
  return "{\"metadata\":" + dump(meta) + ",\"base_types\":" + dump(w.base_types_) +
         ",\"user_types\":" + dump(w.user_types_) + ",\"enums\":" + dump(w.enums_) +
         ",\"symbols\":" + dump(syms) + "}";
}

void write_isf(const std::string& isf, const std::string& path) {
  std::string text = isf;
  text += '\n';
  if (path.ends_with(".xz")) {
    std::string packed(lzma_stream_buffer_bound(text.size()), '\0');
    std::size_t used = 0;
    const lzma_ret r = lzma_easy_buffer_encode(
        3, LZMA_CHECK_CRC64, nullptr, reinterpret_cast<const std::uint8_t*>(text.data()),
        text.size(), reinterpret_cast<std::uint8_t*>(packed.data()), &used, packed.size());
    if (r != LZMA_OK) throw Exception(path + ": xz compression failed (" + std::to_string(r) + ")");
    packed.resize(used);
    text = std::move(packed);
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    if (out) out.write(text.data(), static_cast<std::streamsize>(text.size()));
    if (!out || !out.flush()) {
      std::remove(tmp.c_str());
      throw Exception(path + ": cannot write");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Exception(path + ": cannot write");
  }
}

std::string read_maybe_xz(const std::string& path) {
  const InputFile file(path, std::size_t{1} << 30);
  const auto in = file.bytes();
  if (in.size() < 6 || std::memcmp(in.data(), "\3757zXZ\0", 6) != 0)
    return std::string(file.text());
  lzma_stream s = LZMA_STREAM_INIT;
  if (lzma_stream_decoder(&s, std::uint64_t{1} << 30, 0) != LZMA_OK)
    throw Exception(path + ": liblzma init failed");
  struct End {
    lzma_stream* s;
    ~End() { lzma_end(s); }
  } end{&s};
  std::string out(std::max<std::size_t>(in.size() * 8, 1 << 20), '\0');
  s.next_in = in.data();
  s.avail_in = in.size();
  for (;;) {
    if (s.total_out == out.size()) {
      if (out.size() >= (std::size_t{1} << 30)) throw Exception(path + ": decompresses to > 1 GiB");
      out.resize(out.size() * 2);
    }
    s.next_out = reinterpret_cast<std::uint8_t*>(out.data()) + s.total_out;
    s.avail_out = out.size() - s.total_out;
    const lzma_ret r = lzma_code(&s, LZMA_FINISH);
    if (r == LZMA_STREAM_END) break;
    if (r != LZMA_OK) throw Exception(path + ": corrupt or truncated xz data");
  }
  out.resize(s.total_out);
  return out;
}

namespace {

// Records the keys of the top-level "symbols" object in file order, building nothing else.
struct SymbolOrder : nlohmann::json_sax<json> {
  std::vector<std::string>* out;
  int depth = 0;
  bool in_symbols = false;
  explicit SymbolOrder(std::vector<std::string>* o) : out(o) {}
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override {
    ++depth;
    return true;
  }
  bool end_object() override {
    if (--depth == 1) in_symbols = false;
    return true;
  }
  bool start_array(std::size_t) override {
    ++depth;
    return true;
  }
  bool end_array() override {
    --depth;
    return true;
  }
  bool key(string_t& k) override {
    if (depth == 1) in_symbols = k == "symbols";
    if (depth == 2 && in_symbols) out->push_back(k);
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;
  }
};

}  // namespace

nlohmann::json parse_json_keeping_symbol_order(const std::string& text,
                                               std::vector<std::string>* symbol_order) {
  json doc = json::parse(text);  // throws on malformed text
  if (symbol_order && doc.is_object() && doc.contains("symbols")) {
    SymbolOrder order(symbol_order);
    json::sax_parse(text, &order);
  }
  return doc;
}

bool is_isf(const nlohmann::json& doc) {
  return doc.is_object() && doc.contains("metadata") && doc.contains("user_types") &&
         doc.contains("symbols");
}

LinuxProfile profile_from_isf(const nlohmann::json& isf, const std::string& origin,
                              const std::vector<std::string>& symbol_order) {
  const IsfReader r(isf, origin);
  const json& meta = r.at(isf, "metadata", "the ISF");
  const json& format = r.at(meta, "format", "metadata");
  if (!format.is_string() || !format.get<std::string>().starts_with("6."))
    r.bad("metadata.format is " + format.dump() + ", this build reads 6.x");
  for (const char* table : {"base_types", "user_types", "enums", "symbols"})
    if (!r.at(isf, table, "the ISF").is_object()) r.bad(std::string(table) + " is not an object");

  std::vector<Symbol> list;
  std::string banner;
  const json& all = isf["symbols"];
  std::vector<std::string> names = symbol_order;
  if (names.size() != all.size()) {  // no order recorded (or a mismatch): the map's
    names.clear();
    for (const auto& [name, s] : all.items()) names.push_back(name);
  }
  for (const std::string& name : names) {
    const auto it = all.find(name);
    if (it == all.end()) r.bad("symbols." + name + " vanished");
    const json& s = *it;
    const std::uint64_t address = r.uint_at(s, "address", "symbols." + name);
    list.push_back({address, address < kKernelHalf ? 'A' : 'T', name});
    if (name == "linux_banner" && s.contains("constant_data")) {
      if (!s["constant_data"].is_string()) r.bad("symbols.linux_banner.constant_data is not text");
      const auto data = unbase64(s["constant_data"].get<std::string>());
      if (!data) r.bad("symbols.linux_banner.constant_data is not base64");
      banner = data->substr(0, data->find_first_of(std::string("\n\0", 2)));
    }
  }
  const SymbolTable symbols = SymbolTable::from_symbols(std::move(list), origin);
  LinuxProfile p = LinuxProfile::build(
      [&](std::string_view type, std::string_view member) { return r.member(type, member); },
      [&](std::string_view type) -> std::optional<std::uint64_t> {
        // ISF has no typedefs: kernel_cap_t's size is that of a member declared with it.
        if (type == "kernel_cap_t") {
          const auto m = r.member("cred", "cap_effective");
          return m ? std::optional(m->size) : std::nullopt;
        }
        return r.table_size("user_types", std::string(type));
      },
      symbols, origin, origin);
  p.banner = banner;
  p.all_symbols = std::make_shared<const SymbolTable>(symbols);
  return p;
}

}  // namespace imee
