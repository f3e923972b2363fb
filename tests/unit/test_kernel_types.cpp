// KernelTypes on hand-encoded BTF (raw, in a hand-built ELF, in fake compressed bzImages), on
// hostile inputs, and on the real Debian kernel ($IMEE_TEST_KERNEL) checked against pahole.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <regex>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "../support/process.hpp"
#include "imee/error.hpp"
#include "imee/isf.hpp"
#include "imee/kernel_types.hpp"
#include "imee/symbols.hpp"

namespace {

using imee::Exception;
using imee::KernelTypes;
using imee::make_isf;
using imee::SymbolTable;
using imee::test::run;
namespace fs = std::filesystem;

// ---- helpers ------------------------------------------------------------------------------------

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/imee_kt_XXXXXX";
    if (mkdtemp(tmpl) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void put16(std::string& b, std::size_t at, std::uint16_t v) {
  for (int i = 0; i < 2; ++i) b[at + i] = static_cast<char>(v >> (8 * i));
}
void put32(std::string& b, std::size_t at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = static_cast<char>(v >> (8 * i));
}
void put64(std::string& b, std::size_t at, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) b[at + i] = static_cast<char>(v >> (8 * i));
}
std::string le32(std::uint32_t v) {
  std::string s(4, '\0');
  put32(s, 0, v);
  return s;
}

// The message of the imee::Exception that loading `path` throws; "" when it loads. Any other
// exception type fails the test.
std::string load_error(const std::string& path) {
  try {
    KernelTypes::load(path);
  } catch (const imee::Exception& e) {
    return e.what();
  }
  return "";
}

bool have_tool(const std::string& name) {
  return run("command -v " + name + " >/dev/null").status == 0;
}

// ---- hand-encoded BTF (kind numbers and layout from the kernel's Documentation/bpf/btf.rst)
// ------

class BtfBuilder {
 public:
  enum Kind : std::uint32_t {
    kInt = 1,
    kPtr = 2,
    kArray = 3,
    kStruct = 4,
    kUnion = 5,
    kTypedef = 8
  };
  struct M {
    std::string name;
    std::uint32_t type;
    std::uint32_t bit_offset;
    std::uint32_t bitfield_size = 0;  // needs kind_flag
  };

  std::uint32_t integer(const std::string& name, std::uint32_t size, std::uint32_t bits,
                        bool is_signed) {
    return add(str(name), kInt, 0, false, size, {(is_signed ? 1u << 24 : 0u) | bits});
  }
  std::uint32_t ptr(std::uint32_t to) { return add(0, kPtr, 0, false, to, {}); }
  std::uint32_t array(std::uint32_t elem, std::uint32_t index, std::uint32_t n) {
    return add(0, kArray, 0, false, 0, {elem, index, n});
  }
  std::uint32_t typedef_(const std::string& name, std::uint32_t to) {
    return add(str(name), kTypedef, 0, false, to, {});
  }
  std::uint32_t composite(Kind kind, const std::string& name, std::uint32_t size,
                          const std::vector<M>& members, bool kind_flag = false) {
    std::vector<std::uint32_t> extra;
    for (const M& m : members) {
      extra.push_back(str(m.name));
      extra.push_back(m.type);
      extra.push_back(kind_flag ? (m.bitfield_size << 24 | m.bit_offset) : m.bit_offset);
    }
    return add(str(name), kind, static_cast<std::uint32_t>(members.size()), kind_flag, size, extra);
  }

  std::uint32_t next_id() const { return count_ + 1; }

  std::string bytes() const {
    std::string out(24, '\0');
    put16(out, 0, 0xeb9f);
    out[2] = 1;  // version
    put32(out, 4, 24);
    put32(out, 8, 0);
    put32(out, 12, static_cast<std::uint32_t>(types_.size()));
    put32(out, 16, static_cast<std::uint32_t>(types_.size()));
    put32(out, 20, static_cast<std::uint32_t>(strings_.size()));
    return out + types_ + strings_;
  }

 private:
  std::uint32_t str(const std::string& s) {
    if (s.empty()) return 0;
    const auto at = static_cast<std::uint32_t>(strings_.size());
    strings_ += s;
    strings_ += '\0';
    return at;
  }
  std::uint32_t add(std::uint32_t name, std::uint32_t kind, std::uint32_t vlen, bool kind_flag,
                    std::uint32_t size_or_type, const std::vector<std::uint32_t>& extra) {
    types_ += le32(name);
    types_ += le32(vlen | kind << 24 | (kind_flag ? 1u << 31 : 0u));
    types_ += le32(size_or_type);
    for (std::uint32_t w : extra) types_ += le32(w);
    return ++count_;
  }

