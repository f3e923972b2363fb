// Zero configuration on the live lab guests: the kallsyms tables decoded from guest memory
// against the guest's own /proc/kallsyms (every symbol), the BTF read from guest memory against
// the BTF of the kernel image file (every type), and the tools with nothing but a target
// against the same tools given the kernel image and the kallsyms dump; the profile cache.
#include <bpf/btf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>
#include <vector>

#include "imee/guest_profile.hpp"
#include "imee/kallsyms.hpp"
#include "imee/kernel_types.hpp"
#include "imee/symbols.hpp"
#include "lab_guest.hpp"

namespace imee::test {
namespace {

namespace fs = std::filesystem;

// Every symbol of `got` equal to `want` in order (both sorted by address, ties in table order):
// name, type letter and address. Returns the number compared.
std::size_t expect_same_symbols(const SymbolTable& got, const SymbolTable& want,
                                const std::string& what) {
  const auto& g = got.symbols();
  const auto& w = want.symbols();
  EXPECT_EQ(g.size(), w.size()) << what;
  std::size_t mismatches = 0;
  const std::size_t n = std::min(g.size(), w.size());
  for (std::size_t i = 0; i < n; ++i) {
    if (g[i].name == w[i].name && g[i].address == w[i].address && g[i].type == w[i].type) continue;
    if (++mismatches <= 5)
      ADD_FAILURE() << what << ": symbol " << i << ": got " << std::hex << g[i].address << " "
                    << g[i].type << " " << g[i].name << ", the guest says " << w[i].address << " "
                    << w[i].type << " " << w[i].name;
  }
  EXPECT_EQ(mismatches, 0u) << what;
  std::printf("%s: %zu symbols compared, %zu mismatches\n", what.c_str(), n, mismatches);
  return n;
}

class LiveZeroConfig : public ::testing::TestWithParam<LabGuest> {
 protected:
  void SetUp() override {
    guest_ = GetParam();
    target_ = std::make_unique<Target>(Target::open({.ram_path = guest_.ram()}));
    cache_ = fs::temp_directory_path() /
             ("imee-zero-config-" + std::to_string(getpid()) + "-" + GetParam().test_name());
    fs::remove_all(cache_);
  }
  void TearDown() override { fs::remove_all(cache_); }

  // The live kernel's banner: RAM holds look-alikes too (e.g. the boot setup's kernel_version,
  // which also ends in a newline), which the builder rejects; the first it accepts.
  MemoryProfile build_live() const {
    std::string errors;
    for (const GuestBanner& b : find_guest_banners(target_->ram())) {
      try {
        return build_profile_from_memory(target_->ram(), b);
      } catch (const Exception& e) {
        errors += std::string(e.what()) + "; ";
      }
    }
    ADD_FAILURE() << "no banner in guest RAM gave a profile: " << errors;
    return {};
  }

  // The tool with nothing but the target (and a private cache).
  RunResult zero_config(const std::string& tool, const std::string& extra = "--json") const {
    const bool by_pid = guest_.levels == 5;
    const std::string target = by_pid ? "--pid " + guest_.qemu_pid() : "--ram " + guest_.ram();
    return run(LabGuest::tools() + "/" + tool + " " + target + " --backend " + LabGuest::backend() +
               " --cache " + cache_.string() + " " + extra);
  }

