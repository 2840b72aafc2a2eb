// The inbound lookup of the worker's SA table: (SPI, family, destination) ->
// table slot, read by the workers without locks and changed in O(1) amortized
// per install/remove (issue #6: 100 000 SAs).
//
// Open addressing with linear probing over one array of 64-bit words, each
// read and written atomically:
//   0                      empty (ends a probe)
//   kTombstone             a removed entry (probes go on past it; reused by inserts)
//   kLive | tag<<24 | slot a live entry: `tag` is 32 bits of the key's hash, `slot`
//                          the SA table slot whose entry holds the full key
// A reader compares the tag and then the full key of the slot's entry (which it
// reaches through the epoch-protected SA table), so a bucket can never send it
// to a wrong SA -- at worst, during a concurrent install/remove, it misses.
//
// One writer at a time (the caller serializes).  The table keeps at least half
// its buckets empty, so every probe ends; when live + tombstone buckets would
// pass half, the writer builds a fresh table sized for the live entries (4x),
// publishes it by one atomic pointer and retires the old one into the caller's
// epoch domain.  A rebuild moves every live entry once and leaves >= 1 live
// entries' worth of inserts until the next one: O(1) amortized, and the
// table shrinks again after bulk deletes.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "ov2_abi.h"

namespace ov2 {

class EpochDomain;

inline uint32_t inbound_key_hash(const ov2_sa_key& k) {
  uint64_t w[3];
  std::memcpy(w, &k, sizeof w);
  uint64_t h = (w[0] * 0x9e3779b97f4a7c15ull) ^ (w[1] * 0xc2b2ae3d27d4eb4full) ^ (w[2] * 0x165667b19e3779f9ull);
  h ^= h >> 31;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 29;
  return static_cast<uint32_t>(h ^ (h >> 32));
}

inline bool same_inbound_key(const ov2_sa_key& a, const ov2_sa_key& b) { return std::memcmp(&a, &b, sizeof a) == 0; }

class InboundIndex {
 public:
  static constexpr uint32_t kNoSlot = UINT32_MAX;
  static constexpr uint32_t kMinBuckets = 16;

  InboundIndex();
  ~InboundIndex();
  InboundIndex(const InboundIndex&) = delete;
  InboundIndex& operator=(const InboundIndex&) = delete;

  // --- readers (between EpochDomain::enter/leave) ---------------------------
  // `resolve(slot)` returns the reader's object for a slot (nullptr if none)
  // and `key_of(obj)` its key; the first object whose key equals `key`, or nullptr.
  template <class Resolve, class KeyOf>
  auto find(const ov2_sa_key& key, Resolve resolve, KeyOf key_of) const -> decltype(resolve(0u)) {
    const Table* t = table_.load(std::memory_order_acquire);
    const uint32_t tag = inbound_key_hash(key);
    for (uint64_t i = tag & t->mask;; i = (i + 1) & t->mask) {
      const uint64_t w = t->buckets[i].load(std::memory_order_acquire);
      if (w == kEmpty) return nullptr;
      if ((w & kLive) && tag_of(w) == tag) {
        auto obj = resolve(slot_of(w));
        if (obj && same_inbound_key(key_of(obj), key)) return obj;
      }
    }
  }

  // --- the writer ----------------------------------------------------------
  // `key_of_slot(slot)` gives the key of a slot that is in the index.
  // Inserts key -> slot unless the key is in the index; returns the slot
  // holding it then (kNoSlot when inserted).  May rebuild (see above): the
  // old table is retired into `retired` with the epoch `epochs.advance()`.
  template <class KeyOfSlot>
  uint32_t insert(const ov2_sa_key& key, uint32_t slot, KeyOfSlot key_of_slot, EpochDomain& epochs);
  // Removes key -> slot; false if it is not there.
  template <class KeyOfSlot>
  bool erase(const ov2_sa_key& key, uint32_t slot, KeyOfSlot key_of_slot, EpochDomain& epochs);

  // Frees retired tables no reader can still see.
  void reclaim(const EpochDomain& epochs);
  size_t size() const { return live_; }
  size_t buckets() const { return table_.load(std::memory_order_relaxed)->mask + 1; }
  size_t tombstones() const { return tombstones_; }
  size_t retired_tables() const { return retired_.size(); }

