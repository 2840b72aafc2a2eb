// The SA database: ADD_SA all-or-nothing, handle uniqueness and non-reuse,
// duplicates, bundles, DELETE_SA lists, UPDATE_SA semantics.
#include "control/sa_database.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "error_of.h"
#include "fake_engine.h"
#include "model/sa_json.h"

namespace ov2 {
namespace {

using test::error_of;
using test::FakeEngine;
using test::gcm_sa;
using ::testing::HasSubstr;

TEST(SaDatabase, AddReturnsNonZeroHandleAndInstallsInEngine) {
  FakeEngine engine;
  SaDatabase db(engine, 16);
  const uint64_t h = db.add(gcm_sa(Direction::In, Mode::Tunnel, "10.0.0.1", "10.0.0.2", 0x1000));
  EXPECT_NE(h, 0u);
  ASSERT_EQ(engine.installed.count(h), 1u);
  EXPECT_EQ(engine.installed[h].spi, 0x1000u);
  ASSERT_NE(db.find(h), nullptr);
  EXPECT_EQ(db.size(), 1u);
}

TEST(SaDatabase, EngineFailureLeavesNothingBehind) {
  FakeEngine engine;
  SaDatabase db(engine, 16);
  engine.fail_next_add = true;
  ErrorCode code{};
  EXPECT_THAT(error_of([&] { db.add(gcm_sa(Direction::In, Mode::Tunnel, "10.0.0.1", "10.0.0.2", 0x1000)); }, &code),
              HasSubstr("injected engine failure"));
  EXPECT_EQ(code, ErrorCode::Kernel);
  EXPECT_EQ(db.size(), 0u);
  EXPECT_TRUE(engine.installed.empty());
  // The same SA can be added afterwards: no leftover duplicate key.
  EXPECT_NE(db.add(gcm_sa(Direction::In, Mode::Tunnel, "10.0.0.1", "10.0.0.2", 0x1000)), 0u);
}

TEST(SaDatabase, InvalidSaIsRejectedBeforeTheEngineSeesIt) {
  FakeEngine engine;
  SaDatabase db(engine, 16);
  EXPECT_THAT(error_of([&] { db.add(gcm_sa(Direction::In, Mode::Tunnel, "10.0.0.1", "10.0.0.2", 5)); }),
              HasSubstr("SPI 5 is in the range 1-255"));
  EXPECT_TRUE(engine.add_calls.empty());
}

TEST(SaDatabase, HandlesAreUniqueAndNeverReusedEvenWhenSlotsAre) {
  FakeEngine engine;
  SaDatabase db(engine, 2);
  std::set<uint64_t> seen;
  for (uint32_t i = 0; i < 50; ++i) {
    const uint64_t h = db.add(gcm_sa(Direction::Out, Mode::Tunnel, "10.0.0.1", "10.0.0.2", 0x1000 + i));
    EXPECT_TRUE(seen.insert(h).second) << "handle reused: " << h;
    EXPECT_LT(handle_slot(h), 2u);  // slots are reused, handles are not
    db.remove({h});
  }
}

TEST(SaDatabase, DuplicateSpiDstDirIsExistsButOtherDirectionIsFine) {
  FakeEngine engine;
  SaDatabase db(engine, 16);
  const uint64_t h = db.add(gcm_sa(Direction::In, Mode::Tunnel, "10.0.0.1", "10.0.0.2", 0x1000));
  ErrorCode code{};
  const std::string msg =
      error_of([&] { db.add(gcm_sa(Direction::In, Mode::Transport, "10.0.0.9", "10.0.0.2", 0x1000)); }, &code);
  EXPECT_EQ(code, ErrorCode::Exists);
  EXPECT_THAT(msg, HasSubstr("exists already"));
  EXPECT_THAT(msg, HasSubstr("SPI 0x1000"));
  EXPECT_THAT(msg, HasSubstr("handle " + handle_to_string(h)));
  EXPECT_EQ(db.size(), 1u);
  EXPECT_NE(db.add(gcm_sa(Direction::Out, Mode::Tunnel, "10.0.0.1", "10.0.0.2", 0x1000)), h);
  EXPECT_NE(db.add(gcm_sa(Direction::In, Mode::Tunnel, "10.0.0.1", "10.0.0.3", 0x1000)), 0u);
}

TEST(SaDatabase, TheDuplicateCheckFindsEachKeyAmongThousandsAndFreesItWithItsSa) {
  FakeEngine engine;
  SaDatabase db(engine, 8192);
  auto sa = [](uint32_t i) {
    const Direction dir = i % 2 ? Direction::In : Direction::Out;
    const std::string dst = i % 3 ? "10." + std::to_string(i % 8) + ".0.2" : "2001:db8::" + std::to_string(i % 8);
    const std::string src = i % 3 ? "10.9.9.9" : "2001:db8::99";
    return gcm_sa(dir, Mode::Tunnel, src.c_str(), dst.c_str(), 0x1000 + i / 8);
  };
  std::vector<uint64_t> handles;
  for (uint32_t i = 0; i < 4000; ++i) handles.push_back(db.add(sa(i)));
  // Same SPI, dst and dir as SA i, another mode and source: refused, naming SA i.
  auto duplicate_of = [&](uint32_t i) {
    SaSpec d = sa(i);
    d.mode = Mode::Transport;
    d.src = IpAddr::any(d.dst.family);
    ErrorCode code{};
    const std::string msg = error_of([&] { db.add(std::move(d)); }, &code);
    return code == ErrorCode::Exists && msg.find("handle " + handle_to_string(handles[i]) + ")") != std::string::npos;
  };
  for (uint32_t i = 0; i < 4000; i += 7) EXPECT_TRUE(duplicate_of(i)) << i;
  std::vector<uint64_t> doomed;
  for (uint32_t i = 0; i < 4000; i += 2) doomed.push_back(handles[i]);
  db.remove(doomed);
  for (uint32_t i = 1; i < 4000; i += 14) EXPECT_TRUE(duplicate_of(i)) << "kept: " << i;
  for (uint32_t i = 0; i < 4000; i += 14) handles[i] = db.add(sa(i));  // its key is free again
  for (uint32_t i = 0; i < 4000; i += 14) EXPECT_TRUE(duplicate_of(i)) << "added again: " << i;
  EXPECT_EQ(db.size(), 2000u + (4000 + 13) / 14);
}

TEST(SaDatabase, CapacityIsEnforcedWithResourceExhausted) {
  FakeEngine engine;
  SaDatabase db(engine, 1);
  db.add(gcm_sa(Direction::In, Mode::Tunnel, "10.0.0.1", "10.0.0.2", 0x1000));
  ErrorCode code{};
  EXPECT_THAT(error_of([&] { db.add(gcm_sa(Direction::In, Mode::Tunnel, "10.0.0.1", "10.0.0.2", 0x1001)); }, &code),
              HasSubstr("full"));
  EXPECT_EQ(code, ErrorCode::ResourceExhausted);
}

TEST(SaDatabase, BundleNeedsExistingTransportSaOfSameDirection) {
  FakeEngine engine;
  SaDatabase db(engine, 16);
  auto outer = gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x2000);
  outer.inner_handle = 0x12345;
  EXPECT_THAT(error_of([&] { db.add(outer); }), HasSubstr("no SA has this handle"));

