// SymbolTable against small hand-written kallsyms / System.map inputs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "imee/error.hpp"
#include "imee/symbols.hpp"

namespace {

using imee::SymbolTable;

// The message of the imee::Exception that `f` throws ("" when it throws none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const imee::Exception& e) {
    return e.what();
  }
  return "";
}

std::string parse_error(const std::string& text) {
  return error_of([&] { SymbolTable::parse(text, "in.txt"); });
}

// A 2022-style kallsyms excerpt: percpu 'A' symbols at small addresses first, then text, with
// module symbols at the end.
constexpr const char* kKallsyms =
    "0000000000000000 A fixed_percpu_data\n"
    "0000000000001000 A cpu_debug_store\n"
    "0000000000020000 A current_task\n"
    "ffffffff81000000 T _stext\n"
    "ffffffff81000000 T _text\n"
    "ffffffff81000100 t helper\n"
    "ffffffff81000200 T do_work\n"
    "ffffffff81000200 T do_work_alias\n"
    "ffffffff81e00000 D sys_call_table\n"
    "ffffffff81e00c00 d after_table\n"
    "ffffffff81e01000 t helper\n"
    "ffffffffc0001000 t mod_func\t[snd_hda]\n"
    "ffffffffc0002000 T do_work\t[evil]\n";

TEST(Symbols, ParsesKallsymsAndDropsModuleSymbols) {
  const SymbolTable t = SymbolTable::parse(kKallsyms, "kallsyms");
  ASSERT_EQ(t.size(), 11u);
  EXPECT_EQ(t.find("_text"), 0xffffffff81000000u);
  EXPECT_EQ(t.find("sys_call_table"), 0xffffffff81e00000u);
  EXPECT_EQ(t.find("current_task"), 0x20000u);        // absolute symbols are still found by name
  EXPECT_EQ(t.find("mod_func"), std::nullopt);        // module symbol
  EXPECT_EQ(t.find("do_work"), 0xffffffff81000200u);  // not the module's do_work
  EXPECT_EQ(t.find("helper"), 0xffffffff81000100u);   // duplicate name: the lowest address
  EXPECT_EQ(t.find("nope"), std::nullopt);
  EXPECT_EQ(t.find(""), std::nullopt);
  EXPECT_EQ(t.find("_tex"), std::nullopt);
  const auto& s = t.symbols();
  for (std::size_t i = 1; i < s.size(); ++i) EXPECT_LE(s[i - 1].address, s[i].address);
  EXPECT_EQ(s[3].name, "_stext");
  EXPECT_EQ(s[3].type, 'T');
  EXPECT_EQ(s[5].type, 't');
}

TEST(Symbols, FindGivesTheSameAnswersBeforeAndAfterTheIndexIsBuilt) {
  const SymbolTable t = SymbolTable::parse(kKallsyms, "kallsyms");
  // The first lookups scan, later ones use the hash index: ask everything many times.
  for (int round = 0; round < 10; ++round) {
    EXPECT_EQ(t.find("helper"), 0xffffffff81000100u);
    EXPECT_EQ(t.find("after_table"), 0xffffffff81e00c00u);
    EXPECT_EQ(t.find("fixed_percpu_data"), 0u);
    EXPECT_EQ(t.find("mod_func"), std::nullopt);
    EXPECT_EQ(t.find("missing"), std::nullopt);
  }
  const SymbolTable copy = t;  // shares the index
  EXPECT_EQ(copy.find("do_work_alias"), 0xffffffff81000200u);
}

TEST(Symbols, FindOnALargeTableWithManyDuplicates) {
  std::string text;
  char line[64];
  for (int i = 0; i < 5000; ++i) {
    std::snprintf(line, sizeof line, "%016llx t %s%d\n", 0xffffffff81000000ull + 16ull * i,
                  (i % 7 == 0) ? "dup" : "fn_", (i % 7 == 0) ? i % 3 : i);
    text += line;
  }
  const SymbolTable t = SymbolTable::parse(text, "big");
  for (int round = 0; round < 6; ++round) {
    EXPECT_EQ(t.find("dup0"), 0xffffffff81000000u);            // i = 0
    EXPECT_EQ(t.find("dup1"), 0xffffffff81000000u + 16 * 7);   // i = 7
    EXPECT_EQ(t.find("dup2"), 0xffffffff81000000u + 16 * 14);  // i = 14
    EXPECT_EQ(t.find("fn_4999"), 0xffffffff81000000u + 16 * 4999);
    EXPECT_EQ(t.find("fn_7"), std::nullopt);
  }
}

TEST(Symbols, ParsesSystemMapWithCrLf) {
  const SymbolTable t = SymbolTable::parse(
      "ffffffff81000000 T _text\r\n"
      "ffffffff81000040 W weak_fn\r\n"
      "ffffffff82000000 R __start_rodata\r\n"
      "ffffffff83000000 B __bss_start\r\n",
      "System.map");
  ASSERT_EQ(t.size(), 4u);
  EXPECT_EQ(t.find("__bss_start"), 0xffffffff83000000u);  // no '\r' left in the last name
  EXPECT_EQ(t.symbols()[1].name, "weak_fn");
  EXPECT_EQ(t.symbols()[1].type, 'W');
}

