// The workers' inbound (SPI, family, dst) index (dataplane/inbound_index.h) on
// its own against a reference map, and inside SaRuntime with reader threads
// looking up while the control side installs and removes (run this binary
// under the ASan build, -DOV2_SANITIZE=ON, to catch a use after free).
#include <endian.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "common/error.h"
#include "dataplane/epoch_domain.h"
#include "dataplane/inbound_index.h"
#include "dataplane/sa_runtime.h"
#include "dataplane_test_sa.h"

namespace ov2 {
namespace {

ov2_sa_key make_key(uint32_t spi, uint32_t dst_v4, bool v6 = false) {
  ov2_sa_key k{};
  k.spi_be = htobe32(spi);
  k.family = v6 ? OV2_AF_INET6 : OV2_AF_INET;
  std::memcpy(k.daddr, &dst_v4, 4);
  if (v6) k.daddr[15] = 1;
  return k;
}

struct KeyLess {
  bool operator()(const ov2_sa_key& a, const ov2_sa_key& b) const { return std::memcmp(&a, &b, sizeof a) < 0; }
};

// Slots as the SA table would hold them: a key per slot, or none.
struct Slots {
  std::vector<ov2_sa_key> keys;
  std::vector<bool> used;
  explicit Slots(size_t n) : keys(n), used(n) {}
  const ov2_sa_key* resolve(uint32_t s) const { return used[s] ? &keys[s] : nullptr; }
};

uint32_t find(const InboundIndex& idx, const Slots& slots, const ov2_sa_key& key) {
  const ov2_sa_key* k = idx.find(
      key, [&](uint32_t s) { return slots.resolve(s); }, [](const ov2_sa_key* p) -> const ov2_sa_key& { return *p; });
  return k ? static_cast<uint32_t>(k - slots.keys.data()) : InboundIndex::kNoSlot;
}

TEST(DataplaneInboundIndex, RandomInstallRemoveLookupMatchesAReferenceMap) {
  constexpr uint32_t kSlots = 4096;
  EpochDomain epochs;
  InboundIndex idx;
  Slots slots(kSlots);
  std::map<ov2_sa_key, uint32_t, KeyLess> ref;
  std::vector<uint32_t> free_slots;
  for (uint32_t s = kSlots; s-- > 0;) free_slots.push_back(s);
  std::mt19937 rng(12345);
  auto key_of_slot = [&](uint32_t s) -> const ov2_sa_key& { return slots.keys[s]; };
  // Few distinct keys (SPI 0..2999 x 2 destinations x 2 families) so duplicates happen often.
  auto random_key = [&] { return make_key(rng() % 3000, 0x0a000001u + rng() % 2, rng() % 2 == 0); };
  size_t duplicates = 0, removes = 0;
  for (int step = 0; step < 200000; ++step) {
    const unsigned op = rng() % 10;
    if (op < 5 && !free_slots.empty()) {  // install
      const ov2_sa_key k = random_key();
      const uint32_t s = free_slots.back();
      const uint32_t taken = idx.insert(k, s, key_of_slot, epochs);
      auto it = ref.find(k);
      if (it != ref.end()) {
        ASSERT_EQ(taken, it->second) << "a duplicate must be refused, naming the slot that holds the key";
        ++duplicates;
      } else {
        ASSERT_EQ(taken, InboundIndex::kNoSlot);
        free_slots.pop_back();
        slots.keys[s] = k;
        slots.used[s] = true;
        ref.emplace(k, s);
      }
    } else if (op < 8 && !ref.empty()) {  // remove a random installed key
      auto it = ref.begin();
      std::advance(it, static_cast<long>(rng() % std::min<size_t>(ref.size(), 64)));
      const uint32_t s = it->second;
      ASSERT_FALSE(idx.erase(it->first, (s + 1) % kSlots, key_of_slot, epochs)) << "the wrong slot is not removed";
      ASSERT_TRUE(idx.erase(it->first, s, key_of_slot, epochs));
      ASSERT_FALSE(idx.erase(it->first, s, key_of_slot, epochs)) << "removed twice";
      slots.used[s] = false;
      free_slots.push_back(s);
      ref.erase(it);
      ++removes;
    } else {  // lookup, present or absent
      const ov2_sa_key k = random_key();
      auto it = ref.find(k);
      ASSERT_EQ(find(idx, slots, k), it == ref.end() ? InboundIndex::kNoSlot : it->second);
    }
    ASSERT_EQ(idx.size(), ref.size());
    // At least half the buckets stay empty, so every probe ends.
    ASSERT_LE((idx.size() + idx.tombstones()) * 2, idx.buckets());
    idx.reclaim(epochs);
  }
  EXPECT_GT(duplicates, 1000u);
  EXPECT_GT(removes, 10000u);
  for (const auto& [k, s] : ref) EXPECT_EQ(find(idx, slots, k), s);
  EXPECT_EQ(idx.retired_tables(), 0u) << "no reader: every old table is freed at once";
}

TEST(DataplaneInboundIndex, ChurnReusesTombstonesInsteadOfGrowing) {
  EpochDomain epochs;
  InboundIndex idx;
  Slots slots(2);
  auto key_of_slot = [&](uint32_t s) -> const ov2_sa_key& { return slots.keys[s]; };
  slots.keys[0] = make_key(1, 1);
  slots.used[0] = true;
  ASSERT_EQ(idx.insert(slots.keys[0], 0, key_of_slot, epochs), InboundIndex::kNoSlot);
  for (uint32_t i = 0; i < 100000; ++i) {  // one SA comes and goes, another stays
    slots.keys[1] = make_key(1000 + i, 2);
    slots.used[1] = true;
    ASSERT_EQ(idx.insert(slots.keys[1], 1, key_of_slot, epochs), InboundIndex::kNoSlot);
    ASSERT_EQ(find(idx, slots, slots.keys[0]), 0u);
    ASSERT_EQ(find(idx, slots, slots.keys[1]), 1u);
    ASSERT_TRUE(idx.erase(slots.keys[1], 1, key_of_slot, epochs));
    slots.used[1] = false;
    idx.reclaim(epochs);
  }
  EXPECT_EQ(idx.buckets(), InboundIndex::kMinBuckets) << "tombstones were reused or swept, not grown into";
  EXPECT_EQ(find(idx, slots, slots.keys[0]), 0u);
}

TEST(DataplaneInboundIndex, GrowsToTheFullSaCapacityAndShrinksAfterBulkDeletes) {
  EpochDomain epochs;
  InboundIndex idx;
  Slots slots(OV2_MAX_SAS);
  auto key_of_slot = [&](uint32_t s) -> const ov2_sa_key& { return slots.keys[s]; };
  for (uint32_t s = 0; s < OV2_MAX_SAS; ++s) {
    slots.keys[s] = make_key(s, 0x0a000001u);
    slots.used[s] = true;
    ASSERT_EQ(idx.insert(slots.keys[s], s, key_of_slot, epochs), InboundIndex::kNoSlot);
  }
  EXPECT_EQ(idx.size(), size_t{OV2_MAX_SAS});
  EXPECT_LE(idx.buckets(), size_t{OV2_MAX_SAS} * 8);
  for (uint32_t s = 0; s < OV2_MAX_SAS; s += 997) EXPECT_EQ(find(idx, slots, slots.keys[s]), s);
  EXPECT_EQ(find(idx, slots, make_key(OV2_MAX_SAS, 0x0a000001u)), InboundIndex::kNoSlot) << "a miss ends";
  for (uint32_t s = 1; s < OV2_MAX_SAS; ++s) {
    ASSERT_TRUE(idx.erase(slots.keys[s], s, key_of_slot, epochs));
    slots.used[s] = false;
  }
  EXPECT_EQ(idx.size(), 1u);
  EXPECT_EQ(idx.buckets(), InboundIndex::kMinBuckets) << "the table shrank with the SAs";
  EXPECT_EQ(find(idx, slots, slots.keys[0]), 0u);
}

SaSpec inbound_spec(uint32_t spi) { return test::tunnel_sa_spec(Direction::In, "192.0.2.2", spi); }

TEST(DataplaneInboundIndex, SaRuntimeFullTableRefusesTheNextSaAndKeepsTheOthers) {
  constexpr uint32_t kCap = 64;
  SaRuntime t(kCap);
  for (uint32_t s = 0; s < kCap; ++s) t.install((1ull << 24) | s, inbound_spec(0x1000 + s));
  try {
    t.install((1ull << 24) | kCap, inbound_spec(0x2000));
    ADD_FAILURE() << "an SA beyond the capacity was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::ResourceExhausted);
  }
  try {
    t.install((2ull << 24) | 3, inbound_spec(0x1000 + 5));
    ADD_FAILURE() << "a used slot was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Exists);
  }
  t.remove((1ull << 24) | 3);
  try {
    t.install((2ull << 24) | 3, inbound_spec(0x1000 + 5));
    ADD_FAILURE() << "a duplicate (SPI, dst) was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Exists);
    EXPECT_NE(std::string(e.what()).find(std::to_string((1ull << 24) | 5)), std::string::npos) << e.what();
  }
  EXPECT_EQ(t.find_inbound(inbound_key_for(inbound_spec(0x1000 + 3))), nullptr);
  t.install((2ull << 24) | 3, inbound_spec(0x3000));
  EXPECT_EQ(t.size(), size_t{kCap});
  for (uint32_t s = 0; s < kCap; ++s) {
    const uint32_t spi = s == 3 ? 0x3000 : 0x1000 + s;
    const SaRuntimeEntry* e = t.find_inbound(inbound_key_for(inbound_spec(spi)));
    ASSERT_NE(e, nullptr) << s;
    EXPECT_EQ(e->handle & SaRuntime::kSlotMask, s);
    EXPECT_EQ(e->inbound->params().spi, spi);
  }
}

// Two reader threads look SAs up and read them (as workers do, inside an
// epoch) while the control side installs and removes thousands of others and
// the index grows, shrinks and rebuilds.  The stable SAs are never missed, a
// found SA always carries the key asked for, and (under ASan) nothing is read
// after it was freed.
TEST(DataplaneInboundIndex, ReadersDuringInstallsAndRemovesNeverMissStableSasNorReadFreedOnes) {
  constexpr uint32_t kStable = 16, kChurn = 3000, kRounds = 4;
  SaRuntime t(kStable + kChurn);
  for (uint32_t s = 0; s < kStable; ++s) t.install((1ull << 24) | s, inbound_spec(0x100 + s));
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> missed{0}, wrong{0}, churn_hits{0}, lookups{0};
  std::vector<ov2_sa_key> stable_keys, churn_keys;
  for (uint32_t i = 0; i < kStable; ++i) stable_keys.push_back(inbound_key_for(inbound_spec(0x100 + i)));
  for (uint32_t i = 0; i < kChurn; ++i) churn_keys.push_back(inbound_key_for(inbound_spec(0x10000 + i)));
  auto reader = [&](unsigned id) {
    std::mt19937 rng(id);
    while (!stop.load(std::memory_order_relaxed)) {
      t.epochs().enter(id);
      for (int i = 0; i < 64; ++i) {
        const bool stable = rng() % 2 == 0;
        const uint32_t n = stable ? rng() % kStable : rng() % kChurn;
        const uint32_t spi = stable ? 0x100 + n : 0x10000 + n;
        const SaRuntimeEntry* e = t.find_inbound(stable ? stable_keys[n] : churn_keys[n]);
        lookups.fetch_add(1, std::memory_order_relaxed);
        if (e == nullptr) {
          if (stable) missed.fetch_add(1);
          continue;
        }
        if (e->inbound->params().spi != spi || e->dir != Direction::In) wrong.fetch_add(1);
        if (!stable) churn_hits.fetch_add(1, std::memory_order_relaxed);
      }
      t.epochs().leave(id);
    }
  };
  std::thread r0(reader, 0), r1(reader, 1);
  uint64_t seq = 2;
  for (uint32_t round = 0; round < kRounds; ++round, ++seq) {
    for (uint32_t i = 0; i < kChurn; ++i) t.install((seq << 24) | (kStable + i), inbound_spec(0x10000 + i));
    for (uint32_t i = 0; i < kChurn; ++i) {
      t.remove((seq << 24) | (kStable + i));
      if (i % 256 == 0) t.reclaim();
    }
  }
  stop = true;
  r0.join();
  r1.join();
  EXPECT_EQ(t.reclaim(), 0u) << "readers are idle: everything retired is freed";
  EXPECT_EQ(missed.load(), 0u) << "a stable SA was not found during a rebuild or churn";
  EXPECT_EQ(wrong.load(), 0u);
  EXPECT_GT(lookups.load(), 1000u);
  EXPECT_GT(churn_hits.load(), 0u) << "the readers saw the churning SAs too";
  EXPECT_EQ(t.size(), size_t{kStable});
}

}  // namespace
}  // namespace ov2
