// The shell every ImEE runs in (agent_shell.hpp): local memory, the agent page with its canary,
// the local page tables, the agent's home and its vCPU state.
#include "agent_shell.hpp"

#include <cpuid.h>

#include <cstring>
#include <random>

#include "imee/paging.hpp"

// The agent image, embedded by agent/CMakeLists.txt (agent_image.S).
extern "C" const unsigned char imee_agent_image[];
extern "C" const unsigned char imee_agent_image_end[];

namespace imee {

namespace {

constexpr std::uint64_t kPage = IMEE_PAGE_SIZE;
constexpr std::uint64_t k2M = 2ull << 20, k1G = 1ull << 30;

// Local memory, in pages: the agent page, the data area, the local page tables.
constexpr std::uint64_t kCodePage = 0;
constexpr std::uint64_t kDataPage = 1;
constexpr std::uint64_t kTablePage = kDataPage + IMEE_DATA_PAGES;
constexpr std::uint64_t kTablePages = 2 * 4 + 2 * 5;  // a generic and a data path, per mode
constexpr std::uint64_t kLocalPages = kTablePage + kTablePages;
constexpr std::uint64_t kLocalSpan = k2M;  // GPA room reserved for it, 2 MiB aligned
static_assert(kLocalPages * kPage <= kLocalSpan);

// The local memslot (target RAM and the home page use others, see kvm_backend.cpp).
constexpr std::uint32_t kSlotLocal = 0;

// Paging-structure entry flags for the local tables.
constexpr std::uint64_t kPW = pte::kPresent | pte::kWritable;

// Control-register and EFER bits (Intel SDM vol. 3, 2.5).
constexpr std::uint64_t kCr0PE = 1ull << 0, kCr0MP = 1ull << 1, kCr0ET = 1ull << 4,
                        kCr0NE = 1ull << 5, kCr0PG = 1ull << 31;
constexpr std::uint64_t kCr4PAE = 1ull << 5, kCr4OSFXSR = 1ull << 9, kCr4OSXMMEXCPT = 1ull << 10,
                        kCr4LA57 = 1ull << 12;
constexpr std::uint64_t kEferLME = 1ull << 8, kEferLMA = 1ull << 10, kEferNXE = 1ull << 11;

// The agent runs on this CPU under KVM: AMD's vendor string ("AuthenticAMD" in EBX, EDX, ECX).
bool host_cpu_is_amd() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(0, &eax, &ebx, &ecx, &edx) != 0 && ebx == 0x68747541 && edx == 0x69746e65 &&
         ecx == 0x444d4163;
}

int index_at(std::uint64_t va, int level) {
  return (va >> (12 + 9 * (level - 1))) & 511;
}

}  // namespace

AgentShell::AgentShell(std::string name, const AgentHome& first_home) : name_(std::move(name)) {
  const kvm::Capabilities& caps = kvm::capabilities();
  la57_ = caps.la57;
  // The top of the guest-physical space: no RAM there, and no sane target PTE points there.
  local_gpa_ = (1ull << caps.phys_bits) - kLocalSpan;

  local_ = kvm::Mapping::anonymous(kLocalPages * kPage);
  const auto image_size = static_cast<std::size_t>(imee_agent_image_end - imee_agent_image);
  if (image_size != kPage) fail("the embedded agent image is not one page");
  std::memcpy(agent_page(), imee_agent_image, kPage);
  auto& config = *reinterpret_cast<imee_agent_config*>(agent_page() + IMEE_AGENT_CONFIG_OFFSET);
  if (config.magic != IMEE_AGENT_MAGIC || config.version != IMEE_AGENT_PROTOCOL_VERSION)
    fail("the embedded agent speaks another protocol version");

  // Canary in the unused bytes of the agent page: a read that returns them is a suspect for
  // the blind spot (confirmed by a software translation before anything is done about it).
  std::mt19937_64 rng(std::random_device{}());
  std::size_t code_end = IMEE_AGENT_CODE_LIMIT;
  while (code_end > 0 && agent_page()[code_end - 1] == std::byte{0}) --code_end;
  for (std::size_t i = (code_end + 15) & ~std::size_t{15}; i < IMEE_AGENT_CODE_LIMIT; ++i)
    agent_page()[i] = static_cast<std::byte>(rng());
  for (std::size_t i = IMEE_AGENT_STACK_OFFSET; i < IMEE_AGENT_STACK_TOP; ++i)
    agent_page()[i] = static_cast<std::byte>(rng());

  imee_data_header& h = header();
  h.magic = IMEE_AGENT_MAGIC;
  h.version = IMEE_AGENT_PROTOCOL_VERSION;
  h.mode = IMEE_MODE_BATCH;
  h.stray_vector = IMEE_STRAY_NONE;

  vm_.set_memslot(kSlotLocal, local_gpa_, local_.size(), local_.data(), false);

  // Data VAs: in another 1 GiB of the home's half of the address space, so never on the home.
  data_va_ = ((first_home.va & ~(k1G - 1)) ^ k1G);
  build_local_tables(4, kTablePage);
  build_local_tables(5, kTablePage + 8);
  cpu_mode_ = la57_ ? first_home.space.mode : PagingMode::k4Level;
  cpu_nxe_ = first_home.space.nxe;
}