  std::string types_;
  std::string strings_ = std::string(1, '\0');
  std::uint32_t count_ = 0;
};

// struct outer {                                // 40 bytes
//   int x;                                      //  0
//   union { int y; struct { int z; int w; }; }; //  8: y 8, z 8, w 12
//   int flags : 3;                              // 16 (bitfield)
//   int arr[3];                                 // 20, 12 bytes
//   struct outer* p;                            // 32, 8 bytes
// };
// typedef struct outer outer_t;
// struct old_bits { unsigned a : 3, b : 3; };  // bitfields the pre-kind_flag way
// union u { long m; int n; };
std::string sample_btf() {
  using K = BtfBuilder;
  BtfBuilder b;
  const auto i32 = b.integer("int", 4, 32, true);
  const auto i64 = b.integer("long int", 8, 64, true);
  const auto inner = b.composite(K::kStruct, "", 8, {{"z", i32, 0}, {"w", i32, 32}});
  const auto anon_union = b.composite(K::kUnion, "", 8, {{"y", i32, 0}, {"", inner, 0}});
  const auto arr = b.array(i32, i32, 3);
  const auto outer_ptr = b.next_id() + 1;  // BTF allows forward references
  const auto outer = b.composite(K::kStruct, "outer", 40,
                                 {{"x", i32, 0},
                                  {"", anon_union, 64},
                                  {"flags", i32, 128, 3},
                                  {"arr", arr, 160},
                                  {"p", outer_ptr, 256}},
                                 /*kind_flag=*/true);
  EXPECT_EQ(b.ptr(outer), outer_ptr);
  b.typedef_("outer_t", outer);
  const auto bits3 = b.integer("unsigned int", 4, 3, false);
  b.composite(K::kStruct, "old_bits", 4, {{"a", bits3, 0}, {"b", bits3, 3}});
  b.composite(K::kUnion, "u", 8, {{"m", i64, 0}, {"n", i32, 0}});
  return b.bytes();
}

// A minimal ELF64 with the given sections (plus the null section and .shstrtab).
std::string make_elf(const std::vector<std::pair<std::string, std::string>>& sections) {
  std::string out(64, '\0');
  std::string names(1, '\0');
  struct Placed {
    std::uint32_t name;
    std::uint64_t offset, size;
  };
  std::vector<Placed> placed;
  for (const auto& [name, data] : sections) {
    placed.push_back({static_cast<std::uint32_t>(names.size()), out.size(), data.size()});
    names += name + '\0';
    out += data;
  }
  placed.push_back({static_cast<std::uint32_t>(names.size()), out.size(), 0});
  names += std::string(".shstrtab") + '\0';
  placed.back().size = names.size();
  out += names;
  while (out.size() % 8 != 0) out += '\0';
  const std::uint64_t shoff = out.size();
  out += std::string(64, '\0');  // null section
  for (std::size_t i = 0; i < placed.size(); ++i) {
    std::string sh(64, '\0');
    put32(sh, 0, placed[i].name);
    put32(sh, 4, i + 1 == placed.size() ? 3 /* SHT_STRTAB */ : 1 /* SHT_PROGBITS */);
    put64(sh, 0x18, placed[i].offset);
    put64(sh, 0x20, placed[i].size);
    put64(sh, 0x30, 1);
    out += sh;
  }
  std::memcpy(out.data(),
              "\x7f"
              "ELF\x02\x01\x01",
              7);
  put16(out, 0x10, 2);   // ET_EXEC
  put16(out, 0x12, 62);  // x86-64
  put32(out, 0x14, 1);
  put64(out, 0x28, shoff);
  put16(out, 0x34, 64);
  put16(out, 0x3a, 64);
  put16(out, 0x3c, static_cast<std::uint16_t>(placed.size() + 1));
  put16(out, 0x3e, static_cast<std::uint16_t>(placed.size()));
  return out;
}

constexpr std::string_view kXzMagic("\3757zXZ\0", 6);
constexpr std::string_view kZstdMagic("\x28\xb5\x2f\xfd", 4);

constexpr const char* kTestBanner =
    "Linux version 9.8.7-test (me@host) (gcc 12) #1 SMP PREEMPT_DYNAMIC Thu Jan 1 00:00:00 UTC "
    "1970";

std::string sample_elf() {
  return make_elf({{".text", std::string(100, '\x90')},
                   {".rodata", std::string("%s version %s\0Linux version \0", 30) + kTestBanner +
                                   "\n" + std::string("\0\0\0", 3)},
                   {".BTF", sample_btf()}});
}

// A bzImage-shaped file: boot header with "HdrS", one setup sector, then the payload (the
// compressed kernel followed by its 4-byte decompressed size, as the kernel build lays it out).
std::string make_bzimage(const std::string& compressed, std::uint32_t decompressed_size) {
  std::string image(1024, '\0');  // boot sector + 1 setup sector
  image[0x1f1] = 1;
  std::memcpy(image.data() + 0x202, "HdrS", 4);
  put16(image, 0x206, 0x020f);
  const std::string payload = compressed + le32(decompressed_size);
  put32(image, 0x248, 0);
  put32(image, 0x24c, static_cast<std::uint32_t>(payload.size()));
  return image + payload;
}

void expect_sample_layout(const KernelTypes& t) {
  using Member = KernelTypes::Member;
  const auto eq = [](std::optional<Member> m, std::uint64_t offset, std::uint64_t size) {
    if (!m) return ::testing::AssertionFailure() << "member not found";
    if (m->offset != offset || m->size != size)
      return ::testing::AssertionFailure() << "got offset " << m->offset << " size " << m->size;
    return ::testing::AssertionSuccess();
  };
  EXPECT_TRUE(eq(t.member("outer", "x"), 0, 4));
  EXPECT_TRUE(eq(t.member("outer", "y"), 8, 4));   // in the anonymous union
  EXPECT_TRUE(eq(t.member("outer", "z"), 8, 4));   // anonymous struct in the anonymous union
  EXPECT_TRUE(eq(t.member("outer", "w"), 12, 4));  // offsets add up through both
  EXPECT_TRUE(eq(t.member("outer", "arr"), 20, 12));
  EXPECT_TRUE(eq(t.member("outer", "p"), 32, 8));
  EXPECT_TRUE(eq(t.member("outer_t", "w"), 12, 4));  // through the typedef
  EXPECT_TRUE(eq(t.member("struct outer", "p"), 32, 8));
  EXPECT_TRUE(eq(t.member("u", "m"), 0, 8));
  EXPECT_TRUE(eq(t.member("union u", "n"), 0, 4));
  EXPECT_FALSE(t.member("outer", "flags"));  // bitfield (kind_flag encoding)
  EXPECT_FALSE(t.member("old_bits", "a"));   // bitfield (narrow int encoding)
  EXPECT_FALSE(t.member("old_bits", "b"));
  EXPECT_FALSE(t.member("outer", "nope"));
  EXPECT_FALSE(t.member("outer", ""));
  EXPECT_FALSE(t.member("missing", "x"));
  EXPECT_FALSE(t.member("int", "x"));       // not a composite
  EXPECT_FALSE(t.member("struct u", "m"));  // u is a union
  EXPECT_EQ(t.type_size("outer"), 40u);
  EXPECT_EQ(t.type_size("outer_t"), 40u);
  EXPECT_EQ(t.type_size("u"), 8u);
  EXPECT_EQ(t.type_size("old_bits"), 4u);
  EXPECT_EQ(t.type_size("int"), 4u);
  EXPECT_FALSE(t.type_size("missing"));
  EXPECT_FALSE(t.type_size(""));
}

// ---- hand-built inputs: always run -------------------------------------------------------------

TEST(KernelTypesSynthetic, RawBtf) {
  TempDir dir;
  write_file(dir.file("raw.btf"), sample_btf());
  const KernelTypes t = KernelTypes::load(dir.file("raw.btf"));
  expect_sample_layout(t);
  EXPECT_TRUE(t.banners().empty());
}

TEST(KernelTypesSynthetic, ElfWithBtfSectionAndBanner) {
  TempDir dir;
  write_file(dir.file("vmlinux"), sample_elf());
  const KernelTypes t = KernelTypes::load(dir.file("vmlinux"));
  expect_sample_layout(t);
  // The bare "Linux version " before it is not a banner.
  ASSERT_EQ(t.banners().size(), 1u);
  EXPECT_EQ(t.banners()[0].text, kTestBanner);
  if (have_tool("readelf")) {  // the hand-built ELF is well-formed for binutils too
    const auto r = run("readelf -S " + dir.file("vmlinux"));
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find(".BTF"), std::string::npos);
  }
}

