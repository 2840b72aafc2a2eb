// Observability without BPF: the ControlPlane change listener, the monitor
// event stream of the control server (publish, bounded queues, events-lost),
// the stats/monitor ops, the Prometheus text, and the SaDeleteReq handling
// (matching SA, coalescing, notify) over a FakeEngine.
#include "control/observability.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "control/control_client.h"
#include "control/control_plane.h"
#include "control/control_server.h"
#include "control/event_bus.h"
#include "control/request_handler.h"
#include "control/stats_report.h"
#include "fake_engine.h"
#include "model/sa_json.h"
#include "policy_builder.h"

namespace ov2 {
namespace {

using nlohmann::json;
using test::FakeEngine;
using test::gcm_sa;
using test::protect;
using ::testing::HasSubstr;

struct Recorder : ControlPlane::Listener {
  std::vector<ChangeEvent> seen;
  void on_change(const ChangeEvent& e) override { seen.push_back(e); }
};

TEST(ControlPlaneListener, ReportsEachSuccessfulChangeInOrderAndNothingForFailures) {
  FakeEngine engine;
  ControlPlane plane(engine, 16);
  Recorder rec;
  plane.add_listener(&rec);
  plane.add_listener(&rec);  // twice: still told once
  const uint64_t sa = plane.add_sa(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x1000));
  const uint32_t id = plane.add_policy(protect(Direction::Out, "10.1.0.0/24", "10.2.0.0/24", sa));
  EXPECT_THROW(plane.delete_sas({sa}, false), Error);  // used by a policy: refused, no event
  EXPECT_THROW(plane.add_sa(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x1000)), Error);
  plane.delete_sas({sa}, true, ChangeCause::SaDeleteReq);
  ASSERT_EQ(rec.seen.size(), 4u);
  EXPECT_EQ(rec.seen[0].kind, ChangeKind::SaAdded);
  EXPECT_EQ(rec.seen[0].sa_handle, sa);
  EXPECT_EQ(rec.seen[1].kind, ChangeKind::PolicyAdded);
  EXPECT_EQ(rec.seen[1].policy_id, id);
  EXPECT_EQ(rec.seen[2].kind, ChangeKind::PolicyDeleted);  // --force: the policy goes first
  EXPECT_EQ(rec.seen[2].cause, ChangeCause::SaDeleteReq);
  EXPECT_EQ(rec.seen[3].kind, ChangeKind::SaDeleted);
  EXPECT_EQ(rec.seen[3].cause, ChangeCause::SaDeleteReq);
  EXPECT_STREQ(change_kind_name(rec.seen[3].kind), "sa-deleted");
  EXPECT_STREQ(change_cause_name(rec.seen[3].cause), "sa-delete-req");
  plane.remove_listener(&rec);
  plane.add_sa(gcm_sa(Direction::In, Mode::Tunnel, "192.0.2.2", "192.0.2.1", 0x2000));
  EXPECT_EQ(rec.seen.size(), 4u);
}

TEST(EventBus, SaEventsNameDirSpiAndModeAlsoForDeletedAndRestoredSas) {
  FakeEngine engine;
  ControlPlane plane(engine, 16);
  std::vector<SaRecord> saved(1);
  saved[0].handle = (uint64_t{1} << kHandleSlotBits) | 3;
  saved[0].spec = gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x1111);
  plane.restore(std::move(saved), {}, 2, 1, [] {});  // restored: no sa-added event
  EventBus bus;
  std::vector<json> events;
  bus.set_sink([&](const json& e) { events.push_back(e); });
  plane.add_listener(&bus);
  const uint64_t in = plane.add_sa(gcm_sa(Direction::In, Mode::Transport, "192.0.2.2", "192.0.2.1", 0x2222));
  plane.delete_sas({in, (uint64_t{1} << kHandleSlotBits) | 3}, false);
  ASSERT_EQ(events.size(), 3u);
  auto named = [](const json& e) {
    return e.at("event").get<std::string>() + " " + e.at("handle").get<std::string>() + " " +
           e.at("dir").get<std::string>() + " " + e.at("spi").get<std::string>() + " " +
           e.at("mode").get<std::string>();
  };
  EXPECT_EQ(named(events[0]), "sa-added " + handle_to_string(in) + " in 0x2222 transport");
  EXPECT_EQ(named(events[1]), "sa-deleted 0x1000003 out 0x1111 tunnel");  // handle order
  EXPECT_EQ(named(events[2]), "sa-deleted " + handle_to_string(in) + " in 0x2222 transport");
  plane.remove_listener(&bus);
}

// Observability over a FakeEngine (no data plane, no BPF), events collected from its bus.
struct DeleteReqFixture : ::testing::Test {
  FakeEngine engine;
  ControlPlane plane{engine, 64};
  std::unique_ptr<Observability> obs;
  std::vector<json> events;
  void make(bool delete_on_request) {
    ObservabilityOptions o;
    o.delete_on_request = delete_on_request;
    obs = std::make_unique<Observability>(plane, nullptr, -1, o);
    obs->bus().set_sink([this](const json& e) { events.push_back(e); });
  }
  std::vector<std::string> kinds() const {
    std::vector<std::string> out;
    for (const auto& e : events) out.push_back(e.at("event").get<std::string>());
    return out;
  }
};

