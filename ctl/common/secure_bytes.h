// Key storage.  Key bytes live only in a dedicated arena of pages that are
// excluded from core dumps (MADV_DONTDUMP) and locked in memory where the
// limit allows; every slot is wiped with OPENSSL_cleanse when released.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace ov2 {

class SecureBytes {
 public:
  static constexpr size_t kMaxSize = 64;  // the longest key we accept (HMAC keys up to 64 bytes)

  SecureBytes() = default;
  // Copies `bytes`; throws ov2::Error(InvalidArgument) if longer than kMaxSize.
  explicit SecureBytes(std::span<const uint8_t> bytes);
  ~SecureBytes();
  SecureBytes(const SecureBytes& other);
  SecureBytes& operator=(const SecureBytes& other);
  SecureBytes(SecureBytes&& other) noexcept;
  SecureBytes& operator=(SecureBytes&& other) noexcept;

  // Parses hex: optional 0x prefix, whitespace ignored.  Throws with a message
  // that never contains the input.
  static SecureBytes from_hex(std::string_view text);

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::span<const uint8_t> span() const { return {data_, size_}; }
  void clear();  // wipes and releases

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// A fixed-size block of the same protected storage for derived key material
// that is bigger than a key (an expanded AES-GCM key schedule with its GHASH
// tables).  64-byte aligned, zeroed, wiped when destroyed.  Not copyable.
// Blocks come from one arena per 64-byte size class: a block occupies its
// size rounded up to 64 bytes, nothing more.
class SecureBlock {
 public:
  static constexpr size_t kMaxSize = 1024;
  // Throws ov2::Error(Internal) if `size` is 0 or larger than kMaxSize.
  explicit SecureBlock(size_t size);
  ~SecureBlock();
  SecureBlock(const SecureBlock&) = delete;
  SecureBlock& operator=(const SecureBlock&) = delete;
  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }  // usable bytes: the size asked for, rounded up to 64

 private:
  uint8_t* data_;
  uint32_t size_;
};

// Key storage is mapped in chunks of kKeyArenaChunkPages pages per slot size
// until kKeyArenaLargeChunksAfter bytes of that size are mapped, then in
// chunks of kKeyArenaLargeChunkBytes (2 MiB-aligned, on a transparent huge
// page where the kernel allows); a chunk whose slots are all free goes back
// to the system (wiped, then unmapped), except kKeyArenaReserveChunks empty
// small chunks per slot size.
inline constexpr size_t kKeyArenaChunkPages = 16;
inline constexpr size_t kKeyArenaReserveChunks = 1;
inline constexpr size_t kKeyArenaLargeChunkBytes = size_t{2} << 20;
inline constexpr size_t kKeyArenaLargeChunksAfter = size_t{4} << 20;

// Arena statistics, for tests that prove wiping and for RSS accounting.
struct KeyArenaStats {
  size_t slots_in_use;
  size_t pages;          // mapped
  size_t locked_pages;   // of those, locked in memory (mlock succeeded)
  size_t reserve_pages;  // of those, in chunks with no slot in use
};
KeyArenaStats key_arena_stats();  // SecureBytes
KeyArenaStats key_block_stats();  // SecureBlock

// Tests only: called with each chunk's bytes just before it is unmapped
// (under the arena's lock; must not allocate or free key storage).
extern void (*key_arena_unmap_observer)(std::span<const uint8_t> chunk);

}  // namespace ov2
