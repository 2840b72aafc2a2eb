// SPD rules of the control plane: ids, ordering, PROTECT references, bundles
// compiled as (OffloadHandle = transport SA, TunnelHandle = tunnel SA),
// delete-in-use refusal and --force, inbound lookup snapshot.
#include "control/control_plane.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "engine/policy_table.h"
#include "error_of.h"
#include "fake_engine.h"
#include "model/sa_json.h"
#include "policy_builder.h"

namespace ov2 {
namespace {

using test::error_of;
using test::FakeEngine;
using test::gcm_sa;
using test::policy;
using ::testing::HasSubstr;

TEST(ControlPlane, PolicyIdsAreNeverReused) {
  FakeEngine engine;
  ControlPlane plane(engine, 16);
  const uint32_t a = plane.add_policy(policy(Direction::Out, "10.0.0.0/8", "10.0.0.0/8", PolicyAction::Bypass));
  plane.delete_policies({a});
  const uint32_t b = plane.add_policy(policy(Direction::Out, "10.0.0.0/8", "10.0.0.0/8", PolicyAction::Bypass));
  EXPECT_GT(b, a);
}

TEST(ControlPlane, OutboundListIsOrderedByPriorityThenId) {
  FakeEngine engine;
  ControlPlane plane(engine, 16);
  const uint32_t late =
      plane.add_policy(policy(Direction::Out, "10.0.0.0/8", "0.0.0.0/0", PolicyAction::Bypass, 0, 50));
  const uint32_t first =
      plane.add_policy(policy(Direction::Out, "10.0.0.0/8", "10.0.0.0/8", PolicyAction::Discard, 0, 10));
  const uint32_t tie =
      plane.add_policy(policy(Direction::Out, "10.1.0.0/16", "0.0.0.0/0", PolicyAction::Bypass, 0, 50));
  plane.add_policy(policy(Direction::In, "10.0.0.0/8", "0.0.0.0/0", PolicyAction::Bypass));
  ASSERT_EQ(engine.outbound.size(), 3u);
  EXPECT_EQ(engine.outbound[0].id, first);
  EXPECT_EQ(engine.outbound[1].id, late);
  EXPECT_EQ(engine.outbound[2].id, tie);
  EXPECT_EQ(engine.inbound.size(), 1u);
}

TEST(ControlPlane, ProtectNeedsExistingSaOfSameDirection) {
  FakeEngine engine;
  ControlPlane plane(engine, 16);
  EXPECT_THAT(error_of([&] {
                plane.add_policy(policy(Direction::Out, "10.0.0.0/8", "10.0.0.0/8", PolicyAction::Protect, 0x5000001));
              }),
              HasSubstr("--sa 0x5000001: no SA has this handle"));
  const uint64_t in = plane.add_sa(gcm_sa(Direction::In, Mode::Tunnel, "10.0.0.1", "10.0.0.2", 0x1000));
  EXPECT_THAT(error_of([&] {
                plane.add_policy(policy(Direction::Out, "10.0.0.0/8", "10.0.0.0/8", PolicyAction::Protect, in));
              }),
              HasSubstr("is an inbound SA; an outbound policy needs an outbound SA"));
  EXPECT_TRUE(plane.spd().list().empty());
}

TEST(ControlPlane, BundlePolicyCompilesToTransportOffloadAndTunnelHandles) {
  FakeEngine engine;
  ControlPlane plane(engine, 16);
  const uint64_t inner = plane.add_sa(gcm_sa(Direction::Out, Mode::Transport, "10.0.0.1", "10.0.0.2", 0x1000));
  auto outer_spec = gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x2000);
  outer_spec.inner_handle = inner;
  const uint64_t outer = plane.add_sa(outer_spec);
  EXPECT_THAT(error_of([&] {
                plane.add_policy(policy(Direction::Out, "10.0.0.1/32", "10.0.0.2/32", PolicyAction::Protect, inner));
              }),
              HasSubstr("name the bundle's tunnel SA"));
  plane.add_policy(policy(Direction::Out, "10.0.0.1/32", "10.0.0.2/32", PolicyAction::Protect, outer));
  ASSERT_EQ(engine.outbound.size(), 1u);
  EXPECT_EQ(engine.outbound[0].offload_handle, inner);
  EXPECT_EQ(engine.outbound[0].tunnel_handle, outer);

