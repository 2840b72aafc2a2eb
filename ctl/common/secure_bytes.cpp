#include "common/secure_bytes.h"

#include <openssl/crypto.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <vector>

#include "common/error.h"

namespace ov2 {
namespace {

// Fixed-size slots carved from DONTDUMP pages, in chunks mapped one at a
// time: kKeyArenaChunkPages pages each while the arena is small, then
// (kKeyArenaLargeChunkBytes) 2 MiB chunks on one transparent huge page each.
// A restore of 200 000 SAs takes ~200 MB of expanded keys: in 64 KiB chunks
// that was 3 125 mmap/mlock pairs faulting 50 000 pages in, and at the stop
// 3 125 munmaps, each a TLB shootdown on every CPU the daemon ran on (0.7 s of
// the stop); in 2 MiB chunks it is ~100 of each.  Not on the packet path: a
// mutex is fine here.
//
// Memory goes back to the system: a chunk whose slots are all free is
// unmapped (its slots were wiped one by one when released), except
// kKeyArenaReserveChunks empty small chunks kept so that a rekey (add the new
// SA, delete the old) does not map and unmap a chunk every time.  New slots
// come from the lowest-addressed chunk with a free slot, lowest slot first:
// under churn the live keys concentrate in the low chunks and the high ones
// drain and are unmapped.  Keys never move (the AF_XDP workers hold raw
// pointers to expanded keys while they process a batch), so a chunk with one
// live slot stays mapped.
class KeyArena {
 public:
  explicit KeyArena(size_t slot)
      : slot_(slot), page_(static_cast<size_t>(sysconf(_SC_PAGESIZE))), small_bytes_(page_ * kKeyArenaChunkPages) {}
  const size_t slot_;  // bytes per slot; a multiple of 64 and chunks are page-aligned, so slots keep 64-byte alignment

  uint8_t* allocate() {
    std::lock_guard lock(mu_);
    if (with_free_.empty()) grow();
    Chunk& c = chunks_.at(*with_free_.begin());
    size_t word = c.first_free_word;
    while (c.free_bits[word] == 0) ++word;
    c.first_free_word = word;
    const size_t index = word * 64 + static_cast<size_t>(__builtin_ctzll(c.free_bits[word]));
    c.free_bits[word] &= c.free_bits[word] - 1;
    if (c.in_use++ == 0) empty_.erase(c.base);
    if (c.in_use == c.slots) with_free_.erase(c.base);
    ++in_use_;
    return reinterpret_cast<uint8_t*>(c.base) + index * slot_;
  }

  void release(uint8_t* p) {
    OPENSSL_cleanse(p, slot_);
    std::lock_guard lock(mu_);
    const auto addr = reinterpret_cast<uintptr_t>(p);
    auto it = chunks_.upper_bound(addr);
    if (it == chunks_.begin()) std::abort();  // not a slot of this arena: memory corruption
    Chunk& c = (--it)->second;
    const size_t index = (addr - c.base) / slot_;
    c.free_bits[index / 64] |= uint64_t{1} << (index % 64);
    c.first_free_word = std::min(c.first_free_word, index / 64);
    if (c.in_use-- == c.slots) with_free_.insert(c.base);
    --in_use_;
    if (c.in_use == 0) {
      if (c.bytes != small_bytes_) {
        unmap(c.base);  // a large chunk is never kept as the reserve
        return;
      }
      empty_.insert(c.base);
      // Keep the lowest empty chunks as the reserve; unmap the highest.
      while (empty_.size() > kKeyArenaReserveChunks) unmap(*empty_.rbegin());
    }
  }

  KeyArenaStats stats() {
    std::lock_guard lock(mu_);
    size_t reserve_bytes = 0;
    for (uintptr_t base : empty_) reserve_bytes += chunks_.at(base).bytes;
    return {in_use_, mapped_bytes_ / page_, locked_bytes_ / page_, reserve_bytes / page_};
  }