TEST_F(DeleteReqFixture, DeletesTheInboundSaAndTheNewestOutboundSaWithSwappedEndpoints) {
  make(true);
  const uint64_t in = plane.add_sa(gcm_sa(Direction::In, Mode::Tunnel, "192.0.2.2", "192.0.2.1", 0x2001));
  const uint64_t old_out = plane.add_sa(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x1001));
  const uint64_t new_out = plane.add_sa(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x1002));
  const uint64_t other_peer = plane.add_sa(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.9", 0x1003));
  const uint64_t transport = plane.add_sa(gcm_sa(Direction::Out, Mode::Transport, "192.0.2.1", "192.0.2.2", 0x1004));
  const uint32_t pin = plane.add_policy(protect(Direction::In, "10.2.0.0/24", "10.1.0.0/24", in));
  events.clear();

  obs->handle_delete_request(in, ChangeCause::SaDeleteReq, "verdict");
  obs->handle_delete_request(in, ChangeCause::SaDeleteReq, "verdict");  // duplicate: coalesced

  EXPECT_EQ(plane.sas().find(in), nullptr);
  EXPECT_EQ(plane.sas().find(new_out), nullptr);
  EXPECT_NE(plane.sas().find(old_out), nullptr);
  EXPECT_NE(plane.sas().find(other_peer), nullptr);
  EXPECT_NE(plane.sas().find(transport), nullptr);  // other mode
  EXPECT_EQ(plane.spd().find(pin), nullptr);
  EXPECT_THAT(kinds(), ::testing::ElementsAre("sa-delete-req", "policy-deleted", "sa-deleted", "sa-deleted"));
  EXPECT_EQ(events[0].at("handle"), handle_to_string(in));
  EXPECT_EQ(events[0].at("matching"), handle_to_string(new_out));
  EXPECT_EQ(events[0].at("action"), "delete");
  EXPECT_EQ(events[0].at("policies"), json::array({pin}));
  EXPECT_EQ(events[1].at("reason"), "sa-delete-req");
  EXPECT_EQ(events[2].at("reason"), "sa-delete-req");
  EXPECT_EQ(events[2].at("dir"), "in");  // described although gone
}

TEST_F(DeleteReqFixture, OutboundExhaustionDeletesItsInboundTwinWithReasonExpired) {
  make(true);
  const uint64_t out = plane.add_sa(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x1001));
  const uint64_t in = plane.add_sa(gcm_sa(Direction::In, Mode::Tunnel, "192.0.2.2", "192.0.2.1", 0x2001));
  events.clear();
  obs->handle_delete_request(out, ChangeCause::Expired, "outbound-exhausted");
  EXPECT_EQ(plane.sas().size(), 0u);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].at("matching"), handle_to_string(in));
  EXPECT_EQ(events[1].at("reason"), "expired");
}

TEST_F(DeleteReqFixture, WithoutAMatchOnlyTheRequestingSaGoes) {
  make(true);
  const uint64_t in = plane.add_sa(gcm_sa(Direction::In, Mode::Tunnel, "192.0.2.2", "192.0.2.1", 0x2001));
  const uint64_t unrelated = plane.add_sa(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.7", 0x1001));
  events.clear();
  obs->handle_delete_request(in, ChangeCause::SaDeleteReq, "verdict");
  EXPECT_EQ(plane.sas().find(in), nullptr);
  EXPECT_NE(plane.sas().find(unrelated), nullptr);
  EXPECT_FALSE(events.at(0).contains("matching"));
}

TEST_F(DeleteReqFixture, NotifyPolicyRaisesTheEventOnceAndDeletesNothing) {
  make(false);
  const uint64_t in = plane.add_sa(gcm_sa(Direction::In, Mode::Tunnel, "192.0.2.2", "192.0.2.1", 0x2001));
  plane.add_sa(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x1001));
  events.clear();
  for (int i = 0; i < 5; ++i) obs->handle_delete_request(in, ChangeCause::SaDeleteReq, "verdict");
  EXPECT_EQ(plane.sas().size(), 2u);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].at("action"), "notify");
  EXPECT_FALSE(events[0].contains("policies"));
}

// The NIC engine's kernel SA events (decoded from XFRM expire/delete
// notifications, tests/xfrm/kernel_events_test.cpp) as the daemon hands them over.
TEST_F(DeleteReqFixture, KernelSoftExpireRaisesSoftExpiredAndDeletesNothing) {
  make(true);
  const uint64_t out = plane.add_sa(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x1001));
  events.clear();
  obs->on_kernel_sa_event({out, KernelSaEvent::Kind::SoftExpire, "packets", 1000, 150000});
  EXPECT_EQ(plane.sas().size(), 1u);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].at("event"), "soft-expired");
  EXPECT_EQ(events[0].at("handle"), handle_to_string(out));
  EXPECT_EQ(events[0].at("dir"), "out");
  EXPECT_EQ(events[0].at("spi"), handle_to_string(0x1001));
  EXPECT_EQ(events[0].at("limit"), "packets");
  EXPECT_EQ(events[0].at("packets"), 1000);
  EXPECT_EQ(events[0].at("bytes"), 150000);
  EXPECT_EQ(events[0].at("source"), "kernel");
}

TEST_F(DeleteReqFixture, KernelHardExpireDeletesTheSaItsTwinAndPoliciesLikeTheWorkersHardExpiry) {
  make(true);
  const uint64_t out = plane.add_sa(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x1001));
  const uint64_t in = plane.add_sa(gcm_sa(Direction::In, Mode::Tunnel, "192.0.2.2", "192.0.2.1", 0x2001));
  const uint32_t pol = plane.add_policy(protect(Direction::Out, "10.1.0.0/24", "10.2.0.0/24", out));
  events.clear();
  obs->on_kernel_sa_event({out, KernelSaEvent::Kind::HardExpire, "seconds", 5, 500});
  obs->on_kernel_sa_event({out, KernelSaEvent::Kind::HardExpire, "seconds", 5, 500});  // again: nothing more
  EXPECT_EQ(plane.sas().size(), 0u);
  EXPECT_EQ(plane.spd().find(pol), nullptr);
  EXPECT_THAT(kinds(), ::testing::ElementsAre("hard-expired", "sa-delete-req", "policy-deleted", "sa-deleted",
                                              "sa-deleted"));
  EXPECT_EQ(events[0].at("limit"), "seconds");
  EXPECT_EQ(events[1].at("source"), "kernel-expired");
  EXPECT_EQ(events[1].at("matching"), handle_to_string(in));
  EXPECT_EQ(events[3].at("reason"), "expired");
}