 private:
  static constexpr uint64_t kEmpty = 0;
  static constexpr uint64_t kTombstone = 1;
  static constexpr uint64_t kLive = uint64_t{1} << 63;
  static uint32_t tag_of(uint64_t w) { return static_cast<uint32_t>(w >> 24); }
  static uint32_t slot_of(uint64_t w) { return static_cast<uint32_t>(w & 0xffffff); }
  static uint64_t live_word(uint32_t tag, uint32_t slot) { return kLive | (uint64_t{tag} << 24) | slot; }

  struct Table {
    explicit Table(uint64_t n) : mask(n - 1), buckets(new std::atomic<uint64_t>[n]()) {}
    uint64_t mask;
    std::unique_ptr<std::atomic<uint64_t>[]> buckets;
  };
  struct RetiredTable {
    uint64_t epoch;
    std::unique_ptr<Table> table;
  };

  // The bucket of key -> slot (or of `key` with any slot when slot == kNoSlot), or -1.
  template <class KeyOfSlot>
  int64_t locate(const Table& t, const ov2_sa_key& key, uint32_t tag, uint32_t slot, KeyOfSlot& key_of_slot) const;
  // Rebuilds into a table sized for `live_ + extra` entries and publishes it.
  void rebuild(size_t extra, EpochDomain& epochs);

  std::atomic<Table*> table_;
  size_t live_ = 0;
  size_t tombstones_ = 0;
  std::vector<RetiredTable> retired_;
};

template <class KeyOfSlot>
int64_t InboundIndex::locate(const Table& t, const ov2_sa_key& key, uint32_t tag, uint32_t slot,
                             KeyOfSlot& key_of_slot) const {
  for (uint64_t i = tag & t.mask;; i = (i + 1) & t.mask) {
    const uint64_t w = t.buckets[i].load(std::memory_order_relaxed);
    if (w == kEmpty) return -1;
    if ((w & kLive) && tag_of(w) == tag && (slot == kNoSlot || slot_of(w) == slot) &&
        same_inbound_key(key_of_slot(slot_of(w)), key))
      return static_cast<int64_t>(i);
  }
}

template <class KeyOfSlot>
uint32_t InboundIndex::insert(const ov2_sa_key& key, uint32_t slot, KeyOfSlot key_of_slot, EpochDomain& epochs) {
  const uint32_t tag = inbound_key_hash(key);
  {
    const Table& t = *table_.load(std::memory_order_relaxed);
    const int64_t at = locate(t, key, tag, kNoSlot, key_of_slot);
    if (at >= 0) return slot_of(t.buckets[at].load(std::memory_order_relaxed));
    if ((live_ + tombstones_ + 1) * 2 > t.mask + 1) rebuild(1, epochs);
  }
  const Table& t = *table_.load(std::memory_order_relaxed);
  for (uint64_t i = tag & t.mask;; i = (i + 1) & t.mask) {
    const uint64_t w = t.buckets[i].load(std::memory_order_relaxed);
    if (w == kEmpty || w == kTombstone) {
      if (w == kTombstone) --tombstones_;
      // Release: a reader that sees the word sees the slot's entry published before it.
      t.buckets[i].store(live_word(tag, slot), std::memory_order_release);
      ++live_;
      return kNoSlot;
    }
  }
}

template <class KeyOfSlot>
bool InboundIndex::erase(const ov2_sa_key& key, uint32_t slot, KeyOfSlot key_of_slot, EpochDomain& epochs) {
  const Table& t = *table_.load(std::memory_order_relaxed);
  const int64_t at = locate(t, key, inbound_key_hash(key), slot, key_of_slot);
  if (at < 0) return false;
  t.buckets[at].store(kTombstone, std::memory_order_release);
  --live_;
  ++tombstones_;
  // Shrink after bulk deletes (a rebuild leaves 4x the live entries: no thrashing).
  if (t.mask + 1 > kMinBuckets && live_ * 16 < t.mask + 1) rebuild(0, epochs);
  return true;
}

}  // namespace ov2
