// The worker's SA table on its own (no root needed): handle checks, inbound
// lookup by (SPI, family, dst), and that a removed SA is freed only after every
// worker has passed a quiescent point.
#include <gtest/gtest.h>

#include <vector>

#include "common/error.h"
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

}  // namespace
}  // namespace ov2