TEST_F(DeleteReqFixture, AnSaDeletedFromTheKernelByOthersGoesAndUnknownHandlesAreIgnored) {
  make(true);
  const uint64_t in = plane.add_sa(gcm_sa(Direction::In, Mode::Tunnel, "192.0.2.2", "192.0.2.1", 0x2001));
  events.clear();
  obs->on_kernel_sa_event({in + 1000, KernelSaEvent::Kind::HardExpire, "packets", 0, 0});
  EXPECT_TRUE(events.empty());
  obs->on_kernel_sa_event({in, KernelSaEvent::Kind::Deleted, "", 3, 300});
  EXPECT_EQ(plane.sas().size(), 0u);
  EXPECT_THAT(kinds(), ::testing::ElementsAre("sa-delete-req", "sa-deleted"));
  EXPECT_EQ(events[0].at("source"), "kernel-deleted");
}

TEST_F(DeleteReqFixture, UnderTheNotifyPolicyAKernelHardExpireIsReportedNotActedOn) {
  make(false);
  const uint64_t out = plane.add_sa(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x1001));
  events.clear();
  obs->on_kernel_sa_event({out, KernelSaEvent::Kind::HardExpire, "bytes", 1, 1 << 20});
  EXPECT_EQ(plane.sas().size(), 1u);
  EXPECT_THAT(kinds(), ::testing::ElementsAre("hard-expired", "sa-delete-req"));
  EXPECT_EQ(events[1].at("action"), "notify");
}

// The periodic SA check (Observability::on_tick) over a data plane whose
// counters the test sets and whose reads it counts: a tick looks at the SAs
// with a lifetime limit and at those a worker noted a failure on, never at
// every SA.
struct FakeCounters : SaCounterSource {
  std::map<uint64_t, SaRuntimeCounters> counters;  // absent: all zero
  mutable std::map<uint64_t, int> reads;           // sa_counters() calls by handle
  mutable int delete_walks = 0;                    // outbound_delete_requests() calls
  uint64_t raised = 0;
  std::vector<uint64_t> requesting;  // outbound SAs asking to be deleted
  std::vector<uint64_t> noted;       // the workers' failure notes, taken by the next tick
  bool lost = false;                 // notes were lost: the next tick must look at every SA
  std::set<uint64_t> missing;        // not in the data plane (yet): sa_counters() throws
  bool running() const override { return true; }
  SaRuntimeCounters sa_counters(uint64_t handle) const override {
    ++reads[handle];
    if (missing.count(handle) != 0) throw std::runtime_error("no SA with that handle in the worker");
    auto it = counters.find(handle);
    return it == counters.end() ? SaRuntimeCounters{} : it->second;
  }
  uint64_t delete_requests_raised() const override { return raised; }
  std::vector<uint64_t> outbound_delete_requests() const override {
    ++delete_walks;
    return requesting;
  }
  bool take_failed_sas(std::vector<uint64_t>& out) override {
    out.insert(out.end(), noted.begin(), noted.end());
    noted.clear();
    const bool complete = !lost;
    lost = false;
    return complete;
  }
  size_t total_reads() const {
    size_t n = 0;
    for (const auto& [h, k] : reads) n += static_cast<size_t>(k);
    return n;
  }
};

struct TickFixture : ::testing::Test {
  FakeEngine engine;
  ControlPlane plane{engine, 8192};
  FakeCounters dp;
  std::unique_ptr<Observability> obs;
  std::vector<json> events;
  void make() {
    obs = std::make_unique<Observability>(plane, nullptr, -1, ObservabilityOptions{});
    obs->use_counter_source(&dp);
    obs->bus().set_sink([this](const json& e) { events.push_back(e); });
  }
  // `n` SAs without a lifetime, SPIs from `spi` up; their handles.
  std::vector<uint64_t> add_plain(size_t n, Direction dir, uint32_t spi) {
    std::vector<uint64_t> out;
    for (size_t i = 0; i < n; ++i)
      out.push_back(plane.add_sa(dir == Direction::Out
                                     ? gcm_sa(dir, Mode::Tunnel, "192.0.2.1", "192.0.2.2", spi + uint32_t(i))
                                     : gcm_sa(dir, Mode::Tunnel, "192.0.2.2", "192.0.2.1", spi + uint32_t(i))));
    return out;
  }
  static SaSpec with_packets(SaSpec s, uint64_t soft, uint64_t hard) {
    s.life_packets = {soft, hard};
    return s;
  }
  // An SA whose only lifetime is `soft`,`hard` seconds.
  uint64_t add_timed(Direction dir, uint32_t spi, uint64_t soft, uint64_t hard) {
    SaSpec s = dir == Direction::Out ? gcm_sa(dir, Mode::Tunnel, "192.0.2.1", "192.0.2.5", spi)
                                     : gcm_sa(dir, Mode::Tunnel, "192.0.2.5", "192.0.2.1", spi);
    s.life_seconds = {soft, hard};
    return plane.add_sa(s);
  }
  std::vector<std::string> kinds() const {
    std::vector<std::string> out;
    for (const auto& e : events) out.push_back(e.at("event").get<std::string>());
    return out;
  }
};

