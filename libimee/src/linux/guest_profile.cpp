// Zero-configuration profiles: BTF and kallsyms read from the kernel image in guest RAM, and the
// per-build cache (see guest_profile.hpp).
#include "imee/guest_profile.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string_view>

#include "checked_file.hpp"
#include "imee/error.hpp"
#include "imee/kallsyms.hpp"
#include "imee/kernel_types.hpp"
#include "input_file.hpp"

namespace imee {

namespace {

using Bytes = std::span<const std::uint8_t>;

constexpr std::uint64_t kKernelAlign = 2ull << 20;
// The kernel's read-only data around its banner: x86-64 images are well below 128 MiB, and
// linux_banner, the kallsyms tables and .BTF all sit in .rodata or right after it.
constexpr std::uint64_t kWindowBefore = 32ull << 20;
constexpr std::uint64_t kWindowAfter = 64ull << 20;
constexpr std::string_view kBannerPrefix = "Linux version ";
constexpr std::string_view kKernelMagic = "IMEEKLOC";  // remember_kernel's records
constexpr std::uint32_t kKernelVersion = 1;
constexpr const char* kInsteadOfKallsyms =
    ": give --symbols FILE (the guest's /proc/kallsyms or System.map) with --kernel FILE, or "
    "--profile FILE (an ImEE profile or a Volatility 3 ISF) instead";
constexpr const char* kInsteadOfBtf =
    ": give --kernel FILE (the guest's vmlinuz or vmlinux, or a BTF file) or --profile FILE (an "
    "ImEE profile or a Volatility 3 ISF) instead";

std::string hex(std::uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

double ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

// The guest-physical bytes [gpa, gpa+len) clipped to the RAM region holding gpa.
Bytes region_bytes(const GuestRam& ram, std::uint64_t gpa, std::uint64_t len) {
  for (const RamRegion& r : ram.regions()) {
    if (gpa < r.gpa || gpa - r.gpa >= r.size) continue;
    len = std::min(len, r.size - (gpa - r.gpa));
    const auto* p = reinterpret_cast<const std::uint8_t*>(ram.host(gpa, len));
    return p ? Bytes(p, len) : Bytes();
  }
  return {};
}

// What tells two builds with one banner apart, checked on every cached run: a hash of the BTF's
// first 64 bytes of every 4 KiB page and of its last 64 bytes (with its size). Any change to
// the types moves the records and strings after it, so it changes sampled bytes; reading a
// cache line per page costs ~0.1 ms where hashing all of a 5 MB BTF cost ~1 ms.
std::uint64_t btf_fingerprint(Bytes btf) {
  constexpr std::size_t kLine = 64;
  std::string sampled;
  sampled.reserve(btf.size() / 4096 * kLine + 2 * kLine);
  for (std::size_t at = 0; at < btf.size(); at += 4096)
    sampled.append(reinterpret_cast<const char*>(btf.data() + at),
                   std::min(kLine, btf.size() - at));
  const std::size_t tail = std::min(kLine, btf.size());
  sampled.append(reinterpret_cast<const char*>(btf.data() + btf.size() - tail), tail);
  return hash_btf(Bytes(reinterpret_cast<const std::uint8_t*>(sampled.data()), sampled.size())) ^
         btf.size();
}

// A file name for a banner: the release, then a hash of the whole banner.
std::string cache_stem(const std::string& banner) {
  std::string release = banner.substr(std::min(banner.size(), kBannerPrefix.size()));
  release = release.substr(0, release.find(' '));
  for (char& c : release)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '+' &&
        c != '_')
      c = '_';
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(banner.data());
  char h[20];
  std::snprintf(h, sizeof h, "%016llx",
                static_cast<unsigned long long>(hash_btf(Bytes(bytes, banner.size()))));
  return "linux-" + release.substr(0, 64) + "-" + h;
}

// The .BTF blob by its header in `window`: magic, version 1, no flags, 24-byte header, types
// at 0 and strings right after them, all of it inside the window.
std::optional<std::pair<std::size_t, std::size_t>> scan_btf(Bytes window) {
  static constexpr std::string_view kHeader("\x9f\xeb\x01\x00\x18\x00\x00\x00\x00\x00\x00\x00", 12);
  std::size_t from = 0;
  while (from + 24 <= window.size()) {
    const void* hit =
        ::memmem(window.data() + from, window.size() - from, kHeader.data(), kHeader.size());
    if (hit == nullptr) return std::nullopt;
    const std::size_t at = static_cast<const std::uint8_t*>(hit) - window.data();
    std::uint32_t h[6];
    if (window.size() - at < sizeof h) return std::nullopt;
    std::memcpy(h, window.data() + at, sizeof h);
    const std::uint64_t size = 24ull + h[4] + h[5];
    if (h[4] == h[3] && h[5] != 0 && size <= window.size() - at) return std::pair{at, size};
    from = at + 1;
  }
  return std::nullopt;
}

}  // namespace

namespace {

// The banners in guest RAM one at a time, from 16 MiB up (where x86-64 kernels load:
// CONFIG_PHYSICAL_START, KASLR's minimum) and then below it (look-alikes such as the boot
// setup's kernel_version): a caller that finds its kernel at the first one has read RAM only up
// to it. Each region's bytes are searched with memmem.
class BannerScan {
 public:
  explicit BannerScan(const GuestRam& ram) {
    constexpr std::uint64_t kLow = 16ull << 20;
    std::vector<Span> low;
    for (const RamRegion& r : ram.regions()) {
      const Bytes bytes = region_bytes(ram, r.gpa, r.size);
      const std::uint64_t split =
          std::clamp<std::uint64_t>(kLow, r.gpa, r.gpa + bytes.size()) - r.gpa;
      spans_.push_back({r.gpa + split, bytes.subspan(split)});
      low.push_back({r.gpa, bytes.subspan(0, split)});
    }
    spans_.insert(spans_.end(), low.begin(), low.end());
  }

