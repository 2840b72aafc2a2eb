// The worker's SA table on its own (no root needed): handle checks, inbound
// lookup by (SPI, family, dst), and that a removed SA is freed only after every
// worker has passed a quiescent point.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/secure_bytes.h"
#include "esp/crypto_backend.h"
#include "dataplane/sa_runtime.h"
#include "dataplane_test_sa.h"

namespace ov2 {
namespace {

SaSpec spec(Direction dir, const char* dst, uint32_t spi) { return test::tunnel_sa_spec(dir, dst, spi); }

constexpr uint64_t kOut = (3ull << 24) | 5;
constexpr uint64_t kIn = (3ull << 24) | 6;

TEST(DataplaneSaRuntime, LookupByHandleChecksTheWholeHandleNotJustTheSlot) {
  SaRuntime t(64);
  t.install(kOut, spec(Direction::Out, "192.0.2.2", 0x100));
  EXPECT_NE(t.outbound(kOut), nullptr);
  EXPECT_EQ(t.outbound((4ull << 24) | 5), nullptr) << "same slot, other sequence: a stale handle";
  EXPECT_EQ(t.outbound((3ull << 24) | 7), nullptr);
  EXPECT_EQ(t.outbound(0), nullptr);
}

TEST(DataplaneSaRuntime, InboundIsFoundBySpiFamilyAndDestinationOnly) {
  SaRuntime t(64);
  t.install(kIn, spec(Direction::In, "192.0.2.9", 0xabc));
  ov2_sa_key k = inbound_key_for(spec(Direction::In, "192.0.2.9", 0xabc));
  const SaRuntimeEntry* e = t.find_inbound(k);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->handle, kIn);
  EXPECT_NE(e->inbound, nullptr);
  EXPECT_EQ(t.find_inbound(inbound_key_for(spec(Direction::In, "192.0.2.8", 0xabc))), nullptr);
  EXPECT_EQ(t.find_inbound(inbound_key_for(spec(Direction::In, "192.0.2.9", 0xabd))), nullptr);
  EXPECT_EQ(t.outbound(kIn), nullptr) << "an inbound handle is not an outbound SA";
}

TEST(DataplaneSaRuntime, RefusesHandleZeroSlotBeyondCapacityTakenSlotAndDuplicateInboundKey) {
  SaRuntime t(8);
  EXPECT_THROW(t.install(0, spec(Direction::Out, "192.0.2.2", 1)), Error);
  EXPECT_THROW(t.install((1ull << 24) | 8, spec(Direction::Out, "192.0.2.2", 1)), Error);
  t.install((1ull << 24) | 1, spec(Direction::In, "192.0.2.2", 7));
  try {
    t.install((2ull << 24) | 1, spec(Direction::Out, "192.0.2.2", 2));
    ADD_FAILURE() << "slot reuse accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Exists);
  }
  try {
    t.install((1ull << 24) | 2, spec(Direction::In, "192.0.2.2", 7));
    ADD_FAILURE() << "duplicate (SPI, dst) accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Exists);
  }
  EXPECT_EQ(t.size(), 1u);
}

TEST(DataplaneSaRuntime, RemovedSaIsFreedOnlyAfterEveryWorkerPassedAQuiescentPoint) {
  SaRuntime t(64);
  t.install(kOut, spec(Direction::Out, "192.0.2.2", 0x100));
  t.epochs().enter(0);  // worker 0 is in the middle of a batch and may hold the pointer
  t.epochs().enter(1);
  esp::OutboundSa* held = t.outbound(kOut);
  ASSERT_NE(held, nullptr);
  t.remove(kOut);
  EXPECT_EQ(t.outbound(kOut), nullptr) << "unpublished at once";
  EXPECT_GT(t.reclaim(), 0u) << "must wait: workers 0 and 1 may still use it";
  EXPECT_EQ(held->params().spi, 0x100u) << "still alive for the worker holding it";
  t.epochs().leave(0);
  EXPECT_GT(t.reclaim(), 0u) << "worker 1 still in its old batch";
  t.epochs().enter(1);  // worker 1 starts a new batch: it cannot see the old SA any more
  EXPECT_EQ(t.reclaim(), 0u);
  EXPECT_THROW(t.remove(kOut), Error);
}

TEST(DataplaneSaRuntime, UpdateSeqHiNeedsAnEsnSa) {
  SaRuntime t(64);
  t.install(kOut, spec(Direction::Out, "192.0.2.2", 0x100));
  EXPECT_THROW(t.update_seq_hi(kOut, 5), Error);
  SaSpec esn = spec(Direction::Out, "192.0.2.3", 0x101);
  esn.esn = true;
  t.install(kIn, esn);
  t.update_seq_hi(kIn, 5);
  EXPECT_EQ(t.counters(kIn).next_seq >> 32, 5u);
  EXPECT_THROW(t.update_seq_hi((9ull << 24) | 9, 1), Error);
}

// One IPv4 packet through outbound SA `sa`, with room around it for ESP.
esp::Reason send_one(esp::OutboundSa& sa) {
  std::vector<uint8_t> buf(256, 0);
  uint8_t* ip = buf.data() + 96;
  const uint8_t header[20] = {0x45, 0, 0, 48, 0, 0, 0, 0, 64, 17, 0, 0, 10, 1, 0, 1, 10, 2, 0, 1};
  std::memcpy(ip, header, sizeof header);
  esp::Packet p{ip, 48, 96, 112};
  return sa.encapsulate(p, 1);
}

TEST(DataplaneSaRuntime, TheSlotsHoldEveryInstalledSaDeleteRequestsComeFromAnySlotAndASlotIsReused) {
  SaRuntime t(64);
  constexpr uint64_t kHigh = (1ull << 24) | 40, kLow = (1ull << 24) | 3, kInbound = (1ull << 24) | 7;
  SaSpec one_packet = spec(Direction::Out, "192.0.2.2", 0x100);
  one_packet.life_packets.hard = 1;
  t.install(kHigh, one_packet);
  t.install(kLow, spec(Direction::Out, "192.0.2.3", 0x101));  // a lower slot after a higher one
  t.install(kInbound, spec(Direction::In, "192.0.2.1", 0x102));
  EXPECT_EQ(t.size(), 3u);
  EXPECT_TRUE(t.outbound_delete_requests().empty());
  ASSERT_EQ(send_one(*t.outbound(kHigh)), esp::Reason::Ok);
  ASSERT_EQ(send_one(*t.outbound(kLow)), esp::Reason::Ok);
  EXPECT_EQ(t.outbound_delete_requests(), std::vector<uint64_t>{kHigh}) << "its hard lifetime is used up";
  ov2_sa_key key{};
  EXPECT_TRUE(t.inbound_key_of(kInbound, &key));
  EXPECT_FALSE(t.inbound_key_of(kLow, &key)) << "outbound";
  t.remove(kHigh);
  EXPECT_TRUE(t.outbound_delete_requests().empty());
  EXPECT_EQ(t.size(), 2u);
  EXPECT_THROW(t.counters(kHigh), Error);
  constexpr uint64_t kReused = (2ull << 24) | 40;
  t.install(kReused, spec(Direction::Out, "192.0.2.4", 0x103));
  EXPECT_EQ(t.outbound(kHigh), nullptr) << "the old handle of the slot";
  ASSERT_NE(t.outbound(kReused), nullptr);
  EXPECT_EQ(t.outbound(kReused)->params().spi, 0x103u);
  EXPECT_EQ(t.counters(kReused).next_seq, 1u);
  EXPECT_EQ(t.counters(kLow).next_seq, 2u);
  EXPECT_THROW(t.update_seq_hi(kHigh, 1), Error);
  EXPECT_EQ(t.size(), 3u);
}

TEST(DataplaneSaRuntime, DestroyingTheTableFreesAndWipesTheSasStillInstalled) {
  std::string why_not;
  const esp::CryptoBackend previous = esp::crypto_backend();
  if (esp::select_crypto_backend(esp::CryptoBackend::IpsecMb, &why_not) != esp::CryptoBackend::IpsecMb)
    GTEST_SKIP() << why_not;  // the expanded keys of intel-ipsec-mb are what key_block_stats() counts
  const size_t before = key_block_stats().slots_in_use;
  {
    SaRuntime t(64);
    t.install(kOut, spec(Direction::Out, "192.0.2.2", 0x100));
    t.install(kIn, spec(Direction::In, "192.0.2.9", 0x101));
    t.install((3ull << 24) | 9, spec(Direction::Out, "192.0.2.3", 0x102));
    EXPECT_EQ(key_block_stats().slots_in_use, before + 3);
    t.remove(kOut);
    EXPECT_EQ(t.reclaim(), 0u);
    EXPECT_EQ(key_block_stats().slots_in_use, before + 2);
  }
  EXPECT_EQ(key_block_stats().slots_in_use, before);
  esp::select_crypto_backend(previous);
}

}  // namespace
}  // namespace ov2