TEST_F(TickFixture, AnSaWithALifetimeBehindThousandsWithoutGetsItsEventsAndNoOtherSaIsRead) {
  make();
  add_plain(3000, Direction::Out, 0x10000);
  const uint64_t h =
      plane.add_sa(with_packets(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.9", 0x9999), 10, 20));
  events.clear();  // sa-added
  obs->on_tick();
  EXPECT_TRUE(events.empty());
  EXPECT_EQ(dp.total_reads(), 1u);  // that SA only
  EXPECT_EQ(dp.reads[h], 1);
  dp.counters[h].packets = 10;
  dp.counters[h].bytes = 1500;
  obs->on_tick();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].at("event"), "soft-expired");
  EXPECT_EQ(events[0].at("handle"), handle_to_string(h));
  EXPECT_EQ(events[0].at("limit"), "packets");
  EXPECT_EQ(events[0].at("packets"), 10);
  EXPECT_EQ(events[0].at("bytes"), 1500);
  dp.counters[h].packets = 20;
  obs->on_tick();
  obs->on_tick();  // each event once
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].at("event"), "hard-expired");
  EXPECT_EQ(events[1].at("limit"), "packets");
  EXPECT_EQ(dp.total_reads(), 4u);
  EXPECT_EQ(dp.delete_walks, 0);  // no worker raised a delete request
}

TEST_F(TickFixture, AFailureOnOneSaAmongThousandsIsReportedAndLostNotesMakeTheTickLookAtEverySa) {
  make();
  const std::vector<uint64_t> in = add_plain(3000, Direction::In, 0x20000);
  const uint64_t noted = in[2500];
  dp.counters[noted].by_reason[static_cast<size_t>(esp::Reason::Replayed)] = 3;
  dp.noted = {noted, noted};  // a handle may repeat
  events.clear();
  obs->on_tick();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].at("event"), "replay-failures");
  EXPECT_EQ(events[0].at("handle"), handle_to_string(noted));
  EXPECT_EQ(events[0].at("count"), 3);
  EXPECT_EQ(events[0].at("total"), 3);
  EXPECT_LE(dp.total_reads(), 3u);  // the noted SA only (checked for a watch, then its events)
  EXPECT_EQ(dp.reads.count(in[0]), 0u);

  // More SAs failed than the notes hold: the next tick looks at every SA once.
  const uint64_t unnoted = in[1200];
  dp.counters[unnoted].by_reason[static_cast<size_t>(esp::Reason::AuthFailed)] = 7;
  dp.lost = true;
  dp.reads.clear();
  obs->on_tick();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].at("event"), "auth-failures");
  EXPECT_EQ(events[1].at("handle"), handle_to_string(unnoted));
  EXPECT_EQ(events[1].at("count"), 7);
  EXPECT_EQ(dp.reads.count(in[0]), 1u);
  // From then on both are watched, nothing else is read.
  dp.reads.clear();
  obs->on_tick();
  EXPECT_EQ(dp.total_reads(), 2u);
  EXPECT_EQ(dp.reads[noted], 1);
  EXPECT_EQ(dp.reads[unnoted], 1);
  EXPECT_EQ(events.size(), 2u);
}

TEST_F(TickFixture, RestoredAndLaterAddedSasWithLifetimesAreWatchedAndDeletedOnesForgotten) {
  std::vector<SaRecord> saved(1);
  saved[0].handle = (uint64_t{1} << kHandleSlotBits) | 3;
  saved[0].spec = with_packets(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x1111), 5, 0);
  plane.restore(std::move(saved), {}, 2, 1, [] {});  // before the Observability, as in the daemon
  const uint64_t restored = (uint64_t{1} << kHandleSlotBits) | 3;
  make();
  add_plain(200, Direction::Out, 0x30000);
  const uint64_t added =
      plane.add_sa(with_packets(gcm_sa(Direction::In, Mode::Tunnel, "192.0.2.2", "192.0.2.1", 0x2222), 5, 0));
  events.clear();
  obs->on_tick();
  EXPECT_EQ(dp.total_reads(), 2u);
  EXPECT_EQ(dp.reads[restored], 1);
  EXPECT_EQ(dp.reads[added], 1);
  dp.counters[restored].packets = 5;
  dp.counters[added].packets = 6;
  obs->on_tick();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].at("handle"), handle_to_string(std::min(restored, added)));  // handle order
  EXPECT_EQ(events[1].at("handle"), handle_to_string(std::max(restored, added)));
  EXPECT_THAT(kinds(), ::testing::ElementsAre("soft-expired", "soft-expired"));

  plane.delete_sas({added}, false);
  events.clear();
  dp.reads.clear();
  obs->on_tick();
  EXPECT_EQ(dp.total_reads(), 1u);
  EXPECT_EQ(dp.reads[restored], 1);
  EXPECT_EQ(dp.reads.count(added), 0u);
  EXPECT_TRUE(events.empty());
}

TEST_F(TickFixture, ASecondsLimitCountsFromTheFirstTickThatSawTheSa) {
  make();
  add_plain(500, Direction::Out, 0x60000);
  const uint64_t h = add_timed(Direction::In, 0x2222, 1, 0);
  events.clear();
  obs->on_tick();  // first seen
  EXPECT_TRUE(events.empty());
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  obs->on_tick();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].at("event"), "soft-expired");
  EXPECT_EQ(events[0].at("handle"), handle_to_string(h));
  EXPECT_EQ(events[0].at("limit"), "seconds");
  EXPECT_EQ(dp.total_reads(), 2u);
}

