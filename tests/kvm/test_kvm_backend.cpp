// The two ImEE backends (kvm, and kernel: the patched kvm-intel) against synthetic targets with
// hand-built page tables: every answer (bytes or Error) must be the soft backend's, and the
// target's RAM must never change. They need /dev/kvm; the kernel variants need the patched module
// (the VT-x lab runs them, IMEE_REQUIRE_KERNEL=1) and are skipped elsewhere, saying why.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <tuple>

#include "../support/imee_required.hpp"
#include "../support/page_table_builder.hpp"
#include "../support/ram_diff.hpp"
#include "../support/readonly_ram.hpp"
#include "../support/test_vm.hpp"
#include "imee/kernel_backend.hpp"
#include "imee/kvm_backend.hpp"
#include "imee/soft_backend.hpp"

namespace imee {
namespace {

using test::PageTableBuilder;
using test::ReadOnlyRam;
constexpr std::uint64_t KiB = 1024, MiB = 1ull << 20, GiB = 1ull << 30;
constexpr std::uint64_t P = PageTableBuilder::P, A = PageTableBuilder::A, U = PageTableBuilder::U,
                        NX = PageTableBuilder::NX, D = pte::kDirty;

// The synthetic target's layout. Data lives above 16 MiB; the builder's tables below.
constexpr std::uint64_t kRam = 48 * MiB;  // above every GPA below (42 MiB); each MiB costs L1 time
constexpr std::uint64_t kHomeVa = 0xffffffff81000000ull;  // kernel text, one 2 MiB page
constexpr std::uint64_t kHomeGpa = 16 * MiB;
constexpr std::uint64_t k4kVa = 0xffff888000000000ull;  // 64 scattered 4 KiB pages, some holes
constexpr std::uint64_t k4kGpa = 20 * MiB;
constexpr int k4kPages = 64;
constexpr std::uint64_t k2mVa = 0xffffc90000000000ull;  // two 2 MiB pages, swapped in GPA
constexpr std::uint64_t k1gVa =
    0x0000004000000000ull;  // one 1 GiB page over GPA 0: ends beyond RAM
constexpr std::uint64_t kUserVa = 0x00007f0000000000ull;        // user pages, NX
constexpr std::uint64_t kNoAccessedVa = 0xffff888100000000ull;  // leaves without the A bit
constexpr std::uint64_t kAliasVa = 0xffff888200000000ull;       // a second mapping of the home page

bool hole(int i) {
  return i % 9 == 5;
}

struct Target {
  explicit Target(int levels) : levels(levels), builder(kRam, levels) {
    PageTableBuilder& b = builder;
    std::mt19937_64 rng(levels);
    for (std::uint64_t i = 16 * MiB; i < kRam; i += 8) {
      const std::uint64_t v = rng();
      std::memcpy(b.bytes().data() + i, &v, 8);
    }
    // Like Linux's kernel text: read-only, Accessed and Dirty set.
    b.map(kHomeVa, kHomeGpa, 2 * MiB, P | A | D);
    for (int i = 0; i < k4kPages; ++i)
      if (!hole(i))
        b.map(k4kVa + i * 4 * KiB, k4kGpa + (k4kPages - 1 - i) * 4 * KiB, 4 * KiB, P | A);
    b.map(k2mVa, 26 * MiB, 2 * MiB, P | A | NX);
    b.map(k2mVa + 2 * MiB, 22 * MiB, 2 * MiB, P | A | NX);
    b.map(k1gVa, 0, GiB, P | A | NX);
    for (int i = 0; i < 8; ++i)
      b.map(kUserVa + i * 4 * KiB, 30 * MiB + i * 4 * KiB, 4 * KiB, P | U | A | NX);
    for (int i = 0; i < 4; ++i)
      b.map(kNoAccessedVa + i * 4 * KiB, 31 * MiB + i * 4 * KiB, 4 * KiB, P);
    b.map(kAliasVa, kHomeGpa + 8 * KiB, 4 * KiB, P | A | NX);
    ram = std::make_unique<ReadOnlyRam>(b.ram());
    guest = std::make_unique<GuestRam>(GuestRam::view(ram->bytes()));
  }
  AddressSpace space() const {
    return {builder.root(), levels == 5 ? PagingMode::k5Level : PagingMode::k4Level, true};
  }