  const uint64_t plain = plane.add_sa(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.9", 0x2001));
  plane.add_policy(policy(Direction::Out, "10.0.0.1/32", "10.0.0.9/32", PolicyAction::Protect, plain));
  EXPECT_EQ(engine.outbound[1].offload_handle, plain);
  EXPECT_EQ(engine.outbound[1].tunnel_handle, 0u);
}

TEST(ControlPlane, AnSaThatAPolicyUsesDirectlyCannotBecomeABundlesInnerSa) {
  FakeEngine engine;
  ControlPlane plane(engine, 16);
  const uint64_t transport = plane.add_sa(gcm_sa(Direction::Out, Mode::Transport, "10.0.0.1", "10.0.0.2", 0x1000));
  const uint32_t id =
      plane.add_policy(policy(Direction::Out, "10.0.0.1/32", "10.0.0.2/32", PolicyAction::Protect, transport));
  auto outer = gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x2000);
  outer.inner_handle = transport;
  EXPECT_THAT(error_of([&] { plane.add_sa(outer); }), HasSubstr("is used directly by policy " + std::to_string(id)));
  EXPECT_EQ(plane.sas().size(), 1u);
}

TEST(ControlPlane, DeletingAnSaInUseIsRefusedNamingThePolicyUnlessForced) {
  FakeEngine engine;
  ControlPlane plane(engine, 16);
  const uint64_t sa = plane.add_sa(gcm_sa(Direction::Out, Mode::Tunnel, "10.0.0.1", "10.0.0.2", 0x1000));
  const uint32_t id = plane.add_policy(policy(Direction::Out, "10.1.0.0/16", "10.2.0.0/16", PolicyAction::Protect, sa));
  const std::string msg = error_of([&] { plane.delete_sas({sa}, false); });
  EXPECT_THAT(msg, HasSubstr("is used by policy " + std::to_string(id)));
  EXPECT_THAT(msg, HasSubstr("--force"));
  EXPECT_NE(plane.sas().find(sa), nullptr);
  EXPECT_EQ(engine.outbound.size(), 1u);

  const auto result = plane.delete_sas({sa}, true);
  EXPECT_EQ(result.deleted_sas, std::vector<uint64_t>{sa});
  EXPECT_EQ(result.deleted_policies, std::vector<uint32_t>{id});
  EXPECT_TRUE(engine.outbound.empty());  // SPD replaced before the SA went
  EXPECT_EQ(plane.sas().find(sa), nullptr);
  EXPECT_EQ(plane.spd().find(id), nullptr);
}

TEST(ControlPlane, SpdCompileFailureLeavesThePolicyOut) {
  FakeEngine engine;
  ControlPlane plane(engine, 16);
  engine.fail_next_spd = true;
  EXPECT_THAT(
      error_of([&] { plane.add_policy(policy(Direction::Out, "10.0.0.0/8", "10.0.0.0/8", PolicyAction::Bypass)); }),
      HasSubstr("injected SPD failure"));
  EXPECT_TRUE(plane.spd().list().empty());
}

TEST(ControlPlane, DeletePoliciesIsAllOrNothing) {
  FakeEngine engine;
  ControlPlane plane(engine, 16);
  const uint32_t a = plane.add_policy(policy(Direction::Out, "10.0.0.0/8", "10.0.0.0/8", PolicyAction::Bypass));
  EXPECT_THAT(error_of([&] { plane.delete_policies({a, 999}); }), HasSubstr("no policy has id 999"));
  EXPECT_NE(plane.spd().find(a), nullptr);
  plane.delete_policies({a});
  EXPECT_EQ(plane.spd().find(a), nullptr);
}

TEST(ControlPlane, IdenticalPolicyIsRefused) {
  FakeEngine engine;
  ControlPlane plane(engine, 16);
  plane.add_policy(policy(Direction::Out, "10.0.0.0/8", "10.0.0.0/8", PolicyAction::Bypass));
  EXPECT_THAT(
      error_of([&] { plane.add_policy(policy(Direction::Out, "10.0.0.0/8", "10.0.0.0/8", PolicyAction::Bypass)); }),
      HasSubstr("identical policy exists already (id 1)"));
}

TEST(PolicyTable, InboundLookupReturnsTheFirstMatchInPriorityOrder) {
  FakeEngine engine;
  ControlPlane plane(engine, 16);
  const uint64_t sa = plane.add_sa(gcm_sa(Direction::In, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x1000));
  auto tcp = policy(Direction::In, "10.1.0.0/16", "10.2.0.0/16", PolicyAction::Protect, sa, 10);
  tcp.proto = 6;
  tcp.dport = PortRange{443, 443};
  const uint32_t https = plane.add_policy(tcp);
  const uint32_t rest =
      plane.add_policy(policy(Direction::In, "10.0.0.0/8", "10.0.0.0/8", PolicyAction::Discard, 0, 20));
  PolicyTable table;
  table.ordered = engine.inbound;

  PacketSelector s{IpAddr::parse("10.1.2.3"), IpAddr::parse("10.2.3.4"), 6, 40000, 443};
  ASSERT_NE(table.lookup(s), nullptr);
  EXPECT_EQ(table.lookup(s)->id, https);
  EXPECT_EQ(table.lookup(s)->offload_handle, sa);
  s.dport = 80;
  EXPECT_EQ(table.lookup(s)->id, rest);
  s.dst = IpAddr::parse("192.168.0.1");
  EXPECT_EQ(table.lookup(s), nullptr);
}

TEST(ControlPlane, PolicyUpdateSwitchesTheSaInOneSpdReplacementKeepingIdAndPlace) {
  FakeEngine engine;
  ControlPlane plane(engine, 16);
  const uint64_t old_sa = plane.add_sa(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x1000));
  const uint64_t new_sa = plane.add_sa(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x1001));
  const uint32_t first =
      plane.add_policy(policy(Direction::Out, "10.1.0.0/16", "10.2.0.0/16", PolicyAction::Protect, old_sa, 10));
  const uint32_t second =
      plane.add_policy(policy(Direction::Out, "10.1.0.0/16", "10.2.0.0/16", PolicyAction::Bypass, 0, 10));
  struct Recorder : ControlPlane::Listener {
    std::vector<ChangeEvent> seen;
    void on_change(const ChangeEvent& e) override { seen.push_back(e); }
  } rec;
  plane.add_listener(&rec);

  plane.update_policy_sa(first, new_sa);
  ASSERT_EQ(engine.outbound.size(), 2u);    // one replacement: both policies still there
  EXPECT_EQ(engine.outbound[0].id, first);  // same id, still ahead of the equal-priority bypass
  EXPECT_EQ(engine.outbound[0].offload_handle, new_sa);
  EXPECT_EQ(engine.outbound[1].id, second);
  EXPECT_EQ(plane.spd().find(first)->spec.sa_handle, new_sa);
  ASSERT_EQ(rec.seen.size(), 1u);
  EXPECT_EQ(rec.seen[0].kind, ChangeKind::PolicyUpdated);
  EXPECT_EQ(rec.seen[0].policy_id, first);
  // The old SA is free now: it deletes without --force and takes no policy with it.
  EXPECT_TRUE(plane.delete_sas({old_sa}, false).deleted_policies.empty());
}