TEST(Symbols, AcceptsUppercaseHexBlankLinesAndNoFinalNewline) {
  const SymbolTable t =
      SymbolTable::parse("\nFFFFFFFF81000000 T _text\n\r\nffffffff81000010 t x", "in");
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t.find("_text"), 0xffffffff81000000u);
  EXPECT_EQ(t.find("x"), 0xffffffff81000010u);
}

TEST(Symbols, OutOfOrderInputIsSortedStably) {
  const SymbolTable t = SymbolTable::parse(
      "ffffffff81000200 T b\n"
      "ffffffff81000100 T a\n"
      "ffffffff81000200 T b2\n",
      "in");
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t.symbols()[0].name, "a");
  EXPECT_EQ(t.symbols()[1].name, "b");
  EXPECT_EQ(t.symbols()[2].name, "b2");
}

TEST(Symbols, MalformedLinesNameFileAndLine) {
  const std::string good = "ffffffff81000000 T _text\n";
  struct Case {
    std::string bad_line;
    std::string reason;  // part of the expected message
  };
  const std::vector<Case> cases = {
      {"zzzz T foo", "hexadecimal address"},
      {"ffffffff81000000T foo", "blank after the address"},
      {"ffffffff81000000 T", "blank after the symbol type"},
      {"ffffffff81000000 T ", "missing symbol name"},
      {"ffffffff81000000 1 foo", "type letter"},
      {"ffffffff81000000 TT foo", "blank after the symbol type"},
      {"ffffffff81000000 T foo bar", "unexpected text"},
      {"ffffffff81000000 T foo\t[mod] extra", "unexpected text"},
      {"ffffffff81000000 T foo\t[]", "unexpected text"},
      {"ffffffff81000000 T foo\tmod]", "unexpected text"},
      {"ffffffff81000000 T fo\x01o", "control character"},
      {"0ffffffff81000000 T foo", "16 hex digits"},
      {"ffffffff81000000", "blank after the address"},
      {" ffffffff81000000 T foo", "hexadecimal address"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.bad_line);
    const std::string msg = parse_error(good + good + c.bad_line + "\n" + good);
    EXPECT_EQ(msg.rfind("in.txt:3: ", 0), 0u) << msg;
    EXPECT_NE(msg.find(c.reason), std::string::npos) << msg;
  }
  // Line numbers count blank and CRLF lines too.
  const std::string msg = parse_error(good + "\r\n\n" + good + "bogus\r\n");
  EXPECT_EQ(msg.rfind("in.txt:5: ", 0), 0u) << msg;
}

TEST(Symbols, RejectsDebianPlaceholderSystemMap) {
  const std::string msg = parse_error(
      "ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n");
  EXPECT_EQ(msg.rfind("in.txt:1: ", 0), 0u) << msg;
  EXPECT_NE(msg.find("placeholder"), std::string::npos) << msg;
}

TEST(Symbols, RejectsAllZeroAddressesAndEmptyInput) {
  const std::string zeros =
      "0000000000000000 T _text\n"
      "0000000000000000 T _stext\n"
      "0000000000000000 t mod_fn\t[mod]\n";
  const std::string msg = parse_error(zeros);
  EXPECT_NE(msg.find("zero"), std::string::npos) << msg;
  EXPECT_NE(msg.find("privilege"), std::string::npos) << msg;
  EXPECT_NE(parse_error(""), "");
  EXPECT_NE(parse_error("\n\r\n"), "");
  EXPECT_NE(parse_error("ffffffffc0001000 t mod_func\t[snd]\n"), "");  // modules only
  // One zero among real addresses is fine (fixed_percpu_data is 0 in every kallsyms).
  EXPECT_EQ(parse_error("0000000000000000 A fixed_percpu_data\nffffffff81000000 T _text\n"), "");
}

TEST(Symbols, ResolveSkipsAbsoluteSymbols) {
  const SymbolTable t = SymbolTable::parse(kKallsyms, "kallsyms");
  // Exactly at a symbol; several at one address: the first listed.
  auto r = t.resolve(0xffffffff81000000);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->symbol->name, "_stext");
  EXPECT_EQ(r->offset, 0u);
  // Between symbols.
  r = t.resolve(0xffffffff810001ff);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->symbol->name, "helper");
  EXPECT_EQ(r->offset, 0xffu);
  r = t.resolve(0xffffffff81000234);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->symbol->name, "do_work");
  EXPECT_EQ(r->offset, 0x34u);
  // Past the last kernel symbol (module symbols are gone).
  r = t.resolve(0xffffffffc0001000);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->symbol->name, "helper");
  EXPECT_EQ(r->symbol->address, 0xffffffff81e01000u);
  // Below every non-absolute symbol: the percpu 'A' symbols do not count.
  EXPECT_FALSE(t.resolve(0x20000));
  EXPECT_FALSE(t.resolve(0x20010));
  EXPECT_FALSE(t.resolve(0));
  EXPECT_FALSE(t.resolve(0xffffffff80ffffff));
}