 private:
  struct Chunk {
    uintptr_t base = 0;
    size_t bytes = 0;
    size_t slots = 0;
    size_t in_use = 0;
    size_t first_free_word = 0;  // no free slot below this word
    bool locked = false;
    std::vector<uint64_t> free_bits;  // bit set = slot free
  };

  // Maps `bytes` aligned to `bytes` (a huge page can back an aligned 2 MiB chunk only).
  static void* map_aligned(size_t bytes) {
    void* mem = mmap(nullptr, 2 * bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return mem;
    const auto start = reinterpret_cast<uintptr_t>(mem);
    const uintptr_t aligned = (start + bytes - 1) & ~(bytes - 1);
    if (aligned > start) munmap(mem, aligned - start);  // never touched: nothing to flush
    if (aligned + bytes < start + 2 * bytes) munmap(reinterpret_cast<void*>(aligned + bytes), start + bytes - aligned);
    return reinterpret_cast<void*>(aligned);
  }

  void grow() {
    const bool large = mapped_bytes_ >= kKeyArenaLargeChunksAfter;
    const size_t bytes = large ? kKeyArenaLargeChunkBytes : small_bytes_;
    void* mem =
        large ? map_aligned(bytes) : mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) fail(ErrorCode::ResourceExhausted, "cannot allocate key storage (mmap failed)");
    madvise(mem, bytes, MADV_DONTDUMP);
    if (large) madvise(mem, bytes, MADV_HUGEPAGE);  // before mlock faults it in: one huge page, not 512 pages
    Chunk c;
    c.base = reinterpret_cast<uintptr_t>(mem);
    c.bytes = bytes;
    c.slots = bytes / slot_;
    c.locked = mlock(mem, bytes) == 0;  // best effort: keys should not reach swap
    c.free_bits.assign((c.slots + 63) / 64, 0);
    for (size_t i = 0; i < c.slots; ++i) c.free_bits[i / 64] |= uint64_t{1} << (i % 64);
    mapped_bytes_ += bytes;
    locked_bytes_ += c.locked ? bytes : 0;
    chunks_.emplace(c.base, std::move(c));
    with_free_.insert(reinterpret_cast<uintptr_t>(mem));
    empty_.insert(reinterpret_cast<uintptr_t>(mem));
  }

  void unmap(uintptr_t base) {
    const auto it = chunks_.find(base);
    auto* mem = reinterpret_cast<uint8_t*>(base);
    const size_t bytes = it->second.bytes;
    // Nothing to wipe: every slot was wiped when released, and nothing else is
    // ever written to a chunk (tests check this through the observer).
    if (key_arena_unmap_observer != nullptr) key_arena_unmap_observer(std::span<const uint8_t>(mem, bytes));
    mapped_bytes_ -= bytes;
    locked_bytes_ -= it->second.locked ? bytes : 0;
    munmap(mem, bytes);  // also unlocks
    chunks_.erase(it);
    with_free_.erase(base);
    empty_.erase(base);
  }