void AgentShell::fail(const std::string& what) const {
  throw Exception(name_ + ": " + what);
}

std::uint64_t AgentShell::agent_local_gpa() const {
  return local_gpa_ + kCodePage * kPage;
}
std::byte* AgentShell::agent_page() const {
  return local_.data() + kCodePage * kPage;
}
std::byte* AgentShell::data() const {
  return local_.data() + kDataPage * kPage;
}
imee_data_header& AgentShell::header() const {
  return *reinterpret_cast<imee_data_header*>(data());
}
imee_request& AgentShell::slot(std::size_t i) const {
  return reinterpret_cast<imee_request*>(data() + IMEE_HEADER_SIZE)[i];
}

std::optional<std::size_t> AgentShell::request_at(std::uint64_t va) const {
  const std::uint64_t first = data_va_ + IMEE_HEADER_SIZE;
  if (va < first || va >= first + IMEE_MAX_REQUESTS * IMEE_REQUEST_SIZE ||
      (va - first) % IMEE_REQUEST_SIZE != 0)
    return std::nullopt;
  return (va - first) / IMEE_REQUEST_SIZE;
}

// The local address space maps every VA to the agent page, except IMEE_DATA_PAGES pages at
// data_va, mapped to the data area. One "generic" table per level (all 512 entries pointing to
// the next generic table, the last one to the agent page) serves every VA; only the path to
// data_va needs its own copy of each level.
void AgentShell::build_local_tables(int levels, std::uint64_t first_table) {
  auto table = [&](std::uint64_t i) {
    return reinterpret_cast<std::uint64_t*>(local_.data() + (first_table + i) * kPage);
  };
  auto gpa_of = [&](std::uint64_t i) { return local_gpa_ + (first_table + i) * kPage; };
  // Tables [0, levels): generic, index level-1. Tables [levels, 2*levels): data path.
  for (int level = 1; level <= levels; ++level) {
    const std::uint64_t next =
        level == 1 ? agent_local_gpa() : gpa_of(static_cast<std::uint64_t>(level) - 2);
    for (int i = 0; i < 512; ++i) table(level - 1)[i] = next | kPW;
    std::memcpy(table(levels + level - 1), table(level - 1), kPage);
  }
  for (int level = 2; level <= levels; ++level)
    table(levels + level - 1)[index_at(data_va_, level)] = gpa_of(levels + level - 2) | kPW;
  for (std::uint64_t p = 0; p < IMEE_DATA_PAGES; ++p)
    table(levels)[index_at(data_va_, 1) + p] = (local_gpa_ + (kDataPage + p) * kPage) | kPW;
  local_root_[levels] = gpa_of(2 * static_cast<std::uint64_t>(levels) - 1);
}