  std::optional<GuestBanner> next() {
    for (; span_ < spans_.size(); ++span_, at_ = 0) {
      const Bytes bytes = spans_[span_].bytes;
      const std::uint8_t* const end = bytes.data() + bytes.size();
      const std::uint8_t* p = bytes.data() + at_;
      while (p < end) {
        const void* hit = ::memmem(p, end - p, kBannerPrefix.data(), kBannerPrefix.size());
        if (hit == nullptr) break;
        const auto* b = static_cast<const std::uint8_t*>(hit);
        p = b + 1;
        const std::uint8_t* e = b + kBannerPrefix.size();
        if (e >= end || *e < '0' || *e > '9') continue;  // the real banner goes on with a release
        const std::uint8_t* limit = std::min(end, b + 512);
        while (e < limit && *e >= 0x20 && *e < 0x7f) ++e;
        // linux_banner ends "\n\0"; the copies printk keeps have no newline.
        if (end - e < 2 || e[0] != '\n' || e[1] != 0) continue;
        at_ = static_cast<std::size_t>(p - bytes.data());
        return GuestBanner{spans_[span_].gpa + static_cast<std::uint64_t>(b - bytes.data()),
                           std::string(reinterpret_cast<const char*>(b), e - b)};
      }
    }
    return std::nullopt;
  }