TEST(KernelTypesSynthetic, MovedFromAndMovedTo) {
  TempDir dir;
  write_file(dir.file("vmlinux"), sample_elf());
  KernelTypes a = KernelTypes::load(dir.file("vmlinux"));
  KernelTypes b = std::move(a);
  EXPECT_EQ(b.type_size("outer"), 40u);
  EXPECT_FALSE(a.member("outer", "x"));  // NOLINT(bugprone-use-after-move): defined as empty
  a = std::move(b);
  EXPECT_EQ(a.type_size("outer"), 40u);
}

// Each compressor the kernel build can use for a bzImage payload, via the command-line tools.
TEST(KernelTypesSynthetic, CompressedBzImages) {
  const struct {
    const char* tool;
    const char* command;  // compresses stdin to stdout
  } codecs[] = {
      {"gzip", "gzip -9 -c"},
      {"xz", "xz --check=crc32 --x86 --lzma2=,dict=1MiB -c"},  // as scripts/xz_wrap.sh
      {"xz", "xz --format=lzma -c"},
      {"zstd", "zstd -q -19 -c"},
  };
  TempDir dir;
  const std::string elf = sample_elf();
  write_file(dir.file("vmlinux"), elf);
  int tested = 0;
  for (const auto& c : codecs) {
    SCOPED_TRACE(c.command);
    if (!have_tool(c.tool)) continue;
    const auto r = run(std::string(c.command) + " < " + dir.file("vmlinux"));
    ASSERT_EQ(r.status, 0) << r.err;
    write_file(dir.file("bzImage"), make_bzimage(r.out, static_cast<std::uint32_t>(elf.size())));
    const KernelTypes t = KernelTypes::load(dir.file("bzImage"));
    expect_sample_layout(t);
    ASSERT_EQ(t.banners().size(), 1u);
    EXPECT_EQ(t.banners()[0].text, kTestBanner);
    // The bare compressed stream (a vmlinux.xz, say) is found by its magic.
    write_file(dir.file("vmlinux.z"), r.out);
    EXPECT_EQ(KernelTypes::load(dir.file("vmlinux.z")).type_size("outer"), 40u);
    // Truncated payloads fail cleanly, whether the boot header says so or not.
    std::string cut = make_bzimage(r.out.substr(0, r.out.size() / 2), elf.size());
    write_file(dir.file("cut"), cut);
    EXPECT_NE(load_error(dir.file("cut")), "");
    cut.resize(cut.size() - 10);  // payload_length now runs past the end of the file
    write_file(dir.file("cut"), cut);
    EXPECT_NE(load_error(dir.file("cut")).find("outside"), std::string::npos);
    ++tested;
  }
  if (tested == 0) GTEST_SKIP() << "none of gzip, xz, zstd is installed";
}