  const size_t page_;
  const size_t small_bytes_;
  std::mutex mu_;
  std::map<uintptr_t, Chunk> chunks_;  // by base address
  std::set<uintptr_t> with_free_;      // chunks with a free slot: allocate from the lowest
  std::set<uintptr_t> empty_;          // chunks with no slot in use (the reserve)
  size_t in_use_ = 0;
  size_t mapped_bytes_ = 0;
  size_t locked_bytes_ = 0;
};

KeyArena& arena() {
  static KeyArena* a =
      new KeyArena(SecureBytes::kMaxSize);  // never destroyed: keys may outlive static destruction order
  return *a;
}

// Expanded key schedules (SecureBlock): one arena per 64-byte size class, so
// a block costs its size rounded up to 64 bytes (an AES-GCM schedule for the
// AVX2 code path is 368 bytes, not the 1008 of the largest layout).
constexpr size_t kBlockGranule = 64;
constexpr size_t kBlockClasses = SecureBlock::kMaxSize / kBlockGranule;
static_assert(SecureBlock::kMaxSize % kBlockGranule == 0);

size_t block_class(size_t size) { return (size + kBlockGranule - 1) / kBlockGranule - 1; }

KeyArena& block_arena(size_t klass) {
  static KeyArena** arenas = [] {  // never destroyed, like arena()
    auto** a = new KeyArena*[kBlockClasses];
    for (size_t i = 0; i < kBlockClasses; ++i) a[i] = new KeyArena((i + 1) * kBlockGranule);
    return a;
  }();
  return *arenas[klass];
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

SecureBytes::SecureBytes(std::span<const uint8_t> bytes) {
  if (bytes.size() > kMaxSize) {
    fail(ErrorCode::InvalidArgument,
         "key is " + std::to_string(bytes.size()) + " bytes; at most " + std::to_string(kMaxSize) + " are supported");
  }
  if (bytes.empty()) return;
  data_ = arena().allocate();
  size_ = bytes.size();
  std::memcpy(data_, bytes.data(), size_);
}

SecureBytes::~SecureBytes() { clear(); }

SecureBytes::SecureBytes(const SecureBytes& other) : SecureBytes(other.span()) {}

SecureBytes& SecureBytes::operator=(const SecureBytes& other) {
  if (this != &other) {
    SecureBytes copy(other);
    *this = std::move(copy);
  }
  return *this;
}

SecureBytes::SecureBytes(SecureBytes&& other) noexcept : data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

SecureBytes& SecureBytes::operator=(SecureBytes&& other) noexcept {
  if (this != &other) {
    clear();
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

void SecureBytes::clear() {
  if (data_ != nullptr) arena().release(data_);
  data_ = nullptr;
  size_ = 0;
}

SecureBytes SecureBytes::from_hex(std::string_view text) {
  uint8_t buf[kMaxSize];
  size_t n = 0;
  int high = -1;
  size_t i = 0;
  while (i < text.size() && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r')) ++i;
  if (i + 1 < text.size() && text[i] == '0' && (text[i + 1] == 'x' || text[i + 1] == 'X')) i += 2;
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ':') continue;
    const int v = hex_value(c);
    if (v < 0) {
      OPENSSL_cleanse(buf, sizeof buf);
      fail(ErrorCode::InvalidArgument, "key is not hex: found a character other than 0-9, a-f (position " +
                                           std::to_string(i) + ")");
    }
    if (high < 0) {
      high = v;
      continue;
    }
    if (n == kMaxSize) {
      OPENSSL_cleanse(buf, sizeof buf);
      fail(ErrorCode::InvalidArgument, "key is longer than " + std::to_string(kMaxSize) + " bytes");
    }
    buf[n++] = static_cast<uint8_t>(high << 4 | v);
    high = -1;
  }
  if (high >= 0) {
    OPENSSL_cleanse(buf, sizeof buf);
    fail(ErrorCode::InvalidArgument, "key has an odd number of hex digits");
  }
  SecureBytes out(std::span<const uint8_t>(buf, n));
  OPENSSL_cleanse(buf, sizeof buf);
  return out;
}

KeyArenaStats key_arena_stats() { return arena().stats(); }

SecureBlock::SecureBlock(size_t size) {
  if (size > kMaxSize || size == 0)
    fail(ErrorCode::Internal,
         "secure key block of " + std::to_string(size) + " bytes; 1 to " + std::to_string(kMaxSize) + " are supported");
  size_ = static_cast<uint32_t>(block_class(size) + 1) * kBlockGranule;
  data_ = block_arena(block_class(size)).allocate();
}

SecureBlock::~SecureBlock() { block_arena(block_class(size_)).release(data_); }

KeyArenaStats key_block_stats() {
  KeyArenaStats total{};
  for (size_t i = 0; i < kBlockClasses; ++i) {
    const KeyArenaStats s = block_arena(i).stats();
    total.slots_in_use += s.slots_in_use;
    total.pages += s.pages;
    total.locked_pages += s.locked_pages;
    total.reserve_pages += s.reserve_pages;
  }
  return total;
}

void (*key_arena_unmap_observer)(std::span<const uint8_t> chunk) = nullptr;

}  // namespace ov2