 private:
  struct Span {
    std::uint64_t gpa;
    Bytes bytes;
  };
  std::vector<Span> spans_;
  std::size_t span_ = 0, at_ = 0;
};

}  // namespace

std::vector<GuestBanner> find_guest_banners(const GuestRam& ram) {
  std::vector<GuestBanner> out;
  BannerScan scan(ram);
  while (auto b = scan.next()) out.push_back(std::move(*b));
  return out;
}

MemoryProfile build_profile_from_memory(const GuestRam& ram, const GuestBanner& banner) {
  const auto start = std::chrono::steady_clock::now();
  const std::uint64_t window_gpa =
      (banner.gpa > kWindowBefore ? banner.gpa - kWindowBefore : 0) & ~(kKernelAlign - 1);
  // The window may start before the banner's region: clip it to the region.
  std::uint64_t from = window_gpa;
  for (const RamRegion& r : ram.regions())
    if (banner.gpa >= r.gpa && banner.gpa - r.gpa < r.size) from = std::max(from, r.gpa);
  from &= ~std::uint64_t{4095};
  const Bytes window = region_bytes(ram, from, banner.gpa - from + kWindowAfter);
  const std::string where = "the kernel image around its banner at GPA " + hex(banner.gpa);

  const auto layout = find_kallsyms(window);
  if (!layout)
    throw Exception("no kallsyms tables found in " + where +
                    " (a kernel built without CONFIG_KALLSYMS, or tables of a layout this "
                    "version does not know): give --symbols FILE (the guest's /proc/kallsyms or "
                    "System.map) with --kernel FILE, or --profile FILE (an ImEE profile or a "
                    "Volatility 3 ISF)");
  const std::string origin = "kallsyms in guest memory at GPA " + hex(from + layout->token_table);
  SymbolTable symbols = SymbolTable::from_symbols(decode_kallsyms(window, *layout), origin);
  const auto text = symbols.find("_text");
  const auto linux_banner = symbols.find("linux_banner");
  if (!text || !linux_banner || *linux_banner < *text)
    throw Exception(origin + ": no _text or linux_banner symbol (inconsistent tables?)" +
                    kInsteadOfKallsyms);
  const std::uint64_t text_gpa = banner.gpa - (*linux_banner - *text);
  if (text_gpa % kKernelAlign != 0 || text_gpa > banner.gpa)
    throw Exception(origin + ": linux_banner's offset from _text does not put the banner at GPA " +
                    hex(banner.gpa) + " (these tables belong to another image)" +
                    kInsteadOfKallsyms);

  // The BTF: between __start_BTF and __stop_BTF, else by its header.
  Bytes btf;
  std::uint64_t btf_gpa = 0;
  std::string btf_origin;
  const auto start_btf = symbols.find("__start_BTF"), stop_btf = symbols.find("__stop_BTF");
  if (start_btf && stop_btf && *stop_btf > *start_btf && *start_btf >= *text) {
    const std::uint64_t gpa = btf_gpa = text_gpa + (*start_btf - *text);
    btf = region_bytes(ram, gpa, *stop_btf - *start_btf);
    if (btf.size() != *stop_btf - *start_btf || btf.size() < 24 || btf[0] != 0x9f || btf[1] != 0xeb)
      throw Exception("the kernel's BTF in guest memory (__start_BTF, GPA " + hex(gpa) +
                      ") has no BTF header: corrupt, or not loaded" + kInsteadOfBtf);
    btf_origin = "BTF in guest memory at GPA " + hex(gpa) + " (__start_BTF)";
  } else if (const auto found = scan_btf(window)) {
    btf = window.subspan(found->first, found->second);
    btf_gpa = from + found->first;
    btf_origin = "BTF in guest memory at GPA " + hex(from + found->first) + " (found by header)";
  } else {
    throw Exception("no BTF found in " + where + " (kernel built without CONFIG_DEBUG_INFO_BTF?)" +
                    kInsteadOfBtf);
  }
  std::optional<KernelTypes> parsed;
  try {
    parsed.emplace(KernelTypes::from_btf(btf, btf_origin));
  } catch (const Exception& e) {
    throw Exception(std::string(e.what()) + kInsteadOfBtf);
  }
  const KernelTypes& types = *parsed;

  MemoryProfile out;
  out.profile = LinuxProfile::build(types, symbols, btf_origin, origin);
  out.profile.banner = banner.text;
  out.profile.btf_offset = btf_gpa - text_gpa;
  out.profile.btf_size = btf.size();
  out.profile.btf_hash = btf_fingerprint(btf);
  out.text_gpa = text_gpa;
  out.text_va = *text;
  const std::size_t count = symbols.size();
  out.profile.all_symbols = std::make_shared<const SymbolTable>(std::move(symbols));
  char line[256];
  std::snprintf(line, sizeof line,
                "built from guest memory in %.1f ms: %zu kallsyms symbols, %zu bytes of BTF",
                ms_since(start), count, btf.size());
  out.how = line;
  return out;
}

std::string default_profile_cache() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg == '/')
    return std::string(xdg) + "/imee";
  if (const char* home = std::getenv("HOME"); home && *home)
    return std::string(home) + "/.cache/imee";
  return {};
}