  int levels;
  PageTableBuilder builder;
  std::unique_ptr<ReadOnlyRam> ram;
  std::unique_ptr<GuestRam> guest;
};

// One read through both backends: same status, and the same bytes wherever the soft backend
// promises them (all of them on success, those before the failing VA otherwise).
void expect_same_read(MemoryBackend& kvm, MemoryBackend& soft, const AddressSpace& as,
                      std::uint64_t va, std::size_t len) {
  std::vector<std::byte> a(len, std::byte{0x5a}), b(len, std::byte{0xa5});
  const Status sa = kvm.read(as, va, a), sb = soft.read(as, va, b);
  ASSERT_EQ(sa.ok(), sb.ok()) << std::hex << "va 0x" << va << std::dec << " len " << len << ": "
                              << (sa.ok() ? sb.error().describe() : sa.error().describe());
  std::size_t valid = len;
  if (!sb.ok()) {
    EXPECT_EQ(sa.error(), sb.error()) << sa.error().describe() << " vs " << sb.error().describe();
    valid = sb.error().va > va ? std::min<std::size_t>(len, sb.error().va - va) : 0;
  }
  ASSERT_EQ(std::memcmp(a.data(), b.data(), valid), 0)
      << std::hex << "va 0x" << va << std::dec << " len " << len;
}

// A KVM VM whose RAM is the synthetic target's: what the kernel backend introspects. It never
// runs; its vCPU 0 only has to exist.
struct TargetVm {
  explicit TargetVm(std::span<const std::byte> ram)
      : kvm(test::open_kvm()), vm(kvm.fd, 1, 0, ram.data(), ram.size(), true) {}
  int fd() const { return vm.vm.fd; }
  test::Fd kvm;
  test::TestVm vm;
};

// The ImEE backend of the test's parameter over `t`.
std::unique_ptr<AgentBackend> make_imee(bool kernel, const Target& t,
                                        std::unique_ptr<TargetVm>& vm) {
  const AgentHome home{t.space(), kHomeVa};
  if (!kernel) return std::make_unique<KvmBackend>(*t.guest, home);
  vm = std::make_unique<TargetVm>(t.ram->bytes());
  return std::make_unique<KernelBackend>(*t.guest, home, KernelVm{.vm_fd = vm->fd()});
}

// The kvm backend, and the same tests through the kernel backend (the patched kvm-intel: it runs
// in the VT-x lab, where IMEE_REQUIRE_KERNEL=1 turns its absence into a failure).
class AgentBackendTest : public ::testing::TestWithParam<std::tuple<int, bool>> {
 protected:
  int levels() const { return std::get<0>(GetParam()); }
  bool kernel() const { return std::get<1>(GetParam()); }

  void SetUp() override {
    IMEE_NEED_BACKEND(kernel() ? "kernel" : "kvm");
    target_ = std::make_unique<Target>(levels());
    soft_ = std::make_unique<SoftBackend>(*target_->guest);
    kvm_ = make_imee(kernel(), *target_, target_vm_);
    ram_before_ = std::make_unique<test::RamSnapshot>(
        std::vector<std::span<const std::byte>>{target_->ram->bytes()});
  }
  void TearDown() override {
    if (target_ && !edited_) {
      test::expect_ram_unchanged(*ram_before_);
    }
    if (kvm_) {
      const BackendStats s = kvm_->stats();
      RecordProperty("runs", static_cast<int>(s.runs));
      RecordProperty("imee_reads", static_cast<int>(s.imee_reads));
      RecordProperty("software_rereads", static_cast<int>(s.software_rereads));
      if (s.reread_no_la57 > 0)
        std::printf("note: this KVM offers no LA57; 5-level reads took the software path\n");
    }
  }
  AddressSpace as() const { return target_->space(); }