// Most SAs with a lifetime (the usual IKE case): the tick walks the database
// in step with the watches instead of searching each; the same events.
TEST_F(TickFixture, WhenMostSasHaveALifetimeEachIsStillCheckedOnceAndInHandleOrder) {
  make();
  std::vector<uint64_t> life;
  for (uint32_t i = 0; i < 300; ++i)
    life.push_back(plane.add_sa(
        with_packets(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x70000 + i), 10, 20)));
  const std::vector<uint64_t> plain = add_plain(20, Direction::In, 0x80000);
  events.clear();
  obs->on_tick();
  EXPECT_EQ(dp.total_reads(), life.size());
  for (uint64_t h : life) EXPECT_EQ(dp.reads[h], 1);
  EXPECT_EQ(dp.reads.count(plain[0]), 0u);
  dp.counters[life[250]].packets = 20;  // both limits at once
  dp.counters[life[7]].packets = 10;
  plane.delete_sas({life[100]}, false);
  events.clear();
  dp.reads.clear();
  obs->on_tick();
  EXPECT_EQ(dp.total_reads(), life.size() - 1);
  EXPECT_EQ(dp.reads.count(life[100]), 0u);
  EXPECT_THAT(kinds(), ::testing::ElementsAre("soft-expired", "soft-expired", "hard-expired"));
  EXPECT_EQ(events[0].at("handle"), handle_to_string(life[7]));
  EXPECT_EQ(events[1].at("handle"), handle_to_string(life[250]));
  EXPECT_EQ(events[2].at("handle"), handle_to_string(life[250]));
}

// Lifetimes in seconds only (what IKE daemons set): such an SA is read at
// its first tick, which starts its clock, and then only when a limit is due.
TEST_F(TickFixture, ASecondsOnlySaIsReadAtItsFirstTickAndThenOnlyWhenALimitIsDue) {
  make();
  add_plain(100, Direction::Out, 0x90000);
  const uint64_t h = add_timed(Direction::Out, 0x3333, 1, 2);
  events.clear();
  obs->on_tick();  // first seen
  obs->on_tick();
  obs->on_tick();
  EXPECT_TRUE(events.empty());
  EXPECT_EQ(dp.reads[h], 1);
  EXPECT_EQ(dp.total_reads(), 1u);
  dp.counters[h].packets = 7;
  std::this_thread::sleep_for(std::chrono::milliseconds(1050));
  obs->on_tick();
  obs->on_tick();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].at("event"), "soft-expired");
  EXPECT_EQ(events[0].at("limit"), "seconds");
  EXPECT_EQ(events[0].at("packets"), 7);  // read when due
  EXPECT_EQ(dp.reads[h], 2);
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  obs->on_tick();
  obs->on_tick();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].at("event"), "hard-expired");
  EXPECT_EQ(events[1].at("limit"), "seconds");
  EXPECT_EQ(dp.reads[h], 3);  // nothing left to wait for
  EXPECT_EQ(dp.total_reads(), 3u);
}

TEST_F(TickFixture, ThousandsOfSasWithSecondsLimitsAreReadOnceAndThenNotUntilALimitIsDue) {
  make();
  std::vector<uint64_t> life;
  for (uint32_t i = 0; i < 3000; ++i) life.push_back(add_timed(Direction::In, 0xa0000 + i, 3600, 3960));
  events.clear();
  obs->on_tick();
  EXPECT_EQ(dp.total_reads(), life.size());
  dp.reads.clear();
  for (int i = 0; i < 5; ++i) obs->on_tick();
  EXPECT_EQ(dp.total_reads(), 0u);
  EXPECT_TRUE(events.empty());
  // Restored SAs (there when the Observability is made): the same.
  make();
  dp.reads.clear();
  obs->on_tick();
  EXPECT_EQ(dp.total_reads(), life.size());
  dp.reads.clear();
  obs->on_tick();
  EXPECT_EQ(dp.total_reads(), 0u);
}

TEST_F(TickFixture, ASecondsOnlySaThatCountsAFailureIsReadAtEveryTickFromThen) {
  make();
  const uint64_t h = add_timed(Direction::In, 0x4444, 3600, 0);
  obs->on_tick();
  obs->on_tick();
  EXPECT_EQ(dp.reads[h], 1);
  dp.counters[h].by_reason[static_cast<size_t>(esp::Reason::AuthFailed)] = 2;
  dp.noted = {h};
  events.clear();
  obs->on_tick();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].at("event"), "auth-failures");
  EXPECT_EQ(events[0].at("count"), 2);
  // More failures without a note (a worker notes an SA once per take): still read.
  dp.counters[h].by_reason[static_cast<size_t>(esp::Reason::AuthFailed)] = 5;
  const int before = dp.reads[h];
  std::this_thread::sleep_for(std::chrono::milliseconds(1050));  // past the 1 s rate limit
  obs->on_tick();
  EXPECT_EQ(dp.reads[h], before + 1);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].at("event"), "auth-failures");
  EXPECT_EQ(events[1].at("count"), 3);
  EXPECT_EQ(events[1].at("total"), 5);
}

TEST_F(TickFixture, AnSaDeletedWhileItsLimitIsQueuedIsNotReadAndOneNotReadableYetIsTriedAgain) {
  make();
  const uint64_t gone = add_timed(Direction::Out, 0x5555, 1, 0);
  const uint64_t later = add_timed(Direction::Out, 0x5556, 1, 0);
  dp.missing = {later};  // not in the data plane yet
  events.clear();
  obs->on_tick();
  EXPECT_EQ(dp.reads[gone], 1);
  EXPECT_EQ(dp.reads[later], 1);
  plane.delete_sas({gone}, false);
  events.clear();  // sa-deleted
  obs->on_tick();
  EXPECT_EQ(dp.reads[later], 2);  // tried again
  dp.missing.clear();
  obs->on_tick();  // read: its clock starts now
  EXPECT_EQ(dp.reads[later], 3);
  obs->on_tick();
  EXPECT_EQ(dp.reads[later], 3);
  std::this_thread::sleep_for(std::chrono::milliseconds(1050));
  obs->on_tick();
  EXPECT_EQ(dp.reads[gone], 1);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].at("event"), "soft-expired");
  EXPECT_EQ(events[0].at("handle"), handle_to_string(later));
}