TEST(KernelTypesSynthetic, BadInputsThrow) {
  TempDir dir;
  const auto expect_throw = [&](const std::string& name, const std::string& bytes,
                                const std::string& reason) {
    SCOPED_TRACE(name);
    write_file(dir.file(name), bytes);
    const std::string msg = load_error(dir.file(name));
    EXPECT_NE(msg.find(dir.file(name)), std::string::npos) << msg;  // names the file
    EXPECT_NE(msg.find(reason), std::string::npos) << msg;
  };
  expect_throw("empty", "", "empty");
  expect_throw("tiny",
               "\x7f"
               "ELF",
               "too small");
  std::mt19937 rng(42);
  std::string random(65536, '\0');
  for (char& c : random) c = static_cast<char>(rng());
  random[0] = 'R';  // not by chance a magic number
  expect_throw("random", random, "");
  expect_throw("text", std::string(1000, 'a'), "unrecognised format");

  const std::string elf = sample_elf();
  expect_throw("no_btf", make_elf({{".text", "abc"}, {".rodata", "xyz"}}), "no .BTF section");
  std::string e = elf;
  put64(e, 0x28, elf.size() + 100);  // section headers beyond the end
  expect_throw("shoff", e, "corrupt ELF");
  e = elf;
  put16(e, 0x3c, 60000);  // more section headers than the file holds
  expect_throw("shnum", e, "corrupt ELF");
  e = elf;
  put16(e, 0x3e, 50);  // name table index out of range
  expect_throw("shstrndx", e, "corrupt ELF");
  e = elf;
  put16(e, 0x3a, 16);  // entries too small
  expect_throw("shentsize", e, "corrupt ELF");
  e = elf;
  const std::uint64_t shoff = elf.size() - 5 * 64;
  put64(e, shoff + 3 * 64 + 0x20, 1ull << 40);  // .BTF size beyond the end
  expect_throw("btf_size", e, "outside the file");
  e = elf;
  put64(e, shoff + 3 * 64 + 0x18, ~0ull - 4);  // .BTF offset that overflows when added
  expect_throw("btf_offset", e, "outside the file");
  e = elf;
  e[4] = 1;  // ELFCLASS32
  expect_throw("elf32", e, "64-bit");
  expect_throw("elf_truncated", elf.substr(0, elf.size() - 100), "corrupt ELF");

  std::string btf = sample_btf();
  expect_throw("btf_truncated", btf.substr(0, btf.size() - 7), "libbpf");
  btf[12] = '\x7f';  // type section length beyond the data
  expect_throw("btf_header", btf, "libbpf");

  std::string bz = make_bzimage(std::string(4000, 'Q'), 100000);
  expect_throw("bz_unknown_codec", bz, "not gzip, xz, lzma or zstd");
  put32(bz, 0x248, 0x7fffffff);
  expect_throw("bz_far_payload", bz, "outside");
  expect_throw("bz_bad_xz", make_bzimage(std::string(kXzMagic) + std::string(500, 'x'), 1), "xz");
}

