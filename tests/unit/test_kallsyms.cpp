// The kallsyms decoder on synthetic tables laid out as scripts/kallsyms.c lays them out (6.1:
// addresses first; 6.4+: num_syms first, offsets after the token index; the absolute layout),
// checked against the symbol list they were made from; and on hostile tables.
#include <bpf/btf.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "imee/error.hpp"
#include "imee/kallsyms.hpp"
#include "imee/kernel_types.hpp"
#include "imee/linux_profile.hpp"

namespace {

using imee::KallsymsLayout;
using imee::Symbol;

constexpr std::uint64_t kText = 0xffffffff9a000000ull;  // a KASLR boot's _text

// The symbols the tables encode: per-cpu absolute ones first (small addresses), then text and
// data, one nameless symbol, and one name long enough to need the two-byte length (>= 128
// tokens).
std::vector<Symbol> make_symbols(bool percpu) {
  std::vector<Symbol> out;
  if (percpu) {
    out.push_back({0x0, 'A', "fixed_percpu_data"});
    out.push_back({0x1000, 'A', "cpu_debug_store"});
    out.push_back({0x20000, 'A', "current_task"});
  }
  out.push_back({kText, 'T', "_text"});
  out.push_back({kText, 'T', "startup_64"});
  std::mt19937 rng(42);
  std::uint64_t a = kText + 0x40;
  for (int i = 0; i < 700; ++i) {
    a += 16 + rng() % 512;
    const char type = "TtDdRrBbW"[rng() % 9];
    out.push_back({a, type, "sym_" + std::to_string(i) + (i % 3 ? "_init" : "__x64_sys")});
  }
  std::string long_name;
  for (int i = 0; i < 70; ++i) long_name += "xz";  // no multi-character token: 140 tokens
  out.push_back({a + 8, 'T', long_name});
  out.push_back({a + 16, 'D', "linux_banner"});
  out.push_back({a + 32, 'B', "__stop_BTF"});
  return out;
}

struct Encoded {
  std::vector<std::uint8_t> image;
  std::vector<Symbol> expected;  // what decoding must give
};

void put_align(std::vector<std::uint8_t>& b) {
  while (b.size() % 8) b.push_back(0);
}
template <class T>
void put(std::vector<std::uint8_t>& b, T v) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
  b.insert(b.end(), p, p + sizeof v);
}

enum class Layout { k61Relative, k61RelativeNoPercpu, k612, kAbsolute };

