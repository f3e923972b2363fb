// decide_syscall_dispatch: whether the kernel dispatches 64-bit system calls through
// sys_call_table, from a symbol list and do_syscall_64's code, on real and hand-built code.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "imee/linux.hpp"

namespace {

using imee::SymbolTable;
using imee::SyscallDispatch;

// do_syscall_64 of Debian's linux-image-6.1.0-56-amd64 (6.1.192, with the branch-history fix
// backported), as linked (_text at 0xffffffff81000000); its call to x64_sys_call is at +0x58.
// Calls are RIP-relative, so the bytes are the same at any KASLR slide.
const std::vector<std::uint8_t> kDebian61DoSyscall64 = {
    0x55, 0x48, 0x89, 0xe5, 0x53, 0x48, 0x89, 0xfb, 0x66, 0x90, 0x65, 0x48, 0x8b, 0x04, 0x25, 0x80,
    0xfb, 0x01, 0x00, 0x8b, 0x80, 0x78, 0x14, 0x00, 0x00, 0x25, 0xff, 0x03, 0x00, 0x00, 0x48, 0x83,
    0xc0, 0x0f, 0x25, 0xf8, 0x07, 0x00, 0x00, 0x48, 0x29, 0xc4, 0x48, 0x8d, 0x44, 0x24, 0x0f, 0x48,
    0x83, 0xe0, 0xf0, 0x48, 0x63, 0xf6, 0x48, 0x89, 0xdf, 0xe8, 0x92, 0x49, 0x00, 0x00, 0x3d, 0xc2,
    0x01, 0x00, 0x00, 0x77, 0x2e, 0x89, 0xc2, 0x48, 0x81, 0xfa, 0xc3, 0x01, 0x00, 0x00, 0x48, 0x19,
    0xd2, 0x89, 0xc6, 0x48, 0x89, 0xdf, 0x21, 0xd6, 0xe8, 0x03, 0xf5, 0x5b, 0xff, 0x48, 0x89, 0x43,
    0x50, 0x48, 0x89, 0xdf, 0xe8, 0x37, 0x4a, 0x00, 0x00, 0x48, 0x8b, 0x5d, 0xf8, 0xc9, 0xe9, 0xfd,
    0xde, 0x3b, 0x00, 0x66, 0x90, 0x83, 0xf8, 0xff, 0x74, 0xe7, 0x48, 0xc7, 0x43, 0x50, 0xda, 0xff,
    0xff, 0xff, 0xeb, 0xdd, 0x8d, 0xb0, 0x00, 0x00, 0x00, 0xc0, 0x81, 0xfe, 0x23, 0x02, 0x00, 0x00,
    0x77, 0xe3, 0x48, 0x63, 0xc6, 0x48, 0x3d, 0x24, 0x02, 0x00, 0x00, 0x48, 0x19, 0xc0, 0x21, 0xc6,
    0x48, 0x89, 0xdf, 0xe8, 0x88, 0x32, 0x5c, 0xff, 0x48, 0x89, 0x43, 0x50, 0xeb, 0xb3, 0x66, 0x90,
};

// That kernel's symbols around the system-call path, at one boot's KASLR slide (the lab's).
constexpr const char* kDebian61Symbols =
    "ffffffff88e00000 T _text\n"
    "ffffffff88e03320 T x64_sys_call\n"
    "ffffffff88e045c0 t __do_sys_ni_syscall\n"
    "ffffffff89843dc0 T do_syscall_64\n"
    "ffffffff89843e70 T do_int80_emulation\n"
    "ffffffff89a00080 T entry_SYSCALL_64\n"
    "ffffffff89a000a0 T entry_SYSCALL_64_safe_stack\n"
    "ffffffff89e00360 D sys_call_table\n"
    "ffffffff89e01180 d vdso_mapping\n";
constexpr std::uint64_t kDoSyscall64 = 0xffffffff89843dc0, kTable = 0xffffffff89e00360;

// The same symbols without the fix's switch.
std::string without_x64_sys_call(std::string text) {
  const std::string line = "ffffffff88e03320 T x64_sys_call\n";
  text.erase(text.find(line), line.size());
  return text;
}

// Guest memory for the test: code at known addresses, everything else unreadable.
struct FakeText {
  std::map<std::uint64_t, std::vector<std::uint8_t>> code;
  mutable std::vector<std::pair<std::uint64_t, std::size_t>> reads;