// Mostly SAs with a packets limit (read at every tick, the walk over the
// database) and one with seconds only among them: read when its limit is
// due, in handle order with the rest; a deleted SA is not read again.
TEST_F(TickFixture, InTheWalkOverManyPolledSasASecondsOnlySaIsReadWhenDueAndDeletedOnesNever) {
  make();
  std::vector<uint64_t> counted;
  for (uint32_t i = 0; i < 200; ++i)
    counted.push_back(plane.add_sa(
        with_packets(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0xb0000 + i), 10, 0)));
  const uint64_t timed = add_timed(Direction::In, 0xc0000, 1, 0);
  for (uint32_t i = 200; i < 400; ++i)
    counted.push_back(plane.add_sa(
        with_packets(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0xb0000 + i), 10, 0)));
  events.clear();
  obs->on_tick();
  EXPECT_EQ(dp.total_reads(), counted.size() + 1);
  plane.delete_sas({counted[10], counted[300]}, false);
  dp.reads.clear();
  obs->on_tick();
  EXPECT_EQ(dp.total_reads(), counted.size() - 2);
  EXPECT_EQ(dp.reads.count(timed), 0u);
  EXPECT_EQ(dp.reads.count(counted[10]), 0u);
  std::this_thread::sleep_for(std::chrono::milliseconds(1050));
  dp.counters[counted[399]].packets = 10;
  dp.counters[counted[0]].packets = 10;
  dp.reads.clear();
  events.clear();
  obs->on_tick();
  EXPECT_EQ(dp.total_reads(), counted.size() - 2 + 1);
  EXPECT_EQ(dp.reads[timed], 1);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].at("handle"), handle_to_string(counted[0]));
  EXPECT_EQ(events[1].at("handle"), handle_to_string(timed));
  EXPECT_EQ(events[1].at("limit"), "seconds");
  EXPECT_EQ(events[2].at("handle"), handle_to_string(counted[399]));
  // Down to a few polled SAs (each found by handle): the deleted ones' handles are skipped.
  std::vector<uint64_t> gone(counted.begin() + 3, counted.end());
  gone.erase(std::remove(gone.begin(), gone.end(), counted[10]), gone.end());
  gone.erase(std::remove(gone.begin(), gone.end(), counted[300]), gone.end());
  plane.delete_sas(gone, false);
  add_plain(100, Direction::In, 0xd0000);
  dp.reads.clear();
  obs->on_tick();
  obs->on_tick();
  EXPECT_EQ(dp.total_reads(), 6u);  // counted[0..2], twice
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(dp.reads[counted[i]], 2);
}

TEST_F(TickFixture, OutboundDeleteRequestsAreLookedForOnlyWhenAWorkerRaisedOne) {
  make();
  add_plain(100, Direction::In, 0x40000);
  const uint64_t out = plane.add_sa(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.7", 0x1001));
  const uint64_t in = plane.add_sa(gcm_sa(Direction::In, Mode::Tunnel, "192.0.2.7", "192.0.2.1", 0x2001));
  for (int i = 0; i < 3; ++i) obs->on_tick();
  EXPECT_EQ(dp.delete_walks, 0);
  events.clear();
  dp.requesting = {out};
  dp.raised = 1;
  obs->on_tick();
  EXPECT_EQ(dp.delete_walks, 1);
  EXPECT_EQ(plane.sas().find(out), nullptr);
  EXPECT_EQ(plane.sas().find(in), nullptr);  // its twin
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events[0].at("event"), "sa-delete-req");
  EXPECT_EQ(events[0].at("source"), "outbound-exhausted");
  EXPECT_EQ(events[0].at("matching"), handle_to_string(in));
  obs->on_tick();
  EXPECT_EQ(dp.delete_walks, 1);
}

