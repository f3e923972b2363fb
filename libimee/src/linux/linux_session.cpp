#include "imee/linux_session.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string_view>
#include <utility>

#include "imee/backends.hpp"
#include "imee/guest_profile.hpp"
#include "imee/soft_backend.hpp"

namespace imee {

namespace {

// x86-64 kernel image alignment: CONFIG_PHYSICAL_ALIGN must be a multiple of 2 MiB, and KASLR
// places both the physical and the virtual image at such multiples.
constexpr std::uint64_t kKernelAlign = 2ull << 20;
constexpr std::uint64_t kKernelMapStart = 0xffffffff80000000ull;  // __START_KERNEL_map
constexpr std::uint64_t kKernelMapSize = 1ull << 30;

bool bytes_at(MemoryBackend& backend, std::uint64_t gpa, std::string_view expected) {
  std::vector<std::byte> buf(expected.size());
  return backend.read_physical(gpa, buf) &&
         std::memcmp(buf.data(), expected.data(), buf.size()) == 0;
}

}  // namespace

namespace {

// The image loaded at text_gpa, mapped at `va` by its init_top_pgt under `mode`: _text and
// linux_banner translate back to it, and page_offset_base reads.
std::optional<KernelLocation> image_at(MemoryBackend& backend, const LinuxProfile& profile,
                                       std::uint64_t text_gpa, PagingMode mode, std::uint64_t va) {
  const std::uint64_t banner_off = profile.symbol_offset("linux_banner");
  const AddressSpace space{text_gpa + profile.symbol_offset("init_top_pgt"), mode, true};
  Expected<Translation> t = backend.translate(space, va);
  if (!t || t->gpa != text_gpa) return std::nullopt;
  Expected<Translation> b = backend.translate(space, va + banner_off);
  if (!b || b->gpa != text_gpa + banner_off) return std::nullopt;
  std::uint64_t pob = 0;
  const std::uint64_t pob_va = va + profile.symbol_offset("page_offset_base");
  if (!backend.read(space, pob_va, std::as_writable_bytes(std::span(&pob, 1)))) return std::nullopt;
  return KernelLocation{va, text_gpa, space, pob};
}

// Candidates: every image whose banner sits at a 2 MiB-aligned load address and whose
// init_top_pgt maps _text back onto it, under 5- or 4-level paging.
std::vector<KernelLocation> find_kernel_images(MemoryBackend& backend,
                                               const LinuxProfile& profile) {
  const std::uint64_t banner_off = profile.symbol_offset("linux_banner");
  const std::string banner = profile.banner.empty() ? "Linux version " : profile.banner;
  std::vector<KernelLocation> found;
  for (const RamRegion& region : backend.ram_regions()) {
    const std::uint64_t first = (region.gpa + kKernelAlign - 1) & ~(kKernelAlign - 1);
    for (std::uint64_t text_gpa = first; text_gpa + banner_off < region.gpa + region.size;
         text_gpa += kKernelAlign) {
      if (!bytes_at(backend, text_gpa + banner_off, banner)) continue;
      for (PagingMode mode : {PagingMode::k5Level, PagingMode::k4Level})
        for (std::uint64_t va = kKernelMapStart; va < kKernelMapStart + kKernelMapSize;
             va += kKernelAlign)
          if (auto k = image_at(backend, profile, text_gpa, mode, va)) found.push_back(*k);
    }
  }
  return found;
}

// A live kernel's task list closes on itself through readable, doubly linked nodes. An image
// left in RAM by an earlier boot (a reboot, or a reused RAM file) has lost parts of its direct
// map, so its list breaks.
bool task_list_is_intact(MemoryBackend& backend, const LinuxProfile& profile,
                         const KernelLocation& k) {
  const std::uint64_t head =
      k.text_va + profile.symbol_offset("init_task") + profile.layout.task_tasks;
  std::uint64_t node = head;
  for (int i = 0; i < (1 << 16); ++i) {
    std::uint64_t links[2];  // list_head: next, prev
    if (!backend.read(k.space, node, std::as_writable_bytes(std::span(links)))) return false;
    std::uint64_t back = 0;
    if (!backend.read(k.space, links[0] + 8, std::as_writable_bytes(std::span(&back, 1))) ||
        back != node)
      return false;
    node = links[0];
    if (node == head) return true;
  }
  return false;
}

}  // namespace

KernelLocation locate_kernel(MemoryBackend& backend, const LinuxProfile& profile) {
  std::vector<KernelLocation> live;
  for (const KernelLocation& k : find_kernel_images(backend, profile))
    if (task_list_is_intact(backend, profile, k)) live.push_back(k);
  if (live.size() == 1) return live[0];
  if (live.empty())
    throw Exception(
        "the profiled kernel was not found in guest RAM (no matching banner at a 2 MiB-aligned "
        "load address with working page tables and task list): wrong profile for this guest, a "
        "guest that has not booted yet, or a truncated dump");
  throw Exception("guest RAM holds " + std::to_string(live.size()) +
                  " intact images of the profiled kernel (an earlier boot's copy survived); "
                  "cannot tell which one is live");
}

LinuxSession::LinuxSession(MemoryBackend& backend, LinuxProfile profile)
    : backend_(&backend), profile_(std::move(profile)), kernel_(locate_kernel(backend, profile_)) {}

LinuxSession::LinuxSession(MemoryBackend& backend, LinuxProfile profile,
                           const KernelLocation& kernel)
    : backend_(&backend), profile_(std::move(profile)), kernel_(kernel) {}

void LinuxSession::adopt(std::unique_ptr<Target> target, const std::string& backend_name) {
  std::string why;
  owned_backend_ = make_backend(backend_name, *target, agent_home(), &why);
  backend_ = owned_backend_.get();
  backend_choice_ = why;
  target_ = std::move(target);
}

std::unique_ptr<LinuxSession> LinuxSession::open(const TargetSpec& spec, LinuxProfile profile,
                                                 const std::string& backend_name) {
  auto target = std::make_unique<Target>(Target::open(spec));
  // Finding the kernel needs physical reads and a few walks: the software path does it, and an
  // ImEE backend then gets its agent's home from it.
  SoftBackend locator(target->ram());
  const KernelLocation kernel = locate_kernel(locator, profile);
  auto session = std::make_unique<LinuxSession>(locator, std::move(profile), kernel);
  session->adopt(std::move(target), backend_name);
  return session;
}

namespace {

// The kernel where this target's was found the last time, if it is still there: the same cached
// profile fits the image at the remembered GPA, the remembered slide maps it, and its task list
// closes. A few reads instead of the scans.
std::optional<std::pair<LinuxProfile, KernelLocation>> recalled_kernel(
    MemoryBackend& backend, const GuestRam& ram, const RememberedKernel& memo) {
  try {
    LinuxProfile profile = LinuxProfile::load(memo.profile_path);
    if (profile_fits(ram, profile, memo.text_gpa) != ProfileFit::kFits) return std::nullopt;
    const auto k = image_at(backend, profile, memo.text_gpa, memo.mode, memo.text_va);
    if (!k || !task_list_is_intact(backend, profile, *k)) return std::nullopt;
    return std::pair{std::move(profile), *k};
  } catch (const Exception&) {
    return std::nullopt;  // e.g. the entry was removed or spoiled: the scan rebuilds it
  }
}

}  // namespace

std::unique_ptr<LinuxSession> LinuxSession::open_zero_config(const TargetSpec& spec,
                                                             const std::string& backend_name,
                                                             const std::string& cache_dir) {
  const auto start = std::chrono::steady_clock::now();
  auto target = std::make_unique<Target>(Target::open(spec));
  SoftBackend locator(target->ram());
  const std::optional<RememberedKernel> memo = recall_kernel(cache_dir, target->ram());
  if (memo) {
    if (auto found = recalled_kernel(locator, target->ram(), *memo)) {
      auto session =
          std::make_unique<LinuxSession>(locator, std::move(found->first), found->second);
      char line[512];
      std::snprintf(
          line, sizeof line,
          "cached profile %s (banner and BTF hash match), kernel where it was last "
          "found (_text at GPA 0x%llx), %.2f ms",
          memo->profile_path.c_str(), static_cast<unsigned long long>(memo->text_gpa),
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count());
      session->profile_origin_ = line;
      session->adopt(std::move(target), backend_name);
      return session;
    }
  }
  // A banner whose image turns out not to be the live kernel (an earlier boot's copy) is
  // excluded and the next one tried.
  std::vector<std::uint64_t> rejected;
  std::vector<std::string> warnings;
  std::string locate_error;
  for (;;) {
    GuestProfile gp;
    try {
      gp = guest_profile(target->ram(), cache_dir, rejected);
    } catch (const Exception&) {
      if (!locate_error.empty()) throw Exception(locate_error);  // every banner tried
      throw;
    }
    warnings.insert(warnings.end(), gp.warnings.begin(), gp.warnings.end());
    KernelLocation kernel;
    try {
      kernel = locate_kernel(locator, gp.profile);
    } catch (const Exception& e) {
      locate_error = e.what();
      const std::vector<GuestBanner> banners = find_guest_banners(target->ram());
      bool excluded = false;
      for (const GuestBanner& b : banners)
        if (b.text == gp.profile.banner &&
            std::find(rejected.begin(), rejected.end(), b.gpa) == rejected.end()) {
          rejected.push_back(b.gpa);
          excluded = true;
        }
      if (!excluded) throw;
      continue;
    }
    const RememberedKernel found{gp.cache_path, kernel.text_gpa, kernel.text_va, kernel.space.mode};
    if (!gp.cache_path.empty() && memo != found) remember_kernel(cache_dir, target->ram(), found);
    auto session = std::make_unique<LinuxSession>(locator, std::move(gp.profile), kernel);
    session->profile_origin_ = gp.how;
    session->profile_warnings_ = std::move(warnings);
    session->adopt(std::move(target), backend_name);
    return session;
  }
}

std::uint64_t LinuxSession::symbol(std::string_view name) const {
  return kernel_.text_va + profile_.symbol_offset(name);
}

AgentHome LinuxSession::agent_home() const {
  return {kernel_.space, symbol("entry_SYSCALL_64")};
}

AddressSpace LinuxSession::user_space(std::uint64_t pgd_va) const {
  return AddressSpace{pgd_va - kernel_.page_offset_base, kernel_.space.mode, true};
}

Expected<std::vector<std::byte>> LinuxSession::read(std::uint64_t va, std::size_t len) {
  if (Status s = check_range(va, len); !s) return s.error();
  std::vector<std::byte> out(len);
  if (Status s = read(va, out); !s) return s.error();
  return out;
}

Expected<std::uint32_t> LinuxSession::u32(std::uint64_t va) {
  std::uint32_t v = 0;
  if (Status s = read(va, std::as_writable_bytes(std::span(&v, 1))); !s) return s.error();
  return v;
}

Expected<std::uint64_t> LinuxSession::u64(std::uint64_t va) {
  std::uint64_t v = 0;
  if (Status s = read(va, std::as_writable_bytes(std::span(&v, 1))); !s) return s.error();
  return v;
}

Expected<std::string> LinuxSession::cstring(std::uint64_t va, std::size_t max_len) {
  std::string out;
  // Read up to each page end only, so a string that ends before an unmapped page still reads.
  while (out.size() < max_len) {
    const std::uint64_t cur = va + out.size();
    const std::size_t chunk =
        std::min<std::uint64_t>(max_len - out.size(), kPageSize - (cur & (kPageSize - 1)));
    char buf[kPageSize];
    if (Status s = read(cur, std::as_writable_bytes(std::span(buf, chunk))); !s) return s.error();
    const std::size_t n = strnlen(buf, chunk);
    out.append(buf, n);
    if (n < chunk) break;
  }
  return out;
}

}  // namespace imee