  LabGuest guest_;
  std::unique_ptr<Target> target_;
  fs::path cache_;
};

TEST_P(LiveZeroConfig, KallsymsFromGuestMemoryEqualProcKallsyms) {
  const auto start = std::chrono::steady_clock::now();
  const MemoryProfile built = build_live();
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(built.profile.all_symbols);
  const SymbolTable truth = SymbolTable::load(guest_.kallsyms());
  const std::size_t n = expect_same_symbols(*built.profile.all_symbols, truth,
                                            GetParam().test_name() + " guest memory");
  EXPECT_GT(n, 50000u);  // a Debian kernel has ~90k
  EXPECT_EQ(built.text_va, *truth.find("_text"));
  std::printf("profile from guest memory: %.1f ms (%s)\n", ms, built.how.c_str());
}

TEST_P(LiveZeroConfig, KallsymsOfTheKernelImageFileEqualProcKallsyms) {
  // The image's own tables hold link-time addresses; the guest's are this boot's.
  const LinuxProfile p = LinuxProfile::build(guest_.kernel, "");
  ASSERT_TRUE(p.all_symbols);
  SymbolTable linked = *p.all_symbols;
  const SymbolTable truth = SymbolTable::load(guest_.kallsyms());
  linked.shift(static_cast<std::int64_t>(*truth.find("_text") - *linked.find("_text")));
  expect_same_symbols(linked, truth, GetParam().test_name() + " image file");
  EXPECT_FALSE(p.banner.empty());
}

TEST_P(LiveZeroConfig, BtfFromGuestMemoryEqualsTheImageFilesBtf) {
  const MemoryProfile built = build_live();
  const KernelTypes file = KernelTypes::load(guest_.kernel);
  const auto* gpa_bytes = reinterpret_cast<const std::uint8_t*>(
      target_->ram().host(built.text_gpa + built.profile.btf_offset, built.profile.btf_size));
  ASSERT_NE(gpa_bytes, nullptr);
  const KernelTypes memory =
      KernelTypes::from_btf(std::span(gpa_bytes, built.profile.btf_size), "guest memory");
  // Every type: kind, name, size, and for structs and unions every member's name, type and bit
  // offset.
  const btf* a = memory.btf();
  const btf* b = file.btf();
  ASSERT_EQ(btf__type_cnt(a), btf__type_cnt(b));
  std::size_t members = 0;
  for (std::uint32_t id = 1; id < btf__type_cnt(a); ++id) {
    const btf_type* x = btf__type_by_id(a, id);
    const btf_type* y = btf__type_by_id(b, id);
    ASSERT_EQ(btf_kind(x), btf_kind(y)) << id;
    ASSERT_STREQ(btf__name_by_offset(a, x->name_off), btf__name_by_offset(b, y->name_off)) << id;
    if (!btf_is_composite(x)) continue;
    ASSERT_EQ(x->size, y->size) << id;
    ASSERT_EQ(btf_vlen(x), btf_vlen(y)) << id;
    for (std::uint16_t i = 0; i < btf_vlen(x); ++i, ++members) {
      ASSERT_EQ(btf_member_bit_offset(x, i), btf_member_bit_offset(y, i)) << id;
      ASSERT_EQ(btf_members(x)[i].type, btf_members(y)[i].type) << id;
    }
  }
  EXPECT_GT(members, 50000u);  // Debian 6.1: ~56k
  // And the profile's layout is the one built from the file and the kallsyms dump.
  const LinuxProfile classic = LinuxProfile::build(guest_.kernel, guest_.kallsyms());
  EXPECT_EQ(std::memcmp(&classic.layout, &built.profile.layout, sizeof classic.layout), 0);
  EXPECT_EQ(classic.symbols, built.profile.symbols);
  EXPECT_EQ(classic.banner, built.profile.banner);
  EXPECT_EQ(classic.syscall_slots, built.profile.syscall_slots);
}

// syscalldmp's JSON without what only the kernel image can say: the handler the image links at
// each index. A profile from guest memory has no image (image_handlers_known false), one from
// the vmlinuz file has it (true); everything else must be the same.
std::string without_image_handlers(const std::string& out, bool image_known) {
  nlohmann::json doc = nlohmann::json::parse(out, nullptr, false);
  if (doc.is_discarded()) return out;
  EXPECT_EQ(doc.value("image_handlers_known", !image_known), image_known);
  doc.erase("image_handlers_known");
  for (auto& e : doc["entries"])
    for (const char* key : {"image_handler", "image_handler_symbol", "matches_image"}) e.erase(key);
  return doc.dump(1);
}

TEST_P(LiveZeroConfig, ToolsWithNothingButATargetMatchTheToolsGivenFiles) {
  for (const std::string tool : {"pidlist", "pslist", "credlist", "syscalldmp"}) {
    bool same = false;
    std::string last;
    for (int attempt = 0; attempt < 4 && !same; ++attempt) {
      RunResult zero = zero_config(tool);
      ASSERT_EQ(zero.status, 0) << tool << ": " << zero.err;
      RunResult classic = guest_.tool(tool);
      ASSERT_EQ(classic.status, 0) << tool << ": " << classic.err;
      if (tool == "syscalldmp") {
        zero.out = without_image_handlers(zero.out, false);
        classic.out = without_image_handlers(classic.out, true);
      }
      same = zero.out == classic.out;  // the task set may move between the runs: retry
      last = zero.out.substr(0, 2000) + "\n--- vs ---\n" + classic.out.substr(0, 2000);
    }
    EXPECT_TRUE(same) << tool << " differs with and without files:\n" << last;
  }
}

TEST_P(LiveZeroConfig, ProfileIsCachedPerBuildAndReused) {
  RunResult first = zero_config("pslist", "--stats");
  ASSERT_EQ(first.status, 0) << first.err;
  EXPECT_NE(first.err.find("stats: profile built from guest memory"), std::string::npos)
      << first.err;
  std::vector<fs::path> entries;
  for (const auto& e : fs::directory_iterator(cache_))
    if (e.path().extension() == ".profile") entries.push_back(e.path());
  ASSERT_EQ(entries.size(), 1u);
  const LinuxProfile cached = LinuxProfile::load(entries[0].string());
  EXPECT_EQ(cached.banner, build_live().profile.banner);
  EXPECT_NE(cached.btf_hash, 0u);
  EXPECT_TRUE(fs::exists(cached.symbols_path));

  RunResult second = zero_config("pslist", "--stats");
  ASSERT_EQ(second.status, 0) << second.err;
  EXPECT_NE(second.err.find("stats: profile cached profile"), std::string::npos) << second.err;
  std::printf("first run: %s\nsecond run: %s\n", first.err.c_str(), second.err.c_str());

  // An entry for the same banner but another build (its BTF hash differs): ignored, rebuilt.
  {
    LinuxProfile other = cached;
    other.btf_hash ^= 1;
    other.save_binary(entries[0].string());
  }
  RunResult other = zero_config("pslist", "--stats");
  ASSERT_EQ(other.status, 0) << other.err;
  EXPECT_NE(other.err.find("BTF hash differs"), std::string::npos) << other.err;
  EXPECT_NE(other.err.find("stats: profile built from guest memory"), std::string::npos)
      << other.err;
  EXPECT_EQ(LinuxProfile::load(entries[0].string()).btf_hash, cached.btf_hash);  // rewritten

  // A spoiled entry (one byte short, one byte flipped) or one that is not a profile at all:
  // ignored with a warning saying why, rebuilt, and the rebuilt entry loads again.
  const auto bytes = [&] {
    std::ifstream in(entries[0], std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string good = bytes();
  std::string flipped = good;
  flipped[good.size() / 2] ^= 0x10;
  for (const auto& [spoiled, why] : std::vector<std::pair<std::string, std::string>>{
           {good.substr(0, good.size() - 1), "truncated or extended"},
           {flipped, "checksum mismatch"},
           {"{\"format\": 17}", "not a valid ImEE Linux profile"}}) {
    std::ofstream(entries[0], std::ios::binary) << spoiled;
    RunResult r = zero_config("pslist", "--stats");
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.err.find(why), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("stats: profile built from guest memory"), std::string::npos) << r.err;
    EXPECT_EQ(bytes().size(), good.size());
    EXPECT_EQ(LinuxProfile::load(entries[0].string()).btf_hash, cached.btf_hash);
  }
}

// Where the kernel was found is remembered per target; a record that no longer holds (another
// boot put the kernel elsewhere) is checked against guest memory, found wrong, and the kernel is
// found as before (the cached profile by its banner at each 2 MiB boundary), then remembered.
TEST_P(LiveZeroConfig, RememberedKernelThatMovedFallsBackToTheScan) {
  const std::string ram = "--ram " + guest_.ram() + " --backend " + LabGuest::backend() +
                          " --cache " + cache_.string() + " --stats ";
  const std::string pslist = LabGuest::tools() + "/pslist " + ram;
  RunResult cold = run(pslist + "--json");
  ASSERT_EQ(cold.status, 0) << cold.err;
  const std::optional<RememberedKernel> found = recall_kernel(cache_.string(), target_->ram());
  ASSERT_TRUE(found.has_value());
  RunResult warm = run(pslist + "--json");
  ASSERT_EQ(warm.status, 0) << warm.err;
  EXPECT_NE(warm.err.find("kernel where it was last found"), std::string::npos) << warm.err;

  for (const std::uint64_t shift : {2ull << 20, 0ull}) {
    RememberedKernel moved = *found;
    moved.text_gpa += shift;                      // another load address
    if (shift == 0) moved.text_va += 2ull << 20;  // or another virtual slide
    remember_kernel(cache_.string(), target_->ram(), moved);
    ASSERT_EQ(recall_kernel(cache_.string(), target_->ram()), moved);
    RunResult r = run(pslist + "--json");
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.err.find("kernel where it was last found"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("stats: profile cached profile"), std::string::npos) << r.err;
    EXPECT_NE(r.out.find("\"tasks\""), std::string::npos);
    EXPECT_EQ(recall_kernel(cache_.string(), target_->ram()), found);  // remembered again
  }
}

// syscalldmp on the cached profile (its symbol list in the cache's binary form) says what it says
// given the guest's own kallsyms dump with --symbols.
TEST_P(LiveZeroConfig, SyscalldmpOnTheCachedProfileEqualsSyscalldmpWithSymbols) {
  ASSERT_EQ(zero_config("syscalldmp").status, 0);  // fills the cache
  bool same = false;
  std::string last;
  for (int attempt = 0; attempt < 4 && !same; ++attempt) {
    const RunResult cached = zero_config("syscalldmp", "--json --stats");
    ASSERT_EQ(cached.status, 0) << cached.err;
    EXPECT_NE(cached.err.find("stats: profile cached profile"), std::string::npos) << cached.err;
    const RunResult listed = zero_config("syscalldmp", "--json --symbols " + guest_.kallsyms());
    ASSERT_EQ(listed.status, 0) << listed.err;
    same = cached.out == listed.out;  // modules or ftrace may change between the runs: retry
    last = cached.out.substr(0, 2000) + "\n--- vs ---\n" + listed.out.substr(0, 2000);
  }
  EXPECT_TRUE(same) << last;

  // The cached symbol list damaged (one byte flipped): refused by its checksum, decoded again
  // from guest memory with a warning, rewritten, and syscalldmp says the same as before.
  std::string symbols_path;
  for (const auto& e : fs::directory_iterator(cache_))
    if (e.path().extension() == ".symbols") symbols_path = e.path().string();
  ASSERT_FALSE(symbols_path.empty());
  const auto spoil = [&] {
    std::string bytes;
    {
      std::ifstream in(symbols_path, std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(in), {});
    }
    bytes[bytes.size() / 2] ^= 0x10;
    std::ofstream(symbols_path, std::ios::binary | std::ios::trunc) << bytes;
    EXPECT_THROW(SymbolTable::load(symbols_path), Exception);
  };
  same = false;
  for (int attempt = 0; attempt < 4 && !same; ++attempt) {
    spoil();
    const RunResult rebuilt = zero_config("syscalldmp", "--json");
    ASSERT_EQ(rebuilt.status, 0) << rebuilt.err;
    EXPECT_NE(rebuilt.err.find("checksum mismatch"), std::string::npos) << rebuilt.err;
    EXPECT_NE(rebuilt.err.find("decoded again from guest memory and rewritten"), std::string::npos)
        << rebuilt.err;
    EXPECT_NO_THROW(SymbolTable::load(symbols_path));
    const RunResult listed = zero_config("syscalldmp", "--json --symbols " + guest_.kallsyms());
    ASSERT_EQ(listed.status, 0) << listed.err;
    same = rebuilt.out == listed.out;
    last = rebuilt.out.substr(0, 2000) + "\n--- vs ---\n" + listed.out.substr(0, 2000);
  }
  EXPECT_TRUE(same) << last;
}

TEST_P(LiveZeroConfig, UnwritableCacheWarnsAndStillWorks) {
  const RunResult r = run(LabGuest::tools() + "/pslist --ram " + guest_.ram() +
                          " --backend soft --cache /proc/imee-cannot-be-here --json");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("warning"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("not cached"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("\"tasks\""), std::string::npos);
  const RunResult none =
      run(LabGuest::tools() + "/pidlist --ram " + guest_.ram() + " --backend soft --no-cache");
  ASSERT_EQ(none.status, 0) << none.err;
  EXPECT_EQ(none.err, "");
}

// Guest RAM with a few bytes spoiled: a private (copy-on-write) mapping of the RAM file, so the
// guest is untouched. Each spoiled kernel must be refused with an error that names what is
// missing and what to pass instead.
class SpoiledRam {
 public:
  explicit SpoiledRam(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    struct stat st {};
    if (fd >= 0 && ::fstat(fd, &st) == 0) {
      size_ = static_cast<std::size_t>(st.st_size);
      void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
      if (p != MAP_FAILED) map_ = static_cast<std::byte*>(p);
    }
    if (fd >= 0) ::close(fd);
  }
  SpoiledRam(const SpoiledRam&) = delete;
  SpoiledRam& operator=(const SpoiledRam&) = delete;
  ~SpoiledRam() {
    if (map_) ::munmap(map_, size_);
  }
  bool ok() const { return map_ != nullptr; }
  std::byte* at(std::uint64_t gpa) { return map_ + gpa; }  // flat layout below 3 GiB
  GuestRam ram() const { return GuestRam::view({map_, size_}); }

 private:
  std::byte* map_ = nullptr;
  std::size_t size_ = 0;
};

TEST_P(LiveZeroConfig, SpoiledBtfOrKallsymsAreRefusedClearly) {
  const MemoryProfile good = build_live();
  const SymbolTable truth = SymbolTable::load(guest_.kallsyms());
  const std::uint64_t text = *truth.find("_text");
  const auto gpa_of = [&](const char* name) { return good.text_gpa + (*truth.find(name) - text); };
  // The kallsyms tables are not in kallsyms: found in the image (from _text, up to 64 MiB, but
  // not past the end of the RAM region KASLR put the kernel in).
  std::uint64_t image_len = 0;
  for (const RamRegion& r : target_->ram().regions())
    if (good.text_gpa >= r.gpa && good.text_gpa - r.gpa < r.size)
      image_len = std::min<std::uint64_t>(64u << 20, r.gpa + r.size - good.text_gpa);
  const auto* image =
      reinterpret_cast<const std::uint8_t*>(target_->ram().host(good.text_gpa, image_len));
  ASSERT_NE(image, nullptr) << "no RAM region holds _text at GPA " << std::hex << good.text_gpa;
  const auto tables = find_kallsyms(std::span(image, image_len));
  ASSERT_TRUE(tables.has_value());
  GuestBanner banner;
  for (const GuestBanner& b : find_guest_banners(target_->ram()))
    if (b.gpa == gpa_of("linux_banner")) banner = b;
  ASSERT_FALSE(banner.text.empty());
  const auto error_of = [&](SpoiledRam& ram) -> std::string {
    try {
      (void)build_profile_from_memory(ram.ram(), banner);
    } catch (const Exception& e) {
      return e.what();
    }
    return "";
  };
  {  // the BTF's magic
    SpoiledRam ram(guest_.ram());
    ASSERT_TRUE(ram.ok());
    *ram.at(gpa_of("__start_BTF")) = std::byte{0};
    const std::string e = error_of(ram);
    EXPECT_NE(e.find("has no BTF header"), std::string::npos) << e;
    EXPECT_NE(e.find("give --kernel FILE"), std::string::npos) << e;
  }
  {  // the BTF's string section claimed longer than the blob (truncated)
    SpoiledRam ram(guest_.ram());
    std::uint32_t str_len;
    std::memcpy(&str_len, ram.at(gpa_of("__start_BTF") + 20), 4);
    str_len += 4096;
    std::memcpy(ram.at(gpa_of("__start_BTF") + 20), &str_len, 4);
    const std::string e = error_of(ram);
    EXPECT_NE(e.find("libbpf cannot parse"), std::string::npos) << e;
    EXPECT_NE(e.find("give --kernel FILE"), std::string::npos) << e;
  }
  {  // the kallsyms token index
    SpoiledRam ram(guest_.ram());
    std::memset(ram.at(good.text_gpa + tables->token_index), 0xff, 64);
    const std::string e = error_of(ram);
    EXPECT_NE(e.find("no kallsyms tables found"), std::string::npos) << e;
    EXPECT_NE(e.find("give --symbols FILE"), std::string::npos) << e;
  }
  {  // a kallsyms offset out of order: the tables no longer hold together
    SpoiledRam ram(guest_.ram());

    std::memset(ram.at(good.text_gpa + tables->address_table + 4 * (tables->num_syms / 2)), 0x7f,
                4);
    const std::string e = error_of(ram);
    EXPECT_NE(e.find("kallsyms"), std::string::npos) << e;
    EXPECT_NE(e.find("give --symbols FILE"), std::string::npos) << e;
  }
  {  // untouched: the same profile (the spoiling above changed only private copies)
    SpoiledRam ram(guest_.ram());
    EXPECT_EQ(error_of(ram), "");
  }
}

INSTANTIATE_TEST_SUITE_P(Guests, LiveZeroConfig, ::testing::ValuesIn(LabGuest::all()),
                         [](const auto& info) { return info.param.test_name(); });

}  // namespace
}  // namespace imee::test