TEST(Symbols, ResolveWithAbsoluteSymbolsAmongText) {
  const SymbolTable t = SymbolTable::parse(
      "ffffffff81000000 T start\n"
      "ffffffff81000100 A abs_in_middle\n"
      "ffffffff81000180 a abs_local\n"
      "ffffffff81000200 T next\n",
      "in");
  auto r = t.resolve(0xffffffff81000190);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->symbol->name, "start");
  EXPECT_EQ(r->offset, 0x190u);
  // next_address_after counts every symbol, absolute ones included.
  EXPECT_EQ(t.next_address_after(0xffffffff81000000), 0xffffffff81000100u);
}

TEST(Symbols, NextAddressAfter) {
  const SymbolTable t = SymbolTable::parse(kKallsyms, "kallsyms");
  EXPECT_EQ(t.next_address_after(0xffffffff81e00000), 0xffffffff81e00c00u);  // bounds the table
  EXPECT_EQ(t.next_address_after(0xffffffff81000000), 0xffffffff81000100u);  // skips aliases
  EXPECT_EQ(t.next_address_after(0xffffffff81000150), 0xffffffff81000200u);
  EXPECT_EQ(t.next_address_after(0), 0x1000u);
  EXPECT_EQ(t.next_address_after(0xffffffff81e01000), std::nullopt);
}

TEST(Symbols, ShiftMovesOnlyNonAbsoluteSymbols) {
  SymbolTable t = SymbolTable::parse(kKallsyms, "kallsyms");
  EXPECT_TRUE(t.find("_text"));  // use the table before shifting
  const std::int64_t slide = 0x1e000000;
  t.shift(slide);
  EXPECT_EQ(t.find("_text"), 0xffffffff9f000000u);
  EXPECT_EQ(t.find("current_task"), 0x20000u);
  auto r = t.resolve(0xffffffff9f000234);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->symbol->name, "do_work");
  EXPECT_EQ(r->offset, 0x34u);
  EXPECT_EQ(t.next_address_after(0xffffffff9fe00000), 0xffffffff9fe00c00u);
  t.shift(-slide);
  EXPECT_EQ(t.find("_text"), 0xffffffff81000000u);
}

TEST(Symbols, ShiftThatReordersKeepsTheTableConsistent) {
  SymbolTable t = SymbolTable::parse(
      "0000000000001000 T low\n"
      "0000000000002000 A abs\n"
      "0000000000003000 T high\n",
      "in");
  for (int i = 0; i < 20; ++i) EXPECT_EQ(t.find("abs"), 0x2000u);  // past the scans: indexed
  t.shift(0x1800);                                                 // low -> 0x2800 passes abs
  const auto& s = t.symbols();
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].name, "abs");
  EXPECT_EQ(s[1].name, "low");
  EXPECT_EQ(s[2].name, "high");
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(t.find("low"), 0x2800u);
    EXPECT_EQ(t.find("abs"), 0x2000u);
    EXPECT_EQ(t.find("high"), 0x4800u);
  }
  auto r = t.resolve(0x2900);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->symbol->name, "low");
  EXPECT_FALSE(t.resolve(0x27ff));
}

TEST(Symbols, DefaultConstructedTableIsEmpty) {
  const SymbolTable t;
  EXPECT_EQ(t.size(), 0u);
  EXPECT_FALSE(t.find("_text"));
  EXPECT_FALSE(t.resolve(0xffffffff81000000));
  EXPECT_FALSE(t.next_address_after(0));
}

TEST(Symbols, LoadReadsAFileAndReportsMissingOnes) {
  char path[] = "/tmp/imee_symbols_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream out(path, std::ios::binary);
    out << kKallsyms << "bad line\n";
  }
  const std::string msg = error_of([&] { SymbolTable::load(path); });
  EXPECT_EQ(msg.rfind(std::string(path) + ":14: ", 0), 0u) << msg;
  {
    std::ofstream out(path, std::ios::binary);
    out << kKallsyms;
  }
  EXPECT_EQ(SymbolTable::load(path).find("sys_call_table"), 0xffffffff81e00000u);
  std::remove(path);
  const std::string missing = error_of([&] { SymbolTable::load(path); });
  EXPECT_NE(missing.find(path), std::string::npos) << missing;
  EXPECT_NE(error_of([] { SymbolTable::load("/tmp"); }), "");
}

// A real kallsyms, when the host lets us read it with addresses (root, kptr_restrict 0/1).
TEST(Symbols, HostKallsymsIfReadable) {
  SymbolTable t;
  try {
    t = SymbolTable::load("/proc/kallsyms");
  } catch (const imee::Exception& e) {
    GTEST_SKIP() << "host /proc/kallsyms not usable: " << e.what();
  }
  const auto text = t.find("_text");
  ASSERT_TRUE(text);
  const auto r = t.resolve(*text + 1);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->symbol->address, *text);
  EXPECT_GT(t.size(), 10000u);
}

}  // namespace