TEST(ControlPlane, PolicyUpdateRefusalsChangeNothing) {
  FakeEngine engine;
  ControlPlane plane(engine, 16);
  const uint64_t sa = plane.add_sa(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x1000));
  const uint64_t in = plane.add_sa(gcm_sa(Direction::In, Mode::Tunnel, "192.0.2.2", "192.0.2.1", 0x2000));
  const uint64_t other = plane.add_sa(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x1001));
  const uint32_t id = plane.add_policy(policy(Direction::Out, "10.1.0.0/16", "10.2.0.0/16", PolicyAction::Protect, sa));
  const uint32_t bypass = plane.add_policy(policy(Direction::Out, "10.9.0.0/16", "10.2.0.0/16", PolicyAction::Bypass));
  const auto before = engine.outbound;
  EXPECT_THAT(error_of([&] { plane.update_policy_sa(99, other); }), HasSubstr("no policy has id 99"));
  EXPECT_THAT(error_of([&] { plane.update_policy_sa(bypass, other); }), HasSubstr("only a protect policy names an SA"));
  EXPECT_THAT(error_of([&] { plane.update_policy_sa(id, 0x7000001); }), HasSubstr("no SA has this handle"));
  EXPECT_THAT(error_of([&] { plane.update_policy_sa(id, in); }), HasSubstr("is an inbound SA"));
  engine.fail_next_spd = true;
  EXPECT_FALSE(error_of([&] { plane.update_policy_sa(id, other); }).empty());
  EXPECT_EQ(plane.spd().find(id)->spec.sa_handle, sa);  // the engine refused: the record is unchanged
  ASSERT_EQ(engine.outbound.size(), before.size());
  EXPECT_EQ(engine.outbound[0].offload_handle, sa);
}

}  // namespace
}  // namespace ov2

