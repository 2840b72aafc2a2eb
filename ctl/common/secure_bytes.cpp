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

#include "common/error.h"

namespace ov2 {
namespace {

// Fixed-size slots carved from DONTDUMP pages, in chunks of
// kKeyArenaChunkPages pages mapped one at a time.  Not on the packet path: a
// mutex is fine here.
//
// Memory goes back to the system: a chunk whose slots are all free is
// unmapped (its slots were wiped one by one when released), except
// kKeyArenaReserveChunks empty chunks kept so that a rekey (add the new SA,
// delete the old) does not map and unmap a chunk every time.  New slots come
// from the lowest-addressed chunk with a free slot, lowest slot first: under
// churn the live keys concentrate in the low chunks and the high ones drain
// and are unmapped.  Keys never move (the AF_XDP workers hold raw pointers to
// expanded keys while they process a batch), so a chunk with one live slot
// stays mapped.
class KeyArena {
  static constexpr size_t kSlotsMax = 1024;  // 64-byte slots in a 64 KiB chunk (4 KiB pages)

 public:
  explicit KeyArena(size_t slot)
      : slot_(slot),
        chunk_bytes_(static_cast<size_t>(sysconf(_SC_PAGESIZE)) * kKeyArenaChunkPages),
        slots_per_chunk_(std::min(chunk_bytes_ / slot, kSlotsMax)) {}
  const size_t slot_;  // bytes per slot; a multiple of 64 and chunks are page-aligned, so slots keep 64-byte alignment

  uint8_t* allocate() {
    std::lock_guard lock(mu_);
    if (with_free_.empty()) grow();
    Chunk& c = chunks_.at(*with_free_.begin());
    size_t word = 0;
    while (c.free_bits[word] == 0) ++word;
    const size_t index = word * 64 + static_cast<size_t>(__builtin_ctzll(c.free_bits[word]));
    c.free_bits[word] &= c.free_bits[word] - 1;
    if (c.in_use++ == 0) empty_.erase(c.base);
    if (c.in_use == slots_per_chunk_) with_free_.erase(c.base);
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
    if (c.in_use-- == slots_per_chunk_) with_free_.insert(c.base);
    --in_use_;
    if (c.in_use == 0) {
      empty_.insert(c.base);
      // Keep the lowest empty chunks as the reserve; unmap the highest.
      while (empty_.size() > kKeyArenaReserveChunks) unmap(*empty_.rbegin());
    }
  }

  KeyArenaStats stats() {
    std::lock_guard lock(mu_);
    return {in_use_, chunks_.size() * kKeyArenaChunkPages, locked_chunks_ * kKeyArenaChunkPages,
            empty_.size() * kKeyArenaChunkPages};
  }

 private:
  struct Chunk {
    uintptr_t base = 0;
    size_t in_use = 0;
    bool locked = false;
    std::array<uint64_t, kSlotsMax / 64> free_bits{};  // bit set = slot free
  };

  void grow() {
    void* mem = mmap(nullptr, chunk_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) fail(ErrorCode::ResourceExhausted, "cannot allocate key storage (mmap failed)");
    madvise(mem, chunk_bytes_, MADV_DONTDUMP);
    Chunk c;
    c.base = reinterpret_cast<uintptr_t>(mem);
    c.locked = mlock(mem, chunk_bytes_) == 0;  // best effort: keys should not reach swap
    for (size_t i = 0; i < slots_per_chunk_; ++i) c.free_bits[i / 64] |= uint64_t{1} << (i % 64);
    locked_chunks_ += c.locked ? 1 : 0;
    chunks_.emplace(c.base, c);
    with_free_.insert(c.base);
    empty_.insert(c.base);
  }

  void unmap(uintptr_t base) {
    const auto it = chunks_.find(base);
    auto* mem = reinterpret_cast<uint8_t*>(base);
    // Nothing to wipe: every slot was wiped when released, and nothing else is
    // ever written to a chunk (tests check this through the observer).
    if (key_arena_unmap_observer != nullptr) key_arena_unmap_observer(std::span<const uint8_t>(mem, chunk_bytes_));
    locked_chunks_ -= it->second.locked ? 1 : 0;
    munmap(mem, chunk_bytes_);  // also unlocks
    chunks_.erase(it);
    with_free_.erase(base);
    empty_.erase(base);
  }

  const size_t chunk_bytes_;
  const size_t slots_per_chunk_;
  std::mutex mu_;
  std::map<uintptr_t, Chunk> chunks_;  // by base address
  std::set<uintptr_t> with_free_;      // chunks with a free slot: allocate from the lowest
  std::set<uintptr_t> empty_;          // chunks with no slot in use (the reserve)
  size_t in_use_ = 0;
  size_t locked_chunks_ = 0;
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