  const uint64_t tunnel = db.add(gcm_sa(Direction::Out, Mode::Tunnel, "10.0.0.1", "10.0.0.2", 0x3000));
  outer.inner_handle = tunnel;
  EXPECT_THAT(error_of([&] { db.add(outer); }), HasSubstr("must be a transport-mode SA"));

  const uint64_t inbound = db.add(gcm_sa(Direction::In, Mode::Transport, "10.0.0.1", "10.0.0.2", 0x3001));
  outer.inner_handle = inbound;
  EXPECT_THAT(error_of([&] { db.add(outer); }), HasSubstr("same direction"));

  auto udp_inner = gcm_sa(Direction::Out, Mode::Transport, "10.0.0.1", "10.0.0.2", 0x3002);
  udp_inner.udp_encap = true;
  outer.inner_handle = db.add(udp_inner);
  EXPECT_THAT(error_of([&] { db.add(outer); }), HasSubstr("cannot (put --encap udp on the tunnel SA"));

  // IPv6 inner inside an IPv4 tunnel: families may differ.
  const uint64_t inner = db.add(gcm_sa(Direction::Out, Mode::Transport, "2001:db8::1", "2001:db8::2", 0x3003));
  outer.inner_handle = inner;
  const uint64_t bundle = db.add(outer);
  EXPECT_EQ(db.find(inner)->bundled_in, bundle);
  EXPECT_EQ(engine.installed.at(bundle).inner_handle, inner);

