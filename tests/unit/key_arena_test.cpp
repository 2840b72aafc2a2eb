// Key storage (common/secure_bytes.h) gives memory back: a chunk whose slots
// are all free is wiped and unmapped, beyond a reserve of
// kKeyArenaReserveChunks empty chunks per slot size.  Other tests of this
// binary may hold key storage, so every check is relative to the state
// before the test.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "common/secure_bytes.h"

namespace ov2 {
namespace {

// AddressSanitizer intercepts mlock and only pretends to lock ("ASan ignores
// mlock"): VmLck cannot show the arena's locked pages there.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kMlockIsReal = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kMlockIsReal = false;
#else
constexpr bool kMlockIsReal = true;
#endif
#else
constexpr bool kMlockIsReal = true;
#endif

const size_t kChunkPages = kKeyArenaChunkPages;
const size_t kReservePages = kKeyArenaReserveChunks * kKeyArenaChunkPages;

// VmLck of this process in bytes.
uint64_t locked_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmLck:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10) * 1024;
  return 0;
}

// Key storage blocks of 1000 bytes (1024-byte slots: 64 per chunk) filled with
// a pattern, as an expanded key would be.
std::vector<std::unique_ptr<SecureBlock>> filled_blocks(size_t n, uint8_t pattern) {
  std::vector<std::unique_ptr<SecureBlock>> v;
  for (size_t i = 0; i < n; ++i) {
    v.push_back(std::make_unique<SecureBlock>(1000));
    std::memset(v.back()->data(), pattern, v.back()->size());
  }
  return v;
}

TEST(KeyArena, AllocatingManyKeysAndFreeingThemAllUnmapsEverythingButTheReserve) {
  const KeyArenaStats before = key_arena_stats();
  const uint64_t locked_before = locked_bytes();
  constexpr size_t kKeys = 20000;  // 64-byte slots: 1.25 MB, ~20 chunks
  {
    std::vector<SecureBytes> keys;
    const uint8_t bytes[32] = {1, 2, 3};
    for (size_t i = 0; i < kKeys; ++i) keys.emplace_back(std::span<const uint8_t>(bytes));
    const KeyArenaStats full = key_arena_stats();
    EXPECT_EQ(full.slots_in_use, before.slots_in_use + kKeys);
    EXPECT_GE(full.pages * static_cast<size_t>(sysconf(_SC_PAGESIZE)), kKeys * 64);
    if (kMlockIsReal && full.locked_pages > before.locked_pages) {  // mlock worked (root, or a high RLIMIT_MEMLOCK)
      EXPECT_GE(locked_bytes(), locked_before + (full.locked_pages - before.locked_pages) * sysconf(_SC_PAGESIZE) / 2);
    }
  }
  const KeyArenaStats after = key_arena_stats();
  EXPECT_EQ(after.slots_in_use, before.slots_in_use);
  // What was mapped before (chunks with other tests' keys, the reserve) plus
  // at most one more reserve: the ~20 chunks of this test are gone.
  EXPECT_LE(after.pages, before.pages + kReservePages);
  EXPECT_LE(after.reserve_pages, kReservePages);
  EXPECT_LE(after.locked_pages, before.locked_pages + kReservePages);
  // The kernel agrees: the pages are unlocked (munmap), not just counted so.
  EXPECT_LE(locked_bytes(), locked_before + kReservePages * sysconf(_SC_PAGESIZE));
}

TEST(KeyArena, InterleavedFreesAreRefilledLowestFirstAndChurnDoesNotGrowTheArena) {
  const KeyArenaStats before = key_block_stats();
  auto blocks = filled_blocks(64 * 20, 0x11);  // 20 chunks' worth
  const size_t peak = key_block_stats().pages;
  EXPECT_GE(peak, before.pages + 19 * kChunkPages);
  // Every other block freed: no chunk empties, nothing is unmapped, and the
  // next allocations reuse the holes instead of mapping more.
  for (size_t i = 0; i < blocks.size(); i += 2) blocks[i].reset();
  EXPECT_EQ(key_block_stats().pages, peak);
  for (size_t i = 0; i < blocks.size(); i += 2) blocks[i] = std::make_unique<SecureBlock>(1000);
  EXPECT_EQ(key_block_stats().pages, peak);
  // Rekey churn: 50 rounds of "add 64 new, delete the 64 oldest" at a steady
  // 1280 live blocks never needs more than the peak plus the one chunk the
  // new blocks land in before the old ones go.
  for (int round = 0; round < 50; ++round) {
    auto fresh = filled_blocks(64, static_cast<uint8_t>(round));
    blocks.erase(blocks.begin(), blocks.begin() + 64);
    for (auto& b : fresh) blocks.push_back(std::move(b));
    ASSERT_LE(key_block_stats().pages, peak + kChunkPages) << "round " << round;
  }
  // Lowest-first: free every third block in ascending address order (a LIFO
  // free list would hand out the highest of them next); the next block takes
  // the lowest free slot.
  std::sort(blocks.begin(), blocks.end(), [](const auto& a, const auto& b) { return a->data() < b->data(); });
  uint8_t* lowest_freed = nullptr;
  for (size_t i = 1; i < blocks.size(); i += 3) {
    if (lowest_freed == nullptr) lowest_freed = blocks[i]->data();
    blocks[i].reset();
  }
  auto next = std::make_unique<SecureBlock>(1000);
  EXPECT_LE(next->data(), lowest_freed);
  next.reset();
  // The upper half by address freed: their chunks empty and go.  The lower
  // half is two thirds dense (every third freed), plus a partial chunk at
  // each end.
  blocks.erase(std::remove(blocks.begin(), blocks.end(), nullptr), blocks.end());
  blocks.resize(blocks.size() / 2);
  EXPECT_LE(key_block_stats().pages, before.pages + (blocks.size() * 3 / 2 / 64 + 3) * kChunkPages + kReservePages);
  blocks.clear();
  const KeyArenaStats after = key_block_stats();
  EXPECT_EQ(after.slots_in_use, before.slots_in_use);
  EXPECT_LE(after.pages, before.pages + kReservePages);
}