TEST(KernelTypesSynthetic, MissingFileAndDirectory) {
  EXPECT_NE(load_error("/nonexistent/imee/vmlinux").find("/nonexistent/imee/vmlinux"),
            std::string::npos);
  EXPECT_NE(load_error("/tmp"), "");
}

// Random byte flips in a valid ELF and raw BTF: each load either works or throws imee::Exception
// (anything else, or a crash, fails). Most useful under -DIMEE_SANITIZE=ON.
TEST(KernelTypesSynthetic, MutatedInputsNeverCrash) {
  TempDir dir;
  std::mt19937 rng(7);
  const std::string originals[] = {sample_elf(), sample_btf()};
  int loaded = 0, rejected = 0;
  for (const std::string& original : originals) {
    for (int round = 0; round < 300; ++round) {
      std::string m = original;
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int i = 0; i < flips; ++i) m[rng() % m.size()] = static_cast<char>(rng());
      write_file(dir.file("m"), m);
      try {
        const KernelTypes t = KernelTypes::load(dir.file("m"));
        (void)t.member("outer", "w");
        (void)t.member("outer_t", "p");
        (void)t.type_size("u");
        ++loaded;
      } catch (const imee::Exception&) {
        ++rejected;
      }
    }
  }
  EXPECT_GT(loaded, 0);
  EXPECT_GT(rejected, 0);
}

// Anonymous members nested as a deep DAG (each level holds the next twice): a naive search is
// exponential; the lookup must give up quickly instead.
// libFuzzer (fuzz_btf_memory) found it: libbpf accepts a member whose name lies outside the
// string section (btf__name_by_offset gives NULL), and the ISF writer made a std::string of it.
TEST(KernelTypesSynthetic, MemberNameOutsideTheStringsIsNoCrash) {
  using K = BtfBuilder;
  BtfBuilder b;
  const auto i32 = b.integer("int", 4, 32, true);
  b.composite(K::kStruct, "s", 4, {{"m", i32, 0}});
  std::string bytes = b.bytes();
  put32(bytes, 24 + 16 + 12, 0x7ffffff0);  // the member's name_off: int (16 bytes), struct header
  const auto* data = reinterpret_cast<const std::uint8_t*>(bytes.data());
  try {
    const KernelTypes t = KernelTypes::from_btf(std::span(data, bytes.size()), "test");
    const SymbolTable symbols =
        SymbolTable::from_symbols({{0xffffffff81000000ull, 'T', "_text"}}, "test");
    const std::string isf = make_isf(t, symbols, 0xffffffff81000000ull, "Linux version 6.1.0");
    EXPECT_NE(isf.find("\"s\""), std::string::npos);
  } catch (const Exception& e) {
    SUCCEED() << "refused: " << e.what();
  }
}

// Also from fuzz_btf_memory: a type name that is not UTF-8 made the ISF writer's JSON dump throw.
TEST(KernelTypesSynthetic, NamesThatAreNotUtf8GiveValidIsf) {
  using K = BtfBuilder;
  BtfBuilder b;
  const auto i32 = b.integer("int", 4, 32, true);
  b.composite(K::kStruct, "bad\xb6name", 4, {{"m\xff", i32, 0}});
  const std::string bytes = b.bytes();
  const auto* data = reinterpret_cast<const std::uint8_t*>(bytes.data());
  const KernelTypes t = KernelTypes::from_btf(std::span(data, bytes.size()), "test");
  const SymbolTable symbols =
      SymbolTable::from_symbols({{0xffffffff81000000ull, 'T', "_text"}}, "test");
  const std::string isf = make_isf(t, symbols, 0xffffffff81000000ull, "Linux version 6.1.0");
  EXPECT_NE(isf.find("bad\xef\xbf\xbdname"), std::string::npos);  // U+FFFD
}

