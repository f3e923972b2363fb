// Kernel struct layouts from BTF, read through libbpf.
#include "imee/kernel_types.hpp"

#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <span>
#include <utility>

#include "imee/error.hpp"
#include "kernel_image.hpp"

namespace imee {

namespace {

// Bounds the search through anonymous members: hostile BTF can nest them as a deep DAG (each level
// holding the next twice), which a plain depth-first search would walk exponentially. Real kernels
// need a few hundred member visits for task_struct.
constexpr int kMaxNesting = 32;
constexpr int kMaxMemberVisits = 1 << 16;

// libbpf explains a parse failure only through its print callback. While a thread parses, its
// warnings go into that thread's exception message; other libbpf output goes where it went before.
thread_local std::string* t_libbpf_log = nullptr;
libbpf_print_fn_t g_previous_print = nullptr;

int capture_libbpf_print(enum libbpf_print_level level, const char* format, va_list args) {
  if (t_libbpf_log == nullptr) return g_previous_print ? g_previous_print(level, format, args) : 0;
  char line[256];
  const int n = std::vsnprintf(line, sizeof line, format, args);
  if (n > 0 && t_libbpf_log->size() < 1024) {
    std::string_view text(line, std::min<std::size_t>(n, sizeof line - 1));
    if (text.starts_with("libbpf: ")) text.remove_prefix(8);
    while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
    *t_libbpf_log += t_libbpf_log->empty() ? "" : "; ";
    *t_libbpf_log += text;
  }
  return 0;
}

struct btf* new_btf(std::span<const std::uint8_t> raw, const std::string& what) {
  static std::once_flag once;
  std::call_once(once, [] { g_previous_print = libbpf_set_print(&capture_libbpf_print); });
  std::string log;
  t_libbpf_log = &log;
  errno = 0;
  struct btf* b = btf__new(raw.data(), static_cast<std::uint32_t>(raw.size()));  // copies raw
  const int err = errno != 0 ? errno : EINVAL;
  t_libbpf_log = nullptr;
  if (b == nullptr) {
    throw Exception(what + ": libbpf cannot parse the BTF data (" + std::strerror(err) + ")" +
                    (log.empty() ? "" : ": " + log));
  }
  return b;
}

const btf_type* resolved_type(const btf* b, std::uint32_t id, std::uint32_t* resolved_id) {
  const int r = btf__resolve_type(b, id);  // through typedef/const/volatile/restrict
  if (r < 0) return nullptr;
  if (resolved_id != nullptr) *resolved_id = static_cast<std::uint32_t>(r);
  return btf__type_by_id(b, static_cast<std::uint32_t>(r));
}

constexpr std::uint32_t kStructKinds[] = {BTF_KIND_STRUCT};
constexpr std::uint32_t kUnionKinds[] = {BTF_KIND_UNION};
constexpr std::uint32_t kCompositeKinds[] = {BTF_KIND_STRUCT, BTF_KIND_UNION, BTF_KIND_TYPEDEF};
constexpr std::uint32_t kSizedKinds[] = {BTF_KIND_STRUCT, BTF_KIND_UNION, BTF_KIND_TYPEDEF,
                                         BTF_KIND_INT, BTF_KIND_ENUM};

// The id of a named type of one of `kinds`, first match in that order. Accepts a C-style "struct "
// or "union " prefix.
std::optional<std::uint32_t> named_type(const btf* b, std::string_view name,
                                        std::span<const std::uint32_t> kinds) {
  if (name.starts_with("struct ")) {
    name.remove_prefix(7);
    kinds = kStructKinds;
  } else if (name.starts_with("union ")) {
    name.remove_prefix(6);
    kinds = kUnionKinds;
  }
  if (name.empty()) return std::nullopt;
  const std::string key(name);  // libbpf wants a C string
  for (std::uint32_t kind : kinds) {
    const std::int32_t id = btf__find_by_name_kind(b, key.c_str(), kind);
    if (id > 0) return static_cast<std::uint32_t>(id);
  }
  return std::nullopt;
}

std::optional<KernelTypes::Member> find_member(const btf* b, const btf_type* t,
                                               std::string_view name, std::uint64_t base, int depth,
                                               int& budget) {
  if (depth > kMaxNesting) return std::nullopt;
  const btf_member* m = btf_members(t);
  for (std::uint16_t i = 0; i < btf_vlen(t); ++i) {
    if (--budget < 0) return std::nullopt;
    const std::uint32_t bit_offset = btf_member_bit_offset(t, i);
    const char* member_name = btf__name_by_offset(b, m[i].name_off);
    if (member_name != nullptr && *member_name != '\0') {
      if (name != member_name) continue;
      if (btf_member_bitfield_size(t, i) != 0 || bit_offset % 8 != 0) return std::nullopt;
      // Without kind_flag, a bitfield shows as an int narrower than its storage.
      const btf_type* mt = resolved_type(b, m[i].type, nullptr);
      if (mt != nullptr && btf_is_int(mt) &&
          (btf_int_bits(mt) != mt->size * 8 || btf_int_offset(mt) != 0))
        return std::nullopt;
      const std::int64_t size = btf__resolve_size(b, m[i].type);
      if (size < 0) return std::nullopt;
      return KernelTypes::Member{base + bit_offset / 8, static_cast<std::uint64_t>(size)};
    }
    // Anonymous struct/union: its members belong to the outer type.
    const btf_type* inner = resolved_type(b, m[i].type, nullptr);
    if (inner == nullptr || !btf_is_composite(inner) || bit_offset % 8 != 0) continue;
    if (auto found = find_member(b, inner, name, base + bit_offset / 8, depth + 1, budget))
      return found;
  }
  return std::nullopt;
}

}  // namespace

std::string KernelTypes::banner_at(std::uint64_t text_offset) const {
  for (const Banner& b : banners_)
    if (b.text_offset == text_offset) return b.text;
  return {};
}

void KernelTypes::BtfDeleter::operator()(struct btf* btf) const {
  btf__free(btf);
}

KernelTypes::KernelTypes(KernelTypes&&) noexcept = default;
KernelTypes& KernelTypes::operator=(KernelTypes&&) noexcept = default;
KernelTypes::~KernelTypes() = default;

KernelTypes KernelTypes::load(const std::string& path, const std::vector<ImageRange>& ranges) {
  KernelImage image = read_kernel_image(path, KernelImagePart::kBtf, ranges);
  if (image.btf.size() > UINT32_MAX) throw Exception(image.btf_origin + ": BTF larger than 4 GiB");
  KernelTypes types;
  types.btf_.reset(new_btf(image.btf, image.btf_origin));
  types.banners_ = image.banners;
  types.ranges_ = std::move(image.ranges);
  types.ranges_.resize(ranges.size());
  return types;
}

KernelTypes KernelTypes::from_btf(std::span<const std::uint8_t> raw, const std::string& origin) {
  if (raw.size() < 24) throw Exception(origin + ": too small to be BTF");
  if (raw.size() > UINT32_MAX) throw Exception(origin + ": BTF larger than 4 GiB");
  KernelTypes types;
  types.btf_.reset(new_btf(raw, origin));
  return types;
}

std::optional<KernelTypes::Member> KernelTypes::member(std::string_view type_name,
                                                       std::string_view member_name) const {
  if (!btf_ || member_name.empty()) return std::nullopt;
  const auto id = named_type(btf_.get(), type_name, kCompositeKinds);
  if (!id) return std::nullopt;
  const btf_type* t = resolved_type(btf_.get(), *id, nullptr);
  if (t == nullptr || !btf_is_composite(t)) return std::nullopt;
  int budget = kMaxMemberVisits;
  return find_member(btf_.get(), t, member_name, 0, 0, budget);
}

std::optional<std::uint64_t> KernelTypes::type_size(std::string_view type_name) const {
  if (!btf_) return std::nullopt;
  const auto id = named_type(btf_.get(), type_name, kSizedKinds);
  if (!id) return std::nullopt;
  const std::int64_t size = btf__resolve_size(btf_.get(), *id);
  if (size < 0) return std::nullopt;
  return static_cast<std::uint64_t>(size);
}

}  // namespace imee