size_t g_large_chunks = 0;
size_t g_aligned_large_chunks = 0;
void record_large_chunk(std::span<const uint8_t> chunk) {
  if (chunk.size() != kKeyArenaLargeChunkBytes) return;
  ++g_large_chunks;
  if (reinterpret_cast<uintptr_t>(chunk.data()) % kKeyArenaLargeChunkBytes == 0) ++g_aligned_large_chunks;
}

TEST(KeyArena, ALargeArenaMapsHugePageAlignedChunksAndUnmapsThemWhenEmpty) {
  const KeyArenaStats before = key_block_stats();
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  // 12 MiB of 1024-byte blocks: past kKeyArenaLargeChunksAfter, so most of them land in large chunks.
  constexpr size_t kBlocks = 12 * 1024;
  auto blocks = filled_blocks(kBlocks, 0x3C);
  const KeyArenaStats full = key_block_stats();
  EXPECT_EQ(full.slots_in_use, before.slots_in_use + kBlocks);
  // Small chunks up to the threshold, then 2 MiB ones: few chunks, and not much more than the blocks need.
  EXPECT_GE(full.pages * page, kBlocks * 1024);
  EXPECT_LE(full.pages * page,
            before.pages * page + kBlocks * 1024 + kKeyArenaLargeChunkBytes + kKeyArenaLargeChunksAfter);
  g_large_chunks = g_aligned_large_chunks = 0;
  key_arena_unmap_observer = record_large_chunk;
  blocks.clear();
  key_arena_unmap_observer = nullptr;
  // 8 MiB at least were in 2 MiB chunks, each on a 2 MiB boundary (so a huge page can back it).
  EXPECT_GE(g_large_chunks, (kBlocks * 1024 - kKeyArenaLargeChunksAfter) / kKeyArenaLargeChunkBytes);
  EXPECT_EQ(g_aligned_large_chunks, g_large_chunks);
  const KeyArenaStats after = key_block_stats();
  EXPECT_EQ(after.slots_in_use, before.slots_in_use);
  // Empty large chunks are never the reserve: all of them went back.
  EXPECT_LE(after.pages, before.pages + kReservePages);
  EXPECT_LE(after.reserve_pages, before.reserve_pages + kReservePages);
}

// What the arena saw of each chunk just before unmapping it.
size_t g_unmapped_chunks = 0;
size_t g_nonzero_bytes = 0;
void record_unmap(std::span<const uint8_t> chunk) {
  ++g_unmapped_chunks;
  g_nonzero_bytes += static_cast<size_t>(std::count_if(chunk.begin(), chunk.end(), [](uint8_t b) { return b != 0; }));
}

TEST(KeyArena, AChunkIsAllZeroWhenItIsUnmapped) {
  g_unmapped_chunks = g_nonzero_bytes = 0;
  key_arena_unmap_observer = record_unmap;
  {
    auto blocks = filled_blocks(64 * 8, 0xA5);
    auto large = filled_blocks(kKeyArenaLargeChunksAfter / 1024 + 64, 0x96);  // into a large chunk too
    std::vector<SecureBytes> keys;
    const uint8_t bytes[64] = {0x5A, 0x5A, 0x5A, 0x5A};
    for (size_t i = 0; i < 4096; ++i) keys.emplace_back(std::span<const uint8_t>(bytes));
  }
  key_arena_unmap_observer = nullptr;
  EXPECT_GE(g_unmapped_chunks, 8u);  // 7 of the blocks' chunks at least, 3 of the keys'
  EXPECT_EQ(g_nonzero_bytes, 0u);
}

}  // namespace
}  // namespace ov2