TEST(KernelTypesSynthetic, PathologicalNestingTerminates) {
  using K = BtfBuilder;
  BtfBuilder b;
  const auto i32 = b.integer("int", 4, 32, true);
  constexpr int kLevels = 60;
  const std::uint32_t first = b.next_id();
  for (int level = 0; level < kLevels; ++level) {
    const std::uint32_t next = first + level + 1;
    if (level + 1 == kLevels) {
      b.composite(K::kStruct, "", 4, {{"leaf", i32, 0}});
    } else {
      b.composite(K::kStruct, level == 0 ? "top" : "", 4, {{"", next, 0}, {"", next, 0}});
    }
  }
  TempDir dir;
  write_file(dir.file("dag.btf"), b.bytes());
  const KernelTypes t = KernelTypes::load(dir.file("dag.btf"));
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(t.member("top", "missing"));
  (void)t.member("top", "leaf");  // too deep to matter; must just return
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

// ---- the real kernel ----------------------------------------------------------------------------

// Everything derived from $IMEE_TEST_KERNEL once per process: our load, and independent oracles
// made with xz or zstd, objcopy and pahole.
struct RealKernel {
  std::string skip;  // why the tests cannot run; empty when they can
  std::string image;
  std::unique_ptr<TempDir> dir;
  std::string elf;             // vmlinux, decompressed with xz(1) or zstd(1)
  std::string raw_btf;         // its .BTF, cut out with objcopy(1)
  std::string payload;         // the compressed kernel as found in the image
  std::string payload_format;  // "xz" or "zstd"; empty when neither was found (or no tool)
  std::optional<KernelTypes> types;
  std::string load_error;

  static RealKernel& get() {
    static RealKernel k = make();
    return k;
  }

 private:
  static RealKernel make() {
    RealKernel k;
    const char* env = std::getenv("IMEE_TEST_KERNEL");
    if (env == nullptr || *env == '\0') {
      k.skip =
          "IMEE_TEST_KERNEL is not set (path to a Debian vmlinuz with BTF, e.g. "
          "/boot/vmlinuz-6.1.0-*-amd64)";
      return k;
    }
    k.image = env;
    if (!fs::exists(k.image)) {
      k.skip = "IMEE_TEST_KERNEL=" + k.image + " does not exist";
      return k;
    }
    try {
      k.types = KernelTypes::load(k.image);
    } catch (const imee::Exception& e) {
      k.load_error = e.what();
    }
    // Oracle files, made without libimee: the payload cut out of the image as the boot header
    // places it (offset 0x248, length 0x24c after the setup sectors; the last 4 bytes are the
    // decompressed size the kernel build appends), decompressed by xz(1) or zstd(1): Debian's
    // 6.1 compresses with xz, its 6.12 with zstd.
    k.dir = std::make_unique<TempDir>();
    const std::string image = read_file(k.image);
    if (image.size() < 0x250 || image.compare(0x202, 4, "HdrS") != 0) return k;
    auto u32 = [&](std::size_t at) {
      std::uint32_t v;
      std::memcpy(&v, image.data() + at, 4);
      return v;
    };
    const std::size_t setup_sects =
        image[0x1f1] != 0 ? static_cast<unsigned char>(image[0x1f1]) : 4;
    const std::size_t at = (setup_sects + 1) * 512 + u32(0x248), len = u32(0x24c);
    if (len < 4 || at + len > image.size()) return k;
    k.payload = image.substr(at, len - 4);
    std::string decompress;
    if (k.payload.starts_with(kXzMagic) && have_tool("xz")) {
      decompress = "xz -dc --single-stream ";
      k.payload_format = "xz";
    } else if (k.payload.starts_with(kZstdMagic) && have_tool("zstd")) {
      decompress = "zstd -dcq ";
      k.payload_format = "zstd";
    } else {
      return k;
    }
    write_file(k.dir->file("payload"), k.payload);
    const auto x = run(decompress + k.dir->file("payload") + " > " + k.dir->file("vmlinux"));
    if (x.status != 0) return k;
    k.elf = k.dir->file("vmlinux");
    if (!have_tool("objcopy")) return k;
    const auto o =
        run("objcopy -O binary --only-section=.BTF " + k.elf + " " + k.dir->file("vmlinux.btf"));
    if (o.status == 0 && fs::file_size(k.dir->file("vmlinux.btf")) > 0)
      k.raw_btf = k.dir->file("vmlinux.btf");
    return k;
  }
};

#define REQUIRE_REAL_KERNEL()                              \
  RealKernel& k = RealKernel::get();                       \
  if (!k.skip.empty()) GTEST_SKIP() << k.skip;             \
  ASSERT_TRUE(k.types) << "load failed: " << k.load_error; \
  const KernelTypes& types = *k.types

// Members the profile uses, as "struct.member".
const std::vector<std::pair<std::string, std::string>> kProfileMembers = {
    {"task_struct", "tasks"},
    {"task_struct", "pid"},
    {"task_struct", "tgid"},
    {"task_struct", "comm"},
    {"task_struct", "real_parent"},
    {"task_struct", "cred"},
    {"task_struct", "real_cred"},
    {"task_struct", "mm"},
    {"mm_struct", "pgd"},
    {"cred", "uid"},
    {"cred", "gid"},
    {"cred", "suid"},
    {"cred", "sgid"},
    {"cred", "euid"},
    {"cred", "egid"},
    {"cred", "fsuid"},
    {"cred", "fsgid"},
    {"cred", "cap_inheritable"},
    {"cred", "cap_permitted"},
    {"cred", "cap_effective"},
    {"cred", "cap_bset"},
    {"cred", "cap_ambient"},
    {"list_head", "next"},
};

struct PaholeLayout {
  std::map<std::string, std::pair<std::uint64_t, std::uint64_t>> members;  // offset, size
  std::optional<std::uint64_t> size;
  std::string typedef_target;  // for "typedef struct X name;"
};

// Parses `pahole -C name` output: "  type name[N];  /* offset size */" and "/* size: N, ...".
PaholeLayout pahole(const std::string& file, const std::string& type) {
  PaholeLayout layout;
  const auto r = run("pahole -F btf -C " + type + " " + file);
  EXPECT_EQ(r.status, 0) << r.err;
  static const std::regex member(R"(([A-Za-z_]\w*)(\[\d+\])*;\s*/\*\s*(\d+)\s+(\d+)\s*\*/)");
  static const std::regex size(R"(/\*\s*size:\s*(\d+),)");
  static const std::regex alias(R"(typedef\s+(?:struct|union)\s+(\w+)\s+\w+;)");
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    if (std::regex_search(line, m, member)) {
      layout.members.emplace(m[1], std::pair{std::stoull(m[3]), std::stoull(m[4])});
    } else if (std::regex_search(line, m, size)) {
      layout.size = std::stoull(m[1]);
    } else if (std::regex_search(line, m, alias)) {
      layout.typedef_target = m[1];
    }
  }
  return layout;
}