namespace ov2 {
namespace {

using test::FakeEngine;
using test::gcm_sa;

struct ChangeRecorder : ControlPlane::Listener {
  std::vector<ChangeEvent> seen;
  void on_change(const ChangeEvent& e) override { seen.push_back(e); }
};

std::vector<SaSpec> inbound_specs(uint32_t first_spi, size_t n) {
  std::vector<SaSpec> specs;
  for (size_t i = 0; i < n; ++i)
    specs.push_back(
        gcm_sa(Direction::In, Mode::Tunnel, "192.0.2.2", "192.0.2.1", first_spi + static_cast<uint32_t>(i)));
  return specs;
}

TEST(ControlPlane, ABatchOfAddsIsOneEngineBatchCommittedAfterTheLastAdd) {
  FakeEngine engine;
  ControlPlane plane(engine, 16);
  const std::vector<uint64_t> handles = plane.add_sas(inbound_specs(0x100, 3));
  ASSERT_EQ(handles.size(), 3u);
  EXPECT_EQ(engine.add_calls, handles);
  EXPECT_EQ(engine.batch_events, (std::vector<std::string>{"begin 3", "commit", "abort"}));  // abort: a no-op
  EXPECT_EQ(plane.sas().size(), 3u);
}

TEST(ControlPlane, ABatchWhoseEngineWriteFailsAtTheEndTakesEveryAddBack) {
  FakeEngine engine;
  ControlPlane plane(engine, 16);
  const uint64_t kept = plane.add_sa(gcm_sa(Direction::In, Mode::Tunnel, "192.0.2.2", "192.0.2.1", 0x5000));
  ChangeRecorder rec;
  plane.add_listener(&rec);
  engine.fail_next_commit = true;
  size_t failed = 99;
  const std::string error = test::error_of([&] { plane.add_sas(inbound_specs(0x100, 4), &failed); });
  EXPECT_THAT(error, ::testing::HasSubstr("injected batch write failure"));
  EXPECT_EQ(failed, 4u);  // the write at the end, not one of the specs
  ASSERT_EQ(plane.sas().size(), 1u);
  EXPECT_NE(plane.sas().find(kept), nullptr);
  EXPECT_EQ(engine.installed.size(), 1u);
  EXPECT_EQ(engine.delete_calls.size(), 4u);
  // The listeners (the journal) saw the four adds and their four deletes.
  ASSERT_EQ(rec.seen.size(), 8u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(rec.seen[i].kind, ChangeKind::SaAdded);
  for (size_t i = 4; i < 8; ++i) EXPECT_EQ(rec.seen[i].kind, ChangeKind::SaDeleted);
  // A refused spec in the middle: the ones before are taken back, the batch aborted, its index reported.
  engine.batch_events.clear();
  std::vector<SaSpec> specs = inbound_specs(0x200, 3);
  specs.push_back(gcm_sa(Direction::In, Mode::Tunnel, "192.0.2.2", "192.0.2.1", 0x5000));  // kept's SPI and dst
  EXPECT_NE(test::error_of([&] { plane.add_sas(std::move(specs), &failed); }), "");
  EXPECT_EQ(failed, 3u);
  EXPECT_EQ(plane.sas().size(), 1u);
  EXPECT_EQ(engine.batch_events.front(), "begin 4");
  EXPECT_EQ(engine.batch_events[1], "abort");
}

}  // namespace
}  // namespace ov2