ProfileFit profile_fits(const GuestRam& ram, const LinuxProfile& profile, std::uint64_t text_gpa) {
  const auto banner_off = profile.symbols.find("linux_banner");
  if (profile.banner.empty() || profile.btf_size == 0 || banner_off == profile.symbols.end())
    return ProfileFit::kNoBanner;
  const std::string wanted = profile.banner + '\n' + std::string(1, '\0');
  const std::byte* at = ram.host(text_gpa + banner_off->second, wanted.size());
  if (at == nullptr || std::memcmp(at, wanted.data(), wanted.size()) != 0)
    return ProfileFit::kNoBanner;
  const auto* btf = reinterpret_cast<const std::uint8_t*>(
      ram.host(text_gpa + profile.btf_offset, profile.btf_size));
  if (btf == nullptr || btf_fingerprint(Bytes(btf, profile.btf_size)) != profile.btf_hash)
    return ProfileFit::kOtherBuild;
  return ProfileFit::kFits;
}

namespace {

std::string kernel_record_path(const std::string& cache_dir, const GuestRam& ram) {
  const auto* name = reinterpret_cast<const std::uint8_t*>(ram.name().data());
  char h[20];
  std::snprintf(h, sizeof h, "%016llx",
                static_cast<unsigned long long>(hash_btf(Bytes(name, ram.name().size()))));
  return cache_dir + "/target-" + h + ".kernel";
}

}  // namespace

std::optional<RememberedKernel> recall_kernel(const std::string& cache_dir, const GuestRam& ram) {
  if (cache_dir.empty()) return std::nullopt;
  const std::string path = kernel_record_path(cache_dir, ram);
  try {
    const InputFile file(path, 1 << 16);
    ByteReader r(checked_payload(file.text(), kKernelMagic, kKernelVersion, path), path);
    if (r.str(4096) != ram.name()) return std::nullopt;  // another target, same hash
    RememberedKernel k;
    k.profile_path = r.str(4096);
    k.text_gpa = r.u64();
    k.text_va = r.u64();
    const std::uint8_t levels = r.u8();
    if (levels != 4 && levels != 5) r.fail("bad paging mode");
    k.mode = static_cast<PagingMode>(levels);
    if (!r.at_end()) r.fail("trailing bytes");
    return k;
  } catch (const Exception&) {
    return std::nullopt;  // none yet, or unreadable: the scan finds the kernel and rewrites it
  }
}

void remember_kernel(const std::string& cache_dir, const GuestRam& ram,
                     const RememberedKernel& kernel) {
  if (cache_dir.empty()) return;
  ByteWriter w;
  w.str(ram.name());
  w.str(kernel.profile_path);
  w.u64(kernel.text_gpa);
  w.u64(kernel.text_va);
  w.u8(static_cast<std::uint8_t>(kernel.mode));
  try {
    write_checked_file(kernel_record_path(cache_dir, ram), kKernelMagic, kKernelVersion, w.bytes());
  } catch (const Exception&) {
  }
}