  std::unique_ptr<Target> target_;
  std::unique_ptr<TargetVm> target_vm_;
  std::unique_ptr<SoftBackend> soft_;
  std::unique_ptr<AgentBackend> kvm_;
  std::unique_ptr<test::RamSnapshot> ram_before_;
  bool edited_ = false;  // the test itself rewrote the target's RAM
};

TEST_P(AgentBackendTest, FourKilobytePagesAtEveryAlignmentAndLength) {
  // Lengths around every width the agent distinguishes, at offsets around a page boundary.
  std::vector<std::size_t> lengths;
  for (std::size_t n = 1; n <= 40; ++n) lengths.push_back(n);
  for (std::size_t n : {63,  64,  65,  127,  128,  129,  240,  255,  256,  257,
                        511, 512, 513, 1000, 4095, 4096, 4097, 8191, 8192, 12293})
    lengths.push_back(n);
  // Pages 1 and 2 are mapped (page 5 is a hole): cross the 1|2 boundary.
  const std::uint64_t boundary = k4kVa + 2 * 4 * KiB;
  for (std::size_t len : lengths)
    for (std::uint64_t back : {0, 1, 7, 8, 15, 16, 17, 255, 256, 4095})
      expect_same_read(*kvm_, *soft_, as(), boundary - std::min<std::uint64_t>(back, len), len);
}

TEST_P(AgentBackendTest, LargePagesAndUserPages) {
  for (std::size_t len : {1, 8, 15, 16, 17, 100, 256, 300, 4096, 5000, 70000})
    for (std::uint64_t off : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{4095}, 2 * MiB - 7,
                              2 * MiB - 4096 - 3}) {
      expect_same_read(*kvm_, *soft_, as(), k2mVa + off, len);
      expect_same_read(*kvm_, *soft_, as(), k1gVa + 40 * MiB + off, len);
      expect_same_read(*kvm_, *soft_, as(), kUserVa + off % (8 * 4 * KiB), len);
    }
  // A read longer than one batch's output buffer.
  expect_same_read(*kvm_, *soft_, as(), k2mVa + 5, 4 * MiB - 5);
}

TEST_P(AgentBackendTest, FaultsMatchTheSoftBackend) {
  // Into a hole, from a mapped page; past the end of RAM inside the 1 GiB page; a
  // non-canonical range; a read that ends exactly at a hole.
  const std::uint64_t hole5 = k4kVa + 5 * 4 * KiB;
  expect_same_read(*kvm_, *soft_, as(), hole5 - 100, 300);
  expect_same_read(*kvm_, *soft_, as(), hole5, 1);
  expect_same_read(*kvm_, *soft_, as(), hole5 - 100, 100);
  expect_same_read(*kvm_, *soft_, as(), k1gVa + kRam - 100, 300);
  expect_same_read(*kvm_, *soft_, as(), k1gVa + kRam + 12345, 16);
  const std::uint64_t top = levels() == 5 ? 0x0100000000000000ull : 0x0000800000000000ull;
  expect_same_read(*kvm_, *soft_, as(), top - 16, 32);
  expect_same_read(*kvm_, *soft_, as(), top + 4096, 8);
  expect_same_read(*kvm_, *soft_, as(), 0x1000, 8);  // nothing mapped at low VAs
  // Bad lengths are refused before anything runs.
  std::vector<std::byte> one(1);
  EXPECT_EQ(kvm_->read(as(), ~0ull, std::span(one.data(), 2)).error().fault, Fault::kBadLength);
  EXPECT_TRUE(kvm_->read(as(), k2mVa, std::span(one.data(), 0)).ok());
}

TEST_P(AgentBackendTest, NotPresentAtEachLevel) {
  // A fresh target per level: the entry for `va` at that level loses its present bit. The read
  // starts on a mapped page just below `va`'s level-sized region, so it faults mid-request.
  for (int level = levels(); level >= 1; --level) {
    Target t(levels());
    const std::uint64_t region = 1ull << (12 + 9 * (level - 1));
    // Region aligned, and in the same top-level entry as nothing else we map.
    const std::uint64_t va =
        level == 5 ? 0x00f0000000000000ull : 0xffff890000000000ull + 8 * region;
    t.builder.map(va - 4 * KiB, 32 * MiB, 4 * KiB, P | A);
    t.builder.map(va, 33 * MiB, 4 * KiB, P | A);
    const std::uint64_t slot = t.builder.entry_gpa(va, level);
    t.builder.set_entry(slot, t.builder.entry(slot) & ~P);
    t.ram->write(t.builder.ram());
    SoftBackend soft(*t.guest);
    std::unique_ptr<TargetVm> vm;
    const std::unique_ptr<AgentBackend> imee = make_imee(kernel(), t, vm);
    AgentBackend& kvm = *imee;
    std::vector<std::byte> a(6000), b(6000);
    const Status sa = kvm.read(t.space(), va - 100, a), sb = soft.read(t.space(), va - 100, b);
    ASSERT_FALSE(sb.ok());
    ASSERT_FALSE(sa.ok()) << "level " << level;
    EXPECT_EQ(sa.error(), sb.error()) << "level " << level << ": " << sa.error().describe();
    EXPECT_EQ(sa.error().fault, Fault::kNotPresent);
    EXPECT_EQ(sa.error().level, level);
    EXPECT_EQ(sa.error().gpa, slot);
    EXPECT_EQ(sa.error().va, va);
    EXPECT_EQ(std::memcmp(a.data(), b.data(), 100), 0);
  }
}

TEST_P(AgentBackendTest, RandomizedDifferential) {
  // 10,000+ random reads over the whole synthetic space, mapped or not, in batches. (Pages
  // without the Accessed bit have a test of their own: whether the CPU must set the bit is the
  // CPU's business, and would blur who answered here.) k1gVa maps the home's GPA too.
  std::mt19937_64 rng(levels() * 7919);
  const std::uint64_t bases[] = {k4kVa,    k2mVa,
                                 k1gVa,    k1gVa + kRam - 64 * KiB,
                                 kUserVa,  kHomeVa + 64 * KiB,
                                 kAliasVa, 0x0000000000400000ull};
  const std::uint64_t spans[] = {k4kPages * 4 * KiB, 4 * MiB,  kRam,    128 * KiB,
                                 36 * KiB,           64 * KiB, 8 * KiB, 8 * KiB};
  constexpr int kReads = 10240, kBatch = 64;
  int failures = 0, compared = 0, succeeded = 0, faulted = 0;
  int succeeded_1g = 0, faulted_1g = 0;  // of them, through the 1 GiB page
  for (int done = 0; done < kReads; done += kBatch) {
    std::vector<std::vector<std::byte>> a(kBatch), b(kBatch);
    std::vector<ReadRequest> ra, rb;
    for (int i = 0; i < kBatch; ++i) {
      const int which = static_cast<int>(rng() % std::size(bases));
      const std::uint64_t va = bases[which] + rng() % spans[which];
      const std::uint64_t r = rng() % 100;
      const std::size_t len = r < 60   ? 1 + rng() % 64
                              : r < 95 ? 1 + rng() % 1024
                                       : 1 + rng() % 9000;
      a[i].assign(len, std::byte{1});
      b[i].assign(len, std::byte{2});
      ra.push_back({as(), va, a[i], {}});
      rb.push_back({as(), va, b[i], {}});
    }
    kvm_->read_batch(ra);
    soft_->read_batch(rb);
    for (int i = 0; i < kBatch; ++i, ++compared) {
      const Status& sa = ra[i].status;
      const Status& sb = rb[i].status;
      std::size_t valid = a[i].size();
      if (sa.ok() != sb.ok() || (!sb.ok() && !(sa.error() == sb.error()))) {
        ADD_FAILURE() << std::hex << "va 0x" << ra[i].va << std::dec << " len " << a[i].size()
                      << ": kvm " << (sa.ok() ? "ok" : sa.error().describe()) << ", soft "
                      << (sb.ok() ? "ok" : sb.error().describe());
        if (++failures > 10) return;
        continue;
      }
      ++(sb.ok() ? succeeded : faulted);
      if (ra[i].va >= k1gVa && ra[i].va < k1gVa + GiB) ++(sb.ok() ? succeeded_1g : faulted_1g);
      if (!sb.ok())
        valid =
            sb.error().va > ra[i].va ? std::min<std::size_t>(valid, sb.error().va - ra[i].va) : 0;
      if (std::memcmp(a[i].data(), b[i].data(), valid) != 0) {
        ADD_FAILURE() << std::hex << "bytes differ at va 0x" << ra[i].va << std::dec << " len "
                      << a[i].size();
        if (++failures > 10) return;
      }
    }
  }
  EXPECT_GE(compared, 10000);
  // Who answered, exactly: every read that must succeed was answered by the ImEE (or, after
  // the agent met its own home twice, by software for that reason); every read that must
  // fault was re-read in software for a fault, and no read for another reason.
  const BackendStats st = kvm_->stats();
  std::printf("%d succeed, %d fault (%d, %d through the 1 GiB page); %s; %llu relocations\n",
              succeeded, faulted, succeeded_1g, faulted_1g, who_answered(st).c_str(),
              static_cast<unsigned long long>(st.relocations));
  EXPECT_GT(faulted, kReads / 20);
  if (st.reread_no_la57 > 0) {  // this KVM offers no LA57: the 5-level target is software's
    EXPECT_EQ(st.reread_no_la57, static_cast<std::uint64_t>(compared));
    return;
  }
  // A KVM that offers its guests no 1 GiB pages makes every read through one a reserved-bit #PF.
  const bool gbpages = AgentBackend::host_paging().gbpages;
  const int ok_1g = gbpages ? 0 : succeeded_1g, fault_1g = gbpages ? 0 : faulted_1g;
  EXPECT_EQ(st.reread_paging_feature, static_cast<std::uint64_t>(ok_1g + fault_1g));
  EXPECT_EQ(st.imee_reads + st.reread_blind_spot, static_cast<std::uint64_t>(succeeded - ok_1g));
  EXPECT_EQ(st.reread_fault, static_cast<std::uint64_t>(faulted - fault_1g));
  EXPECT_EQ(st.reread_accessed_bit + st.reread_agent_failed + st.reread_walk_copy, 0u);
  EXPECT_GT(st.imee_reads, 5000u);
  // On AMD the walks ran through copies of the page tables (every entry has its A bit: no copy
  // changes), elsewhere through the target's own pages.
  if (kernel() && test::kernel_walk_copies())
    EXPECT_GT(st.walk_copies, 0u);
  else
    EXPECT_EQ(st.walk_copies, 0u);
  EXPECT_EQ(st.vcpu_resets, 0u);
}

TEST_P(AgentBackendTest, BatchReadsUseOneRunPerBatch) {
  constexpr int kCount = 80;  // fits in one batch (IMEE_MAX_REQUESTS)
  std::vector<std::vector<std::byte>> a(kCount, std::vector<std::byte>(24));
  std::vector<std::vector<std::byte>> b(kCount, std::vector<std::byte>(24));
  std::vector<ReadRequest> ra, rb;
  for (int i = 0; i < kCount; ++i) {
    const std::uint64_t va = k4kVa + (i % k4kPages) * 4 * KiB + 4090 - i;
    ra.push_back({as(), va, a[i], {}});
    rb.push_back({as(), va, b[i], {}});
  }
  const std::uint64_t runs_before = kvm_->stats().runs;
  kvm_->read_batch(ra);
  soft_->read_batch(rb);
  for (int i = 0; i < kCount; ++i) {
    ASSERT_EQ(ra[i].status.ok(), rb[i].status.ok()) << i;
    if (!rb[i].status.ok()) {
      EXPECT_EQ(ra[i].status.error(), rb[i].status.error());
    } else {
      EXPECT_EQ(a[i], b[i]) << i;
    }
  }
  if (levels() == 4) {
    EXPECT_EQ(kvm_->stats().runs - runs_before, 1u);
  }
}

TEST_P(AgentBackendTest, BlindSpotReadsRelocateTheAgent) {
  const std::uint64_t home_gpa = kvm_->agent_home_gpa();
  EXPECT_EQ(home_gpa, kHomeGpa);
  // The home page read through its own VA, and a page-crossing read into it.
  expect_same_read(*kvm_, *soft_, as(), kHomeVa + 123, 1000);
  expect_same_read(*kvm_, *soft_, as(), kHomeVa - 0, 4096);
  if (kvm_->stats().reread_no_la57 > 0) return;  // software path only
  EXPECT_GE(kvm_->stats().blind_spot_hits, 1u);
  EXPECT_GE(kvm_->stats().relocations, 1u);
  EXPECT_NE(kvm_->agent_home_gpa(), home_gpa);
  // The new home, read through another VA that maps it (an alias the agent cannot see).
  kvm_->set_agent_home({as(), kHomeVa + 8 * KiB});
  EXPECT_EQ(kvm_->agent_home_gpa(), kHomeGpa + 8 * KiB);
  const std::uint64_t hits = kvm_->stats().blind_spot_hits;
  expect_same_read(*kvm_, *soft_, as(), kAliasVa, 4096);
  expect_same_read(*kvm_, *soft_, as(), kAliasVa + 4000, 96);
  EXPECT_GT(kvm_->stats().blind_spot_hits, hits);
  // A home the target does not map executable is refused.
  EXPECT_THROW(kvm_->set_agent_home({as(), k2mVa}), Exception);
  EXPECT_THROW(kvm_->set_agent_home({as(), k4kVa + 5 * 4 * KiB}), Exception);
}

TEST_P(AgentBackendTest, TargetPageTableEditsAreSeenAtOnce) {
  // The target remaps a page, unmaps it, maps it back: no translation may outlive its PTE.
  const std::uint64_t va = k4kVa + 3 * 4 * KiB;
  const std::uint64_t leaf = target_->builder.entry_gpa(va, 1);
  const std::uint64_t original = target_->builder.entry(leaf);
  edited_ = true;
  for (std::uint64_t e : {(40 * MiB) | P | A, std::uint64_t{0}, (41 * MiB) | P | A, original}) {
    target_->ram->write(std::as_bytes(std::span(&e, 1)), leaf);
    expect_same_read(*kvm_, *soft_, as(), va + 8, 64);
  }
}

TEST_P(AgentBackendTest, MissingAccessedBitNeverWritesTheTarget) {
  // The MMU would set A in read-only RAM: KVM must not (TearDown compares the whole RAM too).
  for (std::size_t len : {1, 8, 100, 4096, 9000})
    expect_same_read(*kvm_, *soft_, as(), kNoAccessedVa + 77, len);
  const std::uint64_t leaf = target_->builder.entry_gpa(kNoAccessedVa, 1);
  std::uint64_t e = 0;
  std::memcpy(&e, target_->ram->bytes().data() + leaf, 8);
  if ((e & A) != 0 && kernel() && test::cpu_writes_ad_through_readonly_ept())
    GTEST_SKIP() << "this CPU set the A bit through a read-only EPT entry (declared: "
                    "IMEE_CPU_WRITES_AD_THROUGH_READONLY_EPT, tests/support/ram_diff.hpp)";
  EXPECT_EQ(e & A, 0u);
}

TEST_P(AgentBackendTest, PageTableReadBesideAWalkThatSetsAnABitIsTheTargets) {
  // One batch: a read through a leaf without the A bit, then that leaf's page-table page itself,
  // as data (k1gVa maps all RAM). The AMD ImEE walks through a private copy of the page and the
  // walk sets A there (IMEE_FEATURE_WALK_COPIES): the copy must never be what a read returns.
  const std::uint64_t table = target_->builder.entry_gpa(kNoAccessedVa, 1) & ~(4 * KiB - 1);
  std::vector<std::byte> a(8), b(4 * KiB), want_a(8), want_b(4 * KiB);
  std::vector<ReadRequest> reqs{{as(), kNoAccessedVa + 77, a, {}}, {as(), k1gVa + table, b, {}}};
  const BackendStats before = kvm_->stats();
  kvm_->read_batch(reqs);
  ASSERT_TRUE(reqs[0].status.ok()) << reqs[0].status.error().describe();
  ASSERT_TRUE(reqs[1].status.ok()) << reqs[1].status.error().describe();
  ASSERT_TRUE(soft_->read(as(), kNoAccessedVa + 77, want_a).ok());
  ASSERT_TRUE(soft_->read(as(), k1gVa + table, want_b).ok());
  EXPECT_EQ(a, want_a);
  EXPECT_EQ(b, want_b) << "the page-table page read as data is not the target's";
  const BackendStats st = kvm_->stats();
  std::printf("%s; %llu walk copies, %llu changed\n", who_answered(st).c_str(),
              static_cast<unsigned long long>(st.walk_copies - before.walk_copies),
              static_cast<unsigned long long>(st.walk_copies_changed - before.walk_copies_changed));
  if (!kernel() || !test::kernel_walk_copies()) {
    EXPECT_EQ(st.walk_copies, 0u);
    return;
  }
  // Who answered: the walk's copy gained the A bit, so the end-of-activation check found it
  // changed and both reads of the batch went to software.
  EXPECT_GE(st.walk_copies_changed - before.walk_copies_changed, 1u);
  EXPECT_EQ(st.reread_walk_copy - before.reread_walk_copy, 2u);
  EXPECT_EQ(st.imee_reads, before.imee_reads);
}

TEST_P(AgentBackendTest, PollModeServesReadsFromAnotherThread) {
  kvm_->start_polling();
  ASSERT_TRUE(kvm_->polling());
  std::thread reader([&] {
    std::mt19937_64 rng(3);
    for (int i = 0; i < 300; ++i) {
      const std::uint64_t va = k4kVa + rng() % (k4kPages * 4 * KiB);
      expect_same_read(*kvm_, *soft_, as(), va, 1 + rng() % 600);
    }
    expect_same_read(*kvm_, *soft_, as(), kHomeVa + 5, 64);  // blind spot while polling
  });
  reader.join();
  kvm_->stop_polling();
  EXPECT_FALSE(kvm_->polling());
  // Batch mode works again afterwards.
  expect_same_read(*kvm_, *soft_, as(), k2mVa + 17, 333);
}

INSTANTIATE_TEST_SUITE_P(Levels, AgentBackendTest,
                         ::testing::Combine(::testing::Values(4, 5), ::testing::Bool()),
                         [](const auto& info) {
                           return std::to_string(std::get<0>(info.param)) + "level_" +
                                  (std::get<1>(info.param) ? "kernel" : "kvm");
                         });

TEST(KvmBackend, RefusesWritableTargetRam) {
  IMEE_NEED_BACKEND("kvm");
  PageTableBuilder b(8 * MiB, 4);
  b.map(kHomeVa, 4 * MiB, 2 * MiB, P | A);
  // std::vector memory: writable, and not page aligned either way.
  const GuestRam ram = GuestRam::view(b.ram());
  EXPECT_THROW(KvmBackend(ram, {{b.root(), PagingMode::k4Level, true}, kHomeVa}), Exception);
}

}  // namespace
}  // namespace imee