std::uint64_t AgentShell::home_gpa_for(const GuestRam& ram, const AgentHome& home) const {
  const std::uint64_t page_va = home.va & ~(kPage - 1);
  Expected<Translation> t = imee::translate(ram, home.space, page_va);
  if (!t) fail("agent home " + t.error().describe());
  if (!t->executable) fail("agent home VA is mapped no-execute");
  const std::uint64_t page_gpa = t->gpa & ~(kPage - 1);
  if (ram.host(page_gpa, kPage) == nullptr) fail("agent home page is not wholly in guest RAM");
  if (page_va + kPage > data_va_ && page_va < data_va_ + IMEE_DATA_SIZE)
    fail("agent home VA collides with the ImEE's data VAs");
  return page_gpa;
}

void AgentShell::set_home(const AgentHome& home, std::uint64_t gpa) {
  home_space_ = home.space;
  home_va_ = home.va & ~(kPage - 1);
  home_gpa_ = gpa;
}

void AgentShell::restart(PagingMode mode, bool nxe) {
  const int levels = static_cast<int>(mode);
  auto& config = *reinterpret_cast<imee_agent_config*>(agent_page() + IMEE_AGENT_CONFIG_OFFSET);
  config.local_cr3 = local_root_[levels];
  config.data_va = data_va_;
  config.flags = host_cpu_is_amd() ? IMEE_AGENT_SPIN_STI : 0;  // agent/README.md, poll mode

  kvm_sregs s = vm_.sregs();
  kvm_segment code{};
  code.base = 0;
  code.limit = 0xffffffff;
  code.selector = IMEE_AGENT_CODE_SELECTOR;
  code.type = 11;  // execute/read, accessed
  code.present = 1;
  code.s = 1;
  code.l = 1;
  code.g = 1;
  kvm_segment data = code;
  data.selector = IMEE_AGENT_DATA_SELECTOR;
  data.type = 3;  // read/write, accessed
  data.l = 0;
  data.db = 1;
  s.cs = code;
  s.ds = s.es = s.fs = s.gs = s.ss = data;
  s.tr = kvm_segment{};
  s.tr.base = home_va_;  // never used: no IST, no privilege change
  s.tr.limit = 0x67;
  s.tr.type = 11;  // 64-bit TSS, busy
  s.tr.present = 1;
  s.ldt = kvm_segment{};
  s.ldt.type = 2;
  s.ldt.unusable = 1;
  s.gdt.base = home_va_ + IMEE_AGENT_GDT_OFFSET;
  s.gdt.limit = 8 * IMEE_AGENT_GDT_ENTRIES - 1;
  s.idt.base = home_va_ + IMEE_AGENT_IDT_OFFSET;
  s.idt.limit = 16 * IMEE_AGENT_IDT_VECTORS - 1;
  // WP off: an exception taken in target space pushes its frame onto the agent's stack through
  // the target's mapping of the home page, which is read-only kernel text. The write lands in
  // the agent page (ours); target RAM stays read-only whatever WP says.
  s.cr0 = kCr0PE | kCr0MP | kCr0ET | kCr0NE | kCr0PG;
  s.cr3 = local_root_[levels];
  // PGE off: every CR3 write flushes the whole TLB. No SMEP/SMAP: the agent reads user pages.
  s.cr4 = kCr4PAE | kCr4OSFXSR | kCr4OSXMMEXCPT | (mode == PagingMode::k5Level ? kCr4LA57 : 0);
  s.efer = kEferLME | kEferLMA | (nxe ? kEferNXE : 0);
  vm_.set_sregs(s);

  kvm_regs r{};
  r.rip = home_va_ + IMEE_AGENT_ENTRY_OFFSET;
  r.rsp = home_va_ + IMEE_AGENT_STACK_TOP;
  r.rflags = 2;
  vm_.set_regs(r);
  cpu_mode_ = mode;
  cpu_nxe_ = nxe;
  header().stray_vector = IMEE_STRAY_NONE;
  broken = false;
}

}  // namespace imee