TEST_F(TickFixture, ADeleteRequestReportsTheLifetimeReachedFirstReadingOnlyTheSasItDeletes) {
  make();
  add_plain(1000, Direction::Out, 0x50000);
  const uint64_t in = plane.add_sa(
      with_packets(gcm_sa(Direction::In, Mode::Tunnel, "192.0.2.7", "192.0.2.1", 0x2001), 0, 4));
  const uint64_t out = plane.add_sa(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.7", 0x1001));
  dp.counters[in].packets = 4;  // reached between two ticks
  events.clear();
  obs->handle_delete_request(in, ChangeCause::SaDeleteReq, "verdict");
  EXPECT_THAT(kinds(), ::testing::ElementsAre("hard-expired", "sa-delete-req", "sa-deleted", "sa-deleted"));
  EXPECT_EQ(events[0].at("handle"), handle_to_string(in));
  EXPECT_EQ(dp.total_reads(), 2u);
  EXPECT_EQ(dp.reads[in], 1);
  EXPECT_EQ(dp.reads[out], 1);
}

TEST(EventBus, HumanLineStartsWithTimeEventAndHandle) {
  const json e = {
      {"time", "2026-11-25T16:40:01Z"}, {"event", "sa-deleted"}, {"handle", "0x2000001"}, {"reason", "sa-delete-req"}};
  EXPECT_EQ(event_human_line(e), "2026-11-25T16:40:01Z sa-deleted 0x2000001 reason=sa-delete-req");
  EXPECT_THAT(utc_timestamp_now(), ::testing::MatchesRegex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z"));
}

TEST(StatsReport, SasWhoseEngineKeepsCountersShowThoseInStatsAndSaShow) {
  FakeEngine engine;
  ControlPlane plane(engine, 16);
  const uint64_t nic = plane.add_sa(gcm_sa(Direction::In, Mode::Tunnel, "192.0.2.2", "192.0.2.1", 0x2001));
  const uint64_t other = plane.add_sa(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x2002));
  SaRuntimeCounters k;
  k.packets = 1000;
  k.bytes = 1500000;
  k.by_reason[static_cast<size_t>(esp::Reason::Replayed)] = 4;
  k.by_reason[static_cast<size_t>(esp::Reason::AuthFailed)] = 2;
  k.highest_seq = 1234;
  engine.own_counters[nic] = k;
  RequestHandler handler(plane);
  const json stats = json::parse(handler.handle_line(R"({"version":1,"op":"stats"})")).at("stats");
  ASSERT_EQ(stats.at("sas").size(), 2u);
  for (const json& sa : stats.at("sas")) {
    if (sa.at("handle") == handle_to_string(nic)) {
      EXPECT_EQ(sa.at("counted_by"), "kernel");
      EXPECT_EQ(sa.at("packets"), 1000);
      EXPECT_EQ(sa.at("bytes"), 1500000);
      EXPECT_EQ(sa.at("errors").at("replayed"), 4);
      EXPECT_EQ(sa.at("errors").at("auth-failed"), 2);
      EXPECT_EQ(sa.at("highest_seq"), 1234);
    } else {
      EXPECT_EQ(sa.at("handle"), handle_to_string(other));
      EXPECT_EQ(sa.at("counted_by"), "afxdp");
      EXPECT_EQ(sa.at("packets"), 0);
    }
  }
  const json show =
      json::parse(handler.handle_line(R"({"version":1,"op":"sa.show","handle":")" + handle_to_string(nic) + "\"}"));
  ASSERT_TRUE(show.at("ok").get<bool>()) << show.dump();
  EXPECT_EQ(show.at("sa").at("kernel-counters"),
            (json{{"packets", 1000}, {"bytes", 1500000}, {"replayed", 4}, {"auth-failed", 2}, {"highest-seq", 1234}}));
  const json show_other =
      json::parse(handler.handle_line(R"({"version":1,"op":"sa.show","handle":")" + handle_to_string(other) + "\"}"));
  EXPECT_FALSE(show_other.at("sa").contains("kernel-counters"));
}

TEST(StatsReport, WithoutDataPlaneListsSasWithZeroCountersAndSaysSo) {
  FakeEngine engine;
  ControlPlane plane(engine, 16);
  const uint64_t h = plane.add_sa(gcm_sa(Direction::In, Mode::Tunnel, "192.0.2.2", "192.0.2.1", 0x2001));
  RequestHandler handler(plane);
  const json answer = json::parse(handler.handle_line(R"({"version":1,"op":"stats"})"));
  ASSERT_TRUE(answer.at("ok").get<bool>()) << answer.dump();
  EXPECT_THAT(answer.dump(), ::testing::Not(HasSubstr("0c0d0e0f1011")));  // gcm_sa's key
  const json& stats = answer.at("stats");
  EXPECT_FALSE(stats.at("dataplane").at("running").get<bool>());
  EXPECT_THAT(stats.at("dataplane").at("note").get<std::string>(), HasSubstr("not running"));
  ASSERT_EQ(stats.at("sas").size(), 1u);
  EXPECT_EQ(stats.at("sas")[0].at("handle"), handle_to_string(h));
  EXPECT_EQ(stats.at("sas")[0].at("packets"), 0);
  EXPECT_EQ(stats.at("sas")[0].at("errors").at("auth-failed"), 0);
  EXPECT_EQ(stats.at("sas")[0].at("errors").size(), 15u);  // every esp::Reason but ok
  EXPECT_EQ(stats.at("sas")[0].at("errors").at("policy-mismatch"), 0);

  const std::string prom = prometheus_text(stats);
  const std::regex sample(R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*",?)*\})? [0-9]+$)");
  std::istringstream lines(prom);
  std::string line;
  while (std::getline(lines, line))
    EXPECT_TRUE(line.rfind("# HELP ipsecov2_", 0) == 0 || line.rfind("# TYPE ipsecov2_", 0) == 0 ||
                std::regex_match(line, sample))
        << line;
  EXPECT_THAT(prom, HasSubstr("ipsecov2_dataplane_running 0\n"));
  EXPECT_THAT(prom, HasSubstr("ipsecov2_sas 1\n"));
  EXPECT_THAT(prom, HasSubstr("ipsecov2_sa_packets_total{handle=\"" + handle_to_string(h) +
                              "\",dir=\"in\",spi=\"0x2001\"} 0\n"));
  EXPECT_THAT(prom, HasSubstr("# TYPE ipsecov2_sa_errors_total counter\n"));
  // Key storage: the SA's key is in it (the database's copy), and Prometheus shows the same numbers.
  const json& keys = stats.at("key_storage").at("keys");
  EXPECT_GE(keys.at("slots_in_use").get<uint64_t>(), 1u);
  EXPECT_GE(keys.at("mapped_bytes").get<uint64_t>(), 4096u);
  EXPECT_THAT(prom, HasSubstr("ipsecov2_key_storage_slots{storage=\"keys\"} " +
                              std::to_string(keys.at("slots_in_use").get<uint64_t>()) + "\n"));
  EXPECT_THAT(prom, HasSubstr("ipsecov2_key_storage_bytes{storage=\"keys\",state=\"mapped\"} " +
                              std::to_string(keys.at("mapped_bytes").get<uint64_t>()) + "\n"));
  EXPECT_THAT(prom, HasSubstr("ipsecov2_key_storage_bytes{storage=\"schedules\",state=\"reserve\"} "));
  EXPECT_EQ(crypto_status_ndis_name(3), "CRYPTO_TRANSPORT_ESP_AUTH_FAILED");
}