// Encodes `symbols` as scripts/kallsyms.c does, after `junk` bytes of unrelated data.
Encoded encode(const std::vector<Symbol>& symbols, Layout layout, std::size_t junk) {
  // Tokens: a few multi-character ones, every character used, then fillers up to 256.
  std::vector<std::string> tokens = {"sym_", "_init", "__x64_sys", "Tsym_"};
  std::string chars;
  for (const Symbol& s : symbols)
    for (char c : std::string(1, s.type) + s.name)
      if (chars.find(c) == std::string::npos) chars += c;
  for (char c : chars) tokens.push_back(std::string(1, c));
  for (int i = 0; tokens.size() < 256; ++i) tokens.push_back("~" + std::to_string(i));

  std::vector<std::uint8_t> names;
  std::vector<std::uint32_t> markers;
  std::vector<Symbol> expected;
  std::vector<Symbol> with_nameless = symbols;
  with_nameless.insert(with_nameless.begin() + with_nameless.size() / 2,
                       Symbol{with_nameless[with_nameless.size() / 2].address, 't', ""});
  for (std::size_t i = 0; i < with_nameless.size(); ++i) {
    const Symbol& s = with_nameless[i];
    if (i % 256 == 0) markers.push_back(static_cast<std::uint32_t>(names.size()));
    const std::string text = std::string(1, s.type) + s.name;
    std::vector<std::uint8_t> seq;
    for (std::size_t at = 0; at < text.size();) {  // longest token first
      std::size_t best = 256, best_len = 0;
      for (std::size_t t = 0; t < 256; ++t)
        if (tokens[t].size() > best_len && text.compare(at, tokens[t].size(), tokens[t]) == 0)
          best = t, best_len = tokens[t].size();
      seq.push_back(static_cast<std::uint8_t>(best));
      at += best_len;
    }
    if (seq.size() < 0x80) {
      names.push_back(static_cast<std::uint8_t>(seq.size()));
    } else {
      names.push_back(static_cast<std::uint8_t>((seq.size() & 0x7f) | 0x80));
      names.push_back(static_cast<std::uint8_t>(seq.size() >> 7));
    }
    names.insert(names.end(), seq.begin(), seq.end());
    if (!s.name.empty()) expected.push_back(s);
  }
  const std::size_t n = with_nameless.size();

  const bool percpu = layout == Layout::k61Relative || layout == Layout::k612;
  std::uint64_t base = ~0ull;
  for (const Symbol& s : with_nameless)
    if (s.type != 'A') base = std::min(base, s.address);
  std::vector<std::uint8_t> addresses;
  for (const Symbol& s : with_nameless) {
    if (layout == Layout::kAbsolute) {
      put<std::uint64_t>(addresses, s.address);
    } else if (!percpu) {
      put<std::uint32_t>(addresses, static_cast<std::uint32_t>(s.address - base));
    } else if (s.type == 'A') {
      put<std::int32_t>(addresses, static_cast<std::int32_t>(s.address));
    } else {
      put<std::int32_t>(addresses, static_cast<std::int32_t>(base - s.address - 1));
    }
  }
  std::vector<std::uint8_t> token_table, token_index;
  for (const std::string& t : tokens) {
    put<std::uint16_t>(token_index, static_cast<std::uint16_t>(token_table.size()));
    token_table.insert(token_table.end(), t.begin(), t.end());
    token_table.push_back(0);
  }
  std::vector<std::uint8_t> seqs(3 * n, 0x5a);

  std::vector<std::uint8_t> b;
  std::mt19937 rng(7);
  for (std::size_t i = 0; i < junk; ++i) b.push_back(static_cast<std::uint8_t>(rng()));
  put_align(b);
  const auto section = [&](const std::vector<std::uint8_t>& part) {
    put_align(b);
    b.insert(b.end(), part.begin(), part.end());
  };
  std::vector<std::uint8_t> count, base_bytes, marker_bytes;
  put<std::uint32_t>(count, static_cast<std::uint32_t>(n));
  put<std::uint64_t>(base_bytes, base);
  for (std::uint32_t m : markers) put<std::uint32_t>(marker_bytes, m);
  switch (layout) {
    case Layout::k61Relative:
    case Layout::k61RelativeNoPercpu:
      for (const auto* part : {&addresses, &base_bytes, &count, &names, &marker_bytes, &seqs,
                               &token_table, &token_index})
        section(*part);
      break;
    case Layout::kAbsolute:
      for (const auto* part :
           {&addresses, &count, &names, &marker_bytes, &token_table, &token_index})
        section(*part);
      break;
    case Layout::k612:
      for (const auto* part : {&count, &names, &marker_bytes, &token_table, &token_index,
                               &addresses, &base_bytes, &seqs})
        section(*part);
      break;
  }
  for (std::size_t i = 0; i < 4096; ++i) b.push_back(static_cast<std::uint8_t>(rng()));
  return {b, expected};
}

void expect_same(const std::vector<Symbol>& got, const std::vector<Symbol>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].name, want[i].name) << i;
    EXPECT_EQ(got[i].type, want[i].type) << want[i].name;
    EXPECT_EQ(got[i].address, want[i].address) << want[i].name;
  }
}

struct Case {
  Layout layout;
  bool percpu;
  KallsymsLayout::Addresses kind;
  const char* name;
};

class KallsymsLayouts : public ::testing::TestWithParam<Case> {};

TEST_P(KallsymsLayouts, FoundByStructureAndDecodedExactly) {
  const Case c = GetParam();
  for (std::size_t junk : {0u, 8u, 4096u + 24u}) {
    const Encoded e = encode(make_symbols(c.percpu), c.layout, junk);
    const auto layout = imee::find_kallsyms(e.image);
    ASSERT_TRUE(layout.has_value()) << c.name << " junk " << junk;
    EXPECT_EQ(layout->addresses, c.kind);
    EXPECT_EQ(layout->num_syms, e.expected.size() + 1);  // the nameless one is counted
    expect_same(imee::decode_kallsyms(e.image, *layout), e.expected);
  }
}