  auto second = gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.3", 0x2001);
  second.inner_handle = inner;
  EXPECT_THAT(error_of([&] { db.add(second); }), HasSubstr("already inside the bundle of SA"));
}

TEST(SaDatabase, InnerSaCannotBeDeletedAloneButWithItsTunnelItCan) {
  FakeEngine engine;
  SaDatabase db(engine, 16);
  const uint64_t inner = db.add(gcm_sa(Direction::In, Mode::Transport, "10.0.0.1", "10.0.0.2", 0x3000));
  auto outer_spec = gcm_sa(Direction::In, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x2000);
  outer_spec.inner_handle = inner;
  const uint64_t outer = db.add(outer_spec);

  EXPECT_THAT(error_of([&] { db.remove({inner}); }), HasSubstr("is the inner SA of the bundle"));
  EXPECT_EQ(db.size(), 2u);

  db.remove({inner, outer});
  EXPECT_EQ(db.size(), 0u);
  // Tunnel first, then its inner SA.
  ASSERT_EQ(engine.delete_calls.size(), 2u);
  EXPECT_EQ(engine.delete_calls[0], outer);
  EXPECT_EQ(engine.delete_calls[1], inner);
}

TEST(SaDatabase, DeletingTheTunnelFreesTheInnerSa) {
  FakeEngine engine;
  SaDatabase db(engine, 16);
  const uint64_t inner = db.add(gcm_sa(Direction::In, Mode::Transport, "10.0.0.1", "10.0.0.2", 0x3000));
  auto outer_spec = gcm_sa(Direction::In, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x2000);
  outer_spec.inner_handle = inner;
  db.remove({db.add(outer_spec)});
  EXPECT_EQ(db.find(inner)->bundled_in, 0u);
  db.remove({inner});
  EXPECT_EQ(db.size(), 0u);
}

TEST(SaDatabase, DeleteListIsAllOrNothingAndNamesTheUnknownHandle) {
  FakeEngine engine;
  SaDatabase db(engine, 16);
  const uint64_t a = db.add(gcm_sa(Direction::In, Mode::Tunnel, "10.0.0.1", "10.0.0.2", 0x1000));
  const uint64_t b = db.add(gcm_sa(Direction::In, Mode::Tunnel, "10.0.0.1", "10.0.0.2", 0x1001));
  ErrorCode code{};
  EXPECT_THAT(error_of([&] { db.remove({a, 0xdead000001, b}); }, &code), HasSubstr("0xdead000001"));
  EXPECT_EQ(code, ErrorCode::NotFound);
  EXPECT_EQ(db.size(), 2u);
  EXPECT_TRUE(engine.delete_calls.empty());
  db.remove({a, b, a});  // duplicates in the list are harmless
  EXPECT_EQ(db.size(), 0u);
  EXPECT_EQ(engine.delete_calls.size(), 2u);
}

TEST(SaDatabase, UpdateSetsSeqHiOnlyForKnownEsnSas) {
  FakeEngine engine;
  SaDatabase db(engine, 16);
  auto esn = gcm_sa(Direction::Out, Mode::Tunnel, "10.0.0.1", "10.0.0.2", 0x1000);
  esn.esn = true;
  const uint64_t h = db.add(esn);
  db.update_seq_hi(h, 7);
  EXPECT_EQ(db.find(h)->spec.seq_hi, 7u);
  EXPECT_EQ(engine.installed.at(h).seq_hi, 7u);

  ErrorCode code{};
  EXPECT_THAT(error_of([&] { db.update_seq_hi(0x99000000, 1); }, &code), HasSubstr("invalid parameter"));
  EXPECT_EQ(code, ErrorCode::InvalidArgument);
  const uint64_t plain = db.add(gcm_sa(Direction::Out, Mode::Tunnel, "10.0.0.1", "10.0.0.2", 0x1001));
  EXPECT_THAT(error_of([&] { db.update_seq_hi(plain, 1); }, &code), HasSubstr("without --esn"));
  EXPECT_EQ(code, ErrorCode::InvalidArgument);
}

TEST(SaDatabase, DeletedSaKeysAreWiped) {
  FakeEngine engine;
  const size_t before = key_arena_stats().slots_in_use;
  {
    SaDatabase db(engine, 16);
    const uint64_t h = db.add(gcm_sa(Direction::In, Mode::Tunnel, "10.0.0.1", "10.0.0.2", 0x1000));
    engine.installed.clear();  // the fake's copies
    EXPECT_GT(key_arena_stats().slots_in_use, before);
    db.remove({h});
  }
  EXPECT_EQ(key_arena_stats().slots_in_use, before);
}

}  // namespace
}  // namespace ov2
