// Hand-built x86-64 page tables in a flat byte buffer, for tests of every translation path.
// Deliberately independent of libimee's walker: it computes table indices itself.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <vector>

namespace imee::test {

class PageTableBuilder {
 public:
  static constexpr std::uint64_t P = 1, W = 2, U = 4, A = 1ull << 5, PS = 1ull << 7,
                                 NX = 1ull << 63;

  PageTableBuilder(std::size_t ram_bytes, int levels) : ram_(ram_bytes), levels_(levels) {
    root_ = alloc_page();
  }

  std::uint64_t root() const { return root_; }
  std::span<const std::byte> ram() const { return ram_; }
  std::vector<std::byte>& bytes() { return ram_; }

  // A fresh zeroed 4 KiB page from the top of the allocator.
  std::uint64_t alloc_page() {
    const std::uint64_t gpa = next_;
    next_ += 4096;
    if (next_ > ram_.size()) throw std::runtime_error("test RAM exhausted");
    return gpa;
  }

  // Maps va -> gpa with a page of `size` (4 KiB, 2 MiB, 1 GiB). Intermediate entries get
  // `table_flags`; the leaf gets `leaf_flags` (plus PS for large pages).
  void map(std::uint64_t va, std::uint64_t gpa, std::uint64_t size, std::uint64_t leaf_flags,
           std::uint64_t table_flags = P | W | U | A) {
    const int leaf_level = size == (1ull << 30) ? 3 : size == (2ull << 20) ? 2 : 1;
    std::uint64_t table = root_;
    for (int level = levels_; level > leaf_level; --level) {
      const std::uint64_t slot = table + index(va, level) * 8;
      std::uint64_t e = entry(slot);
      if (!(e & P)) {
        e = alloc_page() | table_flags;
        set_entry(slot, e);
      }
      table = e & 0x000ffffffffff000ull;
    }
    set_entry(table + index(va, leaf_level) * 8, gpa | leaf_flags | (leaf_level > 1 ? PS : 0));
  }

  // The GPA of the entry for `va` at `level` (5..1), following present entries.
  std::uint64_t entry_gpa(std::uint64_t va, int level) const {
    std::uint64_t table = root_;
    for (int l = levels_; l > level; --l)
      table = entry(table + index(va, l) * 8) & 0x000ffffffffff000ull;
    return table + index(va, level) * 8;
  }

  std::uint64_t entry(std::uint64_t gpa) const {
    std::uint64_t v;
    std::memcpy(&v, ram_.data() + gpa, 8);
    return v;
  }
  void set_entry(std::uint64_t gpa, std::uint64_t v) { std::memcpy(ram_.data() + gpa, &v, 8); }
  void fill(std::uint64_t gpa, std::size_t len, std::uint8_t seed) {
    for (std::size_t i = 0; i < len; ++i)
      ram_[gpa + i] = std::byte(static_cast<std::uint8_t>(seed + i * 7));
  }

  static std::uint64_t index(std::uint64_t va, int level) {
    return (va >> (12 + 9 * (level - 1))) & 511;
  }

 private:
  std::vector<std::byte> ram_;
  int levels_;
  std::uint64_t next_ = 0x1000;
  std::uint64_t root_;
};

}  // namespace imee::test