// The control server with a monitor subscriber; events are published from the
// server's own thread (a watched eventfd), as the daemon does.
class StreamFixture : public ::testing::Test {
 protected:
  // `hold`: a before-answers hook, as the daemon sets (its lines wait for the durability verdict).
  void start(size_t max_queue, bool hold = false) {
    char tmpl[] = "/tmp/ov2obs-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    ControlServerOptions opts;
    opts.path = base_ + "/ctl.sock";
    opts.max_stream_queue_bytes = max_queue;
    path_ = opts.path;
    server_ = std::make_unique<ControlServer>(opts, [this](std::string_view l) { return handler_.handle_line(l); });
    server_->set_stream_detector([](std::string_view a) { return a.find("\"stream\":\"monitor\"") != a.npos; });
    if (hold) server_->set_before_answers([] { return std::string(); });
    publish_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    server_->watch(publish_fd_, [this] {
      uint64_t n = 0;
      (void)!read(publish_fd_, &n, sizeof n);
      for (uint64_t i = 0; i < n; ++i) server_->publish(json{{"event", "test"}, {"seq", next_seq_++}}.dump());
    });
    stop_fd_ = eventfd(0, EFD_CLOEXEC);
    thread_ = std::thread([this] { server_->run(stop_fd_); });
  }
  void TearDown() override {
    if (thread_.joinable()) {
      uint64_t one = 1;
      (void)!write(stop_fd_, &one, sizeof one);
      thread_.join();
    }
    server_.reset();
    for (int fd : {stop_fd_, publish_fd_})
      if (fd >= 0) close(fd);
    if (!base_.empty()) std::filesystem::remove_all(base_);
  }
  void publish(uint64_t n) { (void)!write(publish_fd_, &n, sizeof n); }
  int subscribe() {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, path_.c_str());
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    const int small = 4096;  // a small receive buffer makes a non-reader fill up fast
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    timeval tv{3, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    const std::string req = "{\"version\":1,\"op\":\"monitor\"}\n";
    EXPECT_EQ(send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
    EXPECT_THAT(read_line(fd), HasSubstr("\"stream\":\"monitor\""));
    return fd;
  }
  static std::string read_line(int fd) {
    std::string line;
    char c;
    while (recv(fd, &c, 1, 0) == 1) {
      if (c == '\n') return line;
      line += c;
    }
    return line;
  }

  FakeEngine engine_;
  ControlPlane plane_{engine_, 64};
  RequestHandler handler_{plane_};
  std::unique_ptr<ControlServer> server_;
  std::thread thread_;
  int stop_fd_ = -1, publish_fd_ = -1;
  uint64_t next_seq_ = 0;
  std::string base_, path_;
};

TEST_F(StreamFixture, SubscriberGetsPublishedLinesInOrderAndOtherClientsStillGetAnswers) {
  start(256 * 1024);
  const int fd = subscribe();
  publish(3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(json::parse(read_line(fd)).at("seq"), i);
  // An ordinary request on another connection is answered meanwhile.
  ControlClient client(path_);
  EXPECT_TRUE(client.call({{"op", "caps"}}).at("ok").get<bool>());
  // Input after the monitor request is ignored, the stream goes on.
  const std::string junk = "{\"version\":1,\"op\":\"caps\"}\n";
  (void)!send(fd, junk.data(), junk.size(), MSG_NOSIGNAL);
  publish(1);
  EXPECT_EQ(json::parse(read_line(fd)).at("seq"), 3);
  close(fd);
}

TEST_F(StreamFixture, SlowSubscriberLosesEventsAndIsToldHowMany) {
  start(2048);  // bytes queued in the daemon per subscriber
  const int fd = subscribe();
  publish(5000);  // ~30 bytes each: far more than the socket buffers and the queue hold
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // Now read everything; once there is room again the next line says how many were lost.
  std::vector<json> got;
  timeval tv{0, 300000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  for (;;) {
    const std::string line = read_line(fd);
    if (line.empty()) break;
    got.push_back(json::parse(line));
  }
  publish(1);
  tv = {3, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const json lost = json::parse(read_line(fd));
  const json last = json::parse(read_line(fd));
  ASSERT_EQ(lost.at("event"), "events-lost") << lost.dump();
  EXPECT_EQ(last.at("seq"), 5000);
  // Everything is accounted for: received + lost == published before the last one.
  EXPECT_EQ(got.size() + lost.at("count").get<size_t>(), 5000u);
  EXPECT_LT(got.size(), 5000u);
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i].at("seq"), i);  // what arrived is in order, a prefix
  close(fd);
}

TEST_F(StreamFixture, LinesHeldForTheDurabilityVerdictAreNotLostToTheQueueLimitWithinOneIteration) {
  start(2048, true);
  const int fd = subscribe();
  publish(5000);  // one iteration, ~150 KB: within the held allowance, far beyond the 2 KiB queue
  for (int i = 0; i < 5000; ++i) {
    const std::string line = read_line(fd);
    ASSERT_FALSE(line.empty()) << "line " << i << " never came";
    ASSERT_EQ(json::parse(line).at("seq"), i) << line;  // no events-lost line in between
  }
  close(fd);
}

}  // namespace
}  // namespace ov2