GuestProfile guest_profile(const GuestRam& ram, const std::string& cache_dir,
                           const std::vector<std::uint64_t>& exclude_banner_gpas) {
  const auto start = std::chrono::steady_clock::now();
  const auto excluded = [&](std::uint64_t gpa) {
    return std::find(exclude_banner_gpas.begin(), exclude_banner_gpas.end(), gpa) !=
           exclude_banner_gpas.end();
  };
  GuestProfile out;
  namespace fs = std::filesystem;

  // The cache first, without scanning RAM: each entry knows its banner's offset from _text, and
  // _text is 2 MiB-aligned; an entry fits if its banner is there and its BTF hash matches.
  std::error_code ec;
  if (!cache_dir.empty() && fs::is_directory(cache_dir, ec)) {
    for (const auto& entry : fs::directory_iterator(cache_dir, ec)) {
      const std::string path = entry.path().string();
      if (entry.path().extension() != ".profile" ||
          !entry.path().filename().string().starts_with("linux-"))
        continue;
      LinuxProfile p;
      try {
        p = LinuxProfile::load(path);
      } catch (const Exception& e) {
        out.warnings.push_back(std::string(e.what()) + " (ignored)");
        continue;
      }
      if (p.btf_size == 0 || p.banner.empty() || !p.symbols.contains("linux_banner")) {
        out.warnings.push_back(path + ": not a profile built from guest memory (ignored)");
        continue;
      }
      const std::uint64_t banner_off = p.symbols.at("linux_banner");
      for (const RamRegion& r : ram.regions()) {
        for (std::uint64_t text_gpa = (r.gpa + kKernelAlign - 1) & ~(kKernelAlign - 1);
             text_gpa + banner_off < r.gpa + r.size; text_gpa += kKernelAlign) {
          if (excluded(text_gpa + banner_off)) continue;
          const ProfileFit fit = profile_fits(ram, p, text_gpa);
          if (fit == ProfileFit::kNoBanner) continue;
          if (fit == ProfileFit::kOtherBuild) {
            out.warnings.push_back(path +
                                   ": cache entry's BTF hash differs from the guest's (same "
                                   "banner, another build); rebuilt");
            continue;
          }
          char line[512];
          std::snprintf(line, sizeof line, "cached profile %s (banner and BTF hash match), %.2f ms",
                        path.c_str(), ms_since(start));
          out.profile = std::move(p);
          out.from_cache = true;
          out.cache_path = path;
          out.how = line;
          return out;
        }
      }
    }
  }

  // No cache entry fits: the banners in RAM, tried in scan order until one builds.
  BannerScan scan(ram);
  std::string errors;
  std::size_t tried = 0;
  for (;;) {
    const std::optional<GuestBanner> found = scan.next();
    if (!found) break;
    const GuestBanner& b = *found;
    if (excluded(b.gpa)) continue;
    ++tried;
    MemoryProfile built;
    try {
      built = build_profile_from_memory(ram, b);
    } catch (const Exception& e) {
      errors += std::string(errors.empty() ? "" : "; ") + e.what();
      continue;
    }
    out.profile = std::move(built.profile);
    out.how = built.how;
    if (cache_dir.empty()) return out;
    // Cached: the profile and the full symbol list at this boot's addresses (every user moves
    // them to its boot's _text), both in binary form: nothing to parse on the next run.
    const std::string stem = cache_dir + "/" + cache_stem(b.text);
    try {
      std::error_code ec;
      fs::create_directories(cache_dir, ec);
      if (ec) throw Exception(cache_dir + ": cannot create the profile cache: " + ec.message());
      out.profile.all_symbols->save_binary(stem + ".symbols");
      LinuxProfile saved = out.profile;
      saved.symbols_path = stem + ".symbols";
      saved.all_symbols.reset();
      saved.save_binary(stem + ".profile");
      out.profile.symbols_path = saved.symbols_path;
      out.cache_path = stem + ".profile";
      out.how += ", cached at " + out.cache_path;
    } catch (const Exception& e) {
      out.warnings.push_back(std::string(e.what()) + " (the profile is not cached)");
    }
    return out;
  }
  if (tried == 0)
    throw Exception(
        "no Linux kernel banner (linux_banner) in guest RAM: not a Linux guest, one that has not "
        "booted yet, or a truncated dump");
  if (tried == 1) throw Exception(errors);  // the one kernel's own error, as it was
  throw Exception("no kernel profile could be built from guest memory: " + errors);
}

}  // namespace imee