TEST(KernelTypesReal, MatchesPahole) {
  REQUIRE_REAL_KERNEL();
  if (!have_tool("pahole")) GTEST_SKIP() << "pahole not installed (Debian package dwarves)";
  if (k.elf.empty())
    GTEST_SKIP() << "could not extract vmlinux from the image with xz(1) or zstd(1)";
  std::map<std::string, PaholeLayout> oracle;
  for (const auto& [type, name] : kProfileMembers) {
    SCOPED_TRACE(type + "." + name);
    if (!oracle.contains(type)) oracle[type] = pahole(k.elf, type);
    const auto it = oracle[type].members.find(name);
    ASSERT_NE(it, oracle[type].members.end()) << "pahole does not show it";
    const auto m = types.member(type, name);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->offset, it->second.first);
    EXPECT_EQ(m->size, it->second.second);
  }
  for (const char* type : {"task_struct", "mm_struct", "cred", "list_head"}) {
    SCOPED_TRACE(type);
    ASSERT_TRUE(oracle[type].size);
    EXPECT_EQ(types.type_size(type), oracle[type].size);
  }
  // kernel_cap_t is a typedef of a named struct in 6.1 (pahole names the struct, then sizes
  // it), of an anonymous one since 6.3 (pahole shows and sizes it in place).
  const PaholeLayout cap_typedef = pahole(k.elf, "kernel_cap_t");
  const PaholeLayout cap =
      cap_typedef.typedef_target.empty() ? cap_typedef : pahole(k.elf, cap_typedef.typedef_target);
  ASSERT_TRUE(cap.size);
  EXPECT_EQ(types.type_size("kernel_cap_t"), cap.size);
  EXPECT_EQ(*cap.size, 8u);
  // A known bitfield in task_struct is refused rather than given a wrong byte offset.
  EXPECT_FALSE(types.member("task_struct", "sched_reset_on_fork"));
  EXPECT_FALSE(types.member("task_struct", "no_such_member"));
  EXPECT_FALSE(types.member("no_such_struct", "pid"));
}