INSTANTIATE_TEST_SUITE_P(
    All, KallsymsLayouts,
    ::testing::Values(
        Case{Layout::k61Relative, true, KallsymsLayout::Addresses::kRelativePercpu, "61"},
        Case{Layout::k61RelativeNoPercpu, false, KallsymsLayout::Addresses::kRelative, "61np"},
        Case{Layout::k612, true, KallsymsLayout::Addresses::kRelativePercpu, "612"},
        Case{Layout::kAbsolute, true, KallsymsLayout::Addresses::kAbsolute, "abs"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Kallsyms, NothingFoundInUnrelatedOrEmptyData) {
  std::vector<std::uint8_t> zeros(1 << 20, 0);
  EXPECT_FALSE(imee::find_kallsyms(zeros).has_value());
  EXPECT_FALSE(imee::find_kallsyms({}).has_value());
  std::vector<std::uint8_t> noise(1 << 20);
  std::mt19937 rng(1);
  for (auto& b : noise) b = static_cast<std::uint8_t>(rng());
  EXPECT_FALSE(imee::find_kallsyms(noise).has_value());
}

TEST(Kallsyms, TruncatedTablesAreNotFound) {
  const Encoded e = encode(make_symbols(true), Layout::k612, 64);
  const auto layout = imee::find_kallsyms(e.image);
  ASSERT_TRUE(layout);
  // Cut inside the offsets (after the token index): the 6.12 layout is incomplete.
  std::vector<std::uint8_t> cut(e.image.begin(), e.image.begin() + layout->token_index + 600);
  EXPECT_FALSE(imee::find_kallsyms(cut).has_value());
}

TEST(Kallsyms, OutOfRangeOffsetsAndIndicesThrow) {
  const Encoded e = encode(make_symbols(true), Layout::k61Relative, 0);
  const auto found = imee::find_kallsyms(e.image);
  ASSERT_TRUE(found);
  const auto throws = [&](const KallsymsLayout& l, std::vector<std::uint8_t> image,
                          const char* what) {
    try {
      (void)imee::decode_kallsyms(image, l);
      ADD_FAILURE() << what << ": no exception";
    } catch (const imee::Exception& ex) {
      EXPECT_NE(std::string(ex.what()).find("kallsyms tables are inconsistent"), std::string::npos)
          << ex.what();
    }
  };
  {  // a token index pointing past the table
    std::vector<std::uint8_t> img = e.image;
    const std::uint16_t wild = 0xfff0;
    std::memcpy(img.data() + found->token_index + 2 * 17, &wild, 2);
    throws(*found, img, "token index");
  }
  {  // a name length running off the image
    KallsymsLayout l = *found;
    std::vector<std::uint8_t> img(e.image.begin(), e.image.begin() + found->token_index + 512);
    l.names = img.size() - 2;
    img[l.names] = 0x7f;
    throws(l, img, "names");
  }
  {  // an address table beyond the image, a huge count, a table order that makes no sense
    KallsymsLayout l = *found;
    l.address_table = e.image.size() - 4;
    throws(l, e.image, "addresses");
    l = *found;
    l.num_syms = 1ull << 40;
    throws(l, e.image, "count");
    l = *found;
    l.token_table = l.token_index + 8;
    throws(l, e.image, "token table");
  }
}

TEST(Kallsyms, MutatedTablesNeverCrash) {
  const Encoded e = encode(make_symbols(true), Layout::k612, 16);
  const auto found = imee::find_kallsyms(e.image);
  ASSERT_TRUE(found);
  std::mt19937 rng(3);
  int decoded = 0, refused = 0;
  for (int round = 0; round < 300; ++round) {
    std::vector<std::uint8_t> img = e.image;
    for (int k = 0; k < 8; ++k) img[rng() % img.size()] = static_cast<std::uint8_t>(rng());
    try {
      const auto l = imee::find_kallsyms(img);
      if (!l) {
        ++refused;
        continue;
      }
      (void)imee::decode_kallsyms(img, *l);
      ++decoded;
    } catch (const imee::Exception&) {
      ++refused;
    }
  }
  EXPECT_EQ(decoded + refused, 300);
  EXPECT_GT(refused, 0);  // some flips must hit the structure
}

// Real Debian kernels (the lab's 6.1, and whatever /boot holds, e.g. 6.12): the image's own
// kallsyms tables give a profile whose banner sits at linux_banner's decoded offset (found
// independently, from the ELF's segments), and __start_BTF..__stop_BTF spans exactly the .BTF
// section the ELF's section table names.
TEST(KallsymsReal, KernelImagesOwnTables) {
  std::vector<std::string> images;
  if (const char* k = std::getenv("IMEE_TEST_KERNEL"); k && std::filesystem::exists(k))
    images.push_back(k);
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/boot", ec))
    if (e.path().filename().string().starts_with("vmlinuz-")) images.push_back(e.path());
  if (images.empty()) GTEST_SKIP() << "no kernel image: IMEE_TEST_KERNEL unset and /boot empty";
  for (const std::string& image : images) {
    const imee::LinuxProfile p = imee::LinuxProfile::build(image, "");
    ASSERT_TRUE(p.all_symbols) << image;
    EXPECT_TRUE(p.banner.starts_with("Linux version ")) << image;
    EXPECT_GT(p.all_symbols->size(), 50000u) << image;
    const imee::KernelTypes types = imee::KernelTypes::load(image);
    std::uint32_t btf_size = 0;
    ASSERT_NE(btf__raw_data(types.btf(), &btf_size), nullptr);
    const auto start = p.all_symbols->find("__start_BTF"), stop = p.all_symbols->find("__stop_BTF");
    ASSERT_TRUE(start && stop) << image;
    EXPECT_EQ(*stop - *start, btf_size) << image;
    std::printf("%s: %zu symbols, %s\n", image.c_str(), p.all_symbols->size(), p.banner.c_str());
  }
}

}  // namespace
