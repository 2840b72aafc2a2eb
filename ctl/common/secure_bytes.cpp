#include "common/secure_bytes.h"

#include <openssl/crypto.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <vector>

#include "common/error.h"

namespace ov2 {
namespace {

// Fixed-size slots carved from DONTDUMP pages.  Not on the packet path: a
// mutex is fine here.
class KeyArena {
 public:
  explicit KeyArena(size_t slot) : slot_(slot) {}
  const size_t slot_;  // bytes per slot; a multiple of 64 and chunks are page-aligned, so slots keep 64-byte alignment

  uint8_t* allocate() {
    std::lock_guard lock(mu_);
    if (free_.empty()) grow();
    uint8_t* p = free_.back();
    free_.pop_back();
    ++in_use_;
    return p;
  }

  void release(uint8_t* p) {
    OPENSSL_cleanse(p, slot_);
    std::lock_guard lock(mu_);
    free_.push_back(p);
    --in_use_;
  }

  KeyArenaStats stats() {
    std::lock_guard lock(mu_);
    return {in_use_, pages_};
  }

 private:
  void grow() {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t bytes = page * 16;
    void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) fail(ErrorCode::ResourceExhausted, "cannot allocate key storage (mmap failed)");
    madvise(mem, bytes, MADV_DONTDUMP);
    mlock(mem, bytes);  // best effort: keys should not reach swap
    auto* base = static_cast<uint8_t*>(mem);
    for (size_t off = 0; off + slot_ <= bytes; off += slot_) free_.push_back(base + off);
    pages_ += bytes / page;
  }

  std::mutex mu_;
  std::vector<uint8_t*> free_;
  size_t in_use_ = 0;
  size_t pages_ = 0;
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
  KeyArenaStats total{0, 0};
  for (size_t i = 0; i < kBlockClasses; ++i) {
    const KeyArenaStats s = block_arena(i).stats();
    total.slots_in_use += s.slots_in_use;
    total.pages += s.pages;
  }
  return total;
}

}  // namespace ov2