TEST(KernelTypesReal, Banner) {
  REQUIRE_REAL_KERNEL();
  ASSERT_FALSE(types.banners().empty());
  const std::string elf = k.elf.empty() ? "" : read_file(k.elf);
  for (const auto& b : types.banners()) {
    EXPECT_EQ(b.text.rfind("Linux version 6.", 0), 0u) << b.text;  // Debian 12: 6.1 or 6.12
    EXPECT_EQ(b.text.find('\n'), std::string::npos);
    EXPECT_NE(b.text_offset, KernelTypes::kUnknownOffset)
        << "a vmlinux's segments place every banner";
    EXPECT_EQ(types.banner_at(b.text_offset), b.text);
    // Each banner in the kernel's data ends with a newline right after what we report.
    if (!elf.empty()) {
      EXPECT_NE(elf.find(b.text + "\n"), std::string::npos);
    }
  }
  EXPECT_EQ(types.banner_at(1), "");
}

TEST(KernelTypesReal, ElfAndRawBtfGiveTheSameAnswers) {
  REQUIRE_REAL_KERNEL();
  if (k.elf.empty() || k.raw_btf.empty())
    GTEST_SKIP() << "needs xz(1) or zstd(1), and objcopy(1), to make the ELF and raw BTF copies";
  const KernelTypes from_elf = KernelTypes::load(k.elf);
  const KernelTypes from_raw = KernelTypes::load(k.raw_btf);
  ASSERT_EQ(from_elf.banners().size(), types.banners().size());
  for (std::size_t i = 0; i < types.banners().size(); ++i) {
    EXPECT_EQ(from_elf.banners()[i].text, types.banners()[i].text);
    EXPECT_EQ(from_elf.banners()[i].text_offset, types.banners()[i].text_offset);
  }
  EXPECT_TRUE(from_raw.banners().empty());
  for (const auto& [type, name] : kProfileMembers) {
    SCOPED_TRACE(type + "." + name);
    const auto a = types.member(type, name), b = from_elf.member(type, name),
               c = from_raw.member(type, name);
    ASSERT_TRUE(a && b && c);
    EXPECT_EQ(a->offset, b->offset);
    EXPECT_EQ(a->offset, c->offset);
    EXPECT_EQ(a->size, b->size);
    EXPECT_EQ(a->size, c->size);
    EXPECT_EQ(types.type_size(type), from_raw.type_size(type));
  }
  EXPECT_EQ(from_raw.type_size("kernel_cap_t"), 8u);
}

TEST(KernelTypesReal, CorruptImagesThrow) {
  REQUIRE_REAL_KERNEL();
  (void)types;
  const std::string image = read_file(k.image);
  TempDir dir;
  // Truncated image: the boot header's payload runs past the end.
  write_file(dir.file("half"), image.substr(0, image.size() / 2));
  EXPECT_NE(load_error(dir.file("half")).find("truncated image"), std::string::npos);
  // Only the header part.
  write_file(dir.file("head"), image.substr(0, 4096));
  EXPECT_NE(load_error(dir.file("head")), "");
  // Damage inside the compressed payload, boot header intact.
  std::string damaged = image;
  for (std::size_t i = 0; i < 4096; ++i) damaged[image.size() / 2 + i] ^= 0x5a;
  write_file(dir.file("damaged"), damaged);
  EXPECT_NE(load_error(dir.file("damaged")).find("corrupt"), std::string::npos);
  if (k.payload_format.empty()) GTEST_SKIP() << "no xz or zstd payload found in the image";
  // A truncated compressed stream on its own.
  write_file(dir.file("cut." + k.payload_format), k.payload.substr(0, 1 << 20));
  EXPECT_NE(load_error(dir.file("cut." + k.payload_format)).find("truncated"), std::string::npos);
  if (k.elf.empty()) return;
  // The vmlinux cut before its section headers.
  write_file(dir.file("cut.elf"), read_file(k.elf).substr(0, 32 << 20));
  EXPECT_NE(load_error(dir.file("cut.elf")).find("corrupt ELF"), std::string::npos);
}

}  // namespace