  imee::CodeReader reader() const {
    return [this](std::uint64_t va, std::size_t len) -> imee::Expected<std::vector<std::byte>> {
      reads.emplace_back(va, len);
      const auto it = code.find(va);
      if (it == code.end()) return imee::Error{imee::Fault::kNotPresent, va, 0, 1};
      std::vector<std::byte> out(std::min(len, it->second.size()));
      std::memcpy(out.data(), it->second.data(), out.size());
      return out;
    };
  }
};

SyscallDispatch decide(const std::string& symbols, const FakeText& text) {
  return imee::decide_syscall_dispatch(SymbolTable::parse(symbols, "kallsyms"), text.reader());
}

void put32(std::vector<std::uint8_t>& code, std::size_t at, std::uint32_t v) {
  std::memcpy(code.data() + at, &v, 4);
}

// A pre-fix do_syscall_64 body: `mov rax, [sys_call_table + rsi*8]` (absolute disp32, relocated
// for this boot) then `call __x86_indirect_thunk_rax`.
std::vector<std::uint8_t> pre_fix_code(std::uint64_t table) {
  std::vector<std::uint8_t> code(64, 0x90);
  const std::uint8_t mov[] = {0x48, 0x8b, 0x04, 0xf5};
  std::memcpy(code.data() + 20, mov, sizeof mov);
  put32(code, 24, static_cast<std::uint32_t>(table));
  code[28] = 0xe8;  // call rel32: to somewhere that is neither the table nor x64_sys_call
  put32(code, 29, 0x1000);
  return code;
}

TEST(SyscallDispatch, DebiansBackportCallsTheSwitchConfirmedFromCode) {
  FakeText text;
  text.code[kDoSyscall64] = kDebian61DoSyscall64;
  const SyscallDispatch d = decide(kDebian61Symbols, text);
  EXPECT_FALSE(d.through_table);
  EXPECT_TRUE(d.confirmed) << d.how_decided;
  EXPECT_EQ(d.via, "x64_sys_call() switch");
  EXPECT_NE(d.how_decided.find("calls x64_sys_call (operand at do_syscall_64+0x59)"),
            std::string::npos)
      << d.how_decided;
  // The function is read to the next symbol, no further.
  ASSERT_EQ(text.reads.size(), 1u);
  EXPECT_EQ(text.reads[0], std::make_pair(kDoSyscall64, std::size_t{0xb0}));
}

TEST(SyscallDispatch, TheSameCodeAtAnotherSlideStillCallsTheSwitch) {
  // Every symbol moved by 0x1e00000: the rel32 call moves with them.
  SymbolTable symbols = SymbolTable::parse(kDebian61Symbols, "kallsyms");
  symbols.shift(0x1e00000);
  FakeText text;
  text.code[kDoSyscall64 + 0x1e00000] = kDebian61DoSyscall64;
  const SyscallDispatch d = imee::decide_syscall_dispatch(symbols, text.reader());
  EXPECT_FALSE(d.through_table);
  EXPECT_TRUE(d.confirmed) << d.how_decided;
}

TEST(SyscallDispatch, PreFixCodeIndexesTheTable) {
  FakeText text;
  text.code[kDoSyscall64] = pre_fix_code(kTable);
  const SyscallDispatch d = decide(without_x64_sys_call(kDebian61Symbols), text);
  EXPECT_TRUE(d.through_table);
  EXPECT_TRUE(d.confirmed) << d.how_decided;
  EXPECT_EQ(d.via, "sys_call_table");
  EXPECT_NE(d.how_decided.find("references sys_call_table (operand at do_syscall_64+0x18)"),
            std::string::npos)
      << d.how_decided;
}

TEST(SyscallDispatch, ARipRelativeReferenceToTheTableCounts) {
  FakeText text;
  std::vector<std::uint8_t> code(32, 0x90);
  const std::uint8_t lea[] = {0x48, 0x8d, 0x15};  // lea rdx, [rip + rel32]
  std::memcpy(code.data() + 8, lea, sizeof lea);
  put32(code, 11, static_cast<std::uint32_t>(kTable - (kDoSyscall64 + 15)));
  text.code[kDoSyscall64] = code;
  const SyscallDispatch d = decide(without_x64_sys_call(kDebian61Symbols), text);
  EXPECT_TRUE(d.through_table);
  EXPECT_TRUE(d.confirmed) << d.how_decided;
}

TEST(SyscallDispatch, CodeThatIndexesTheTableWinsOverTheSymbolList) {
  // x64_sys_call is listed, but the code the kernel runs indexes the table (put back by a
  // rootkit, or a symbol list that does not fit): the code decides.
  FakeText text;
  text.code[kDoSyscall64] = pre_fix_code(kTable);
  const SyscallDispatch d = decide(kDebian61Symbols, text);
  EXPECT_TRUE(d.through_table);
  EXPECT_TRUE(d.confirmed) << d.how_decided;
}

TEST(SyscallDispatch, UnreadableCodeFallsBackToTheSymbolListUnconfirmed) {
  const FakeText nothing;
  SyscallDispatch d = decide(kDebian61Symbols, nothing);
  EXPECT_FALSE(d.through_table);
  EXPECT_FALSE(d.confirmed);
  EXPECT_NE(d.how_decided.find("not confirmed from code: do_syscall_64 could not be read"),
            std::string::npos)
      << d.how_decided;

  d = decide(without_x64_sys_call(kDebian61Symbols), nothing);
  EXPECT_TRUE(d.through_table);
  EXPECT_EQ(d.via, "sys_call_table");
  EXPECT_FALSE(d.confirmed);
  EXPECT_NE(d.how_decided.find("the symbol list has no x64_sys_call"), std::string::npos)
      << d.how_decided;
}

TEST(SyscallDispatch, CodeThatDoesNotNameTheTableIsNeverThroughIt) {
  // Readable code with no reference to sys_call_table does not index it, whatever the symbol
  // list says; that it calls neither is reported as not confirmed.
  FakeText text;
  text.code[kDoSyscall64] = std::vector<std::uint8_t>(0xb0, 0x90);
  SyscallDispatch d = decide(kDebian61Symbols, text);
  EXPECT_FALSE(d.through_table);
  EXPECT_FALSE(d.confirmed);
  EXPECT_EQ(d.via, "x64_sys_call() switch");  // by the symbol list
  EXPECT_NE(d.how_decided.find("holds no reference to sys_call_table and does not call "
                               "x64_sys_call either"),
            std::string::npos)
      << d.how_decided;

  // The real post-fix code with a symbol list that lacks x64_sys_call: the call is not
  // recognised, but the table is still not on the path.
  text.code[kDoSyscall64] = kDebian61DoSyscall64;
  d = decide(without_x64_sys_call(kDebian61Symbols), text);
  EXPECT_FALSE(d.through_table);
  EXPECT_FALSE(d.confirmed);
  EXPECT_EQ(d.via, "not recognised");
  EXPECT_NE(d.how_decided.find("holds no reference to sys_call_table"), std::string::npos)
      << d.how_decided;

  // Both at once: contradictory; taken as the switch, not confirmed.
  std::vector<std::uint8_t> both = pre_fix_code(kTable);
  both[40] = 0xe8;
  put32(both, 41, static_cast<std::uint32_t>(0xffffffff88e03320 - (kDoSyscall64 + 45)));
  text.code[kDoSyscall64] = both;
  d = decide(kDebian61Symbols, text);
  EXPECT_FALSE(d.through_table);
  EXPECT_FALSE(d.confirmed);
  EXPECT_NE(d.how_decided.find("both references sys_call_table (operand at do_syscall_64+0x18) "
                               "and calls x64_sys_call (operand at do_syscall_64+0x29)"),
            std::string::npos)
      << d.how_decided;
}

TEST(SyscallDispatch, KernelsWithoutDoSyscall64AreJudgedByTheirEntry) {
  // Before 4.6 the assembly entry indexed the table: `call *sys_call_table(, %rax, 8)`.
  const std::string old_symbols =
      "ffffffff81000000 T _text\n"
      "ffffffff81800000 T entry_SYSCALL_64\n"
      "ffffffff81800200 T entry_SYSCALL_64_after_swapgs_end\n"
      "ffffffff81a00000 R sys_call_table\n"
      "ffffffff81a01000 r after_table\n";
  std::vector<std::uint8_t> code(0x200, 0x90);
  const std::uint8_t call[] = {0xff, 0x14, 0xc5};
  std::memcpy(code.data() + 0x80, call, sizeof call);
  put32(code, 0x83, 0x81a00000);
  FakeText text;
  text.code[0xffffffff81800000] = code;
  const SyscallDispatch d = decide(old_symbols, text);
  EXPECT_TRUE(d.through_table);
  EXPECT_TRUE(d.confirmed) << d.how_decided;
  EXPECT_NE(d.how_decided.find("entry_SYSCALL_64"), std::string::npos) << d.how_decided;
}

}  // namespace
