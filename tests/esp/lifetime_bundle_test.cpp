// Lifetimes (soft/hard in packets, bytes, seconds; edge-triggered events;
// SaDeleteReq), bundles (transport inside tunnel) and the NDIS receive word,
// and key hygiene of the SA objects.
#include <gtest/gtest.h>

#include "common/error.h"
#include "common/secure_bytes.h"
#include "esp/esp_test_util.h"
#include "ov2_abi.h"

namespace ov2::esp::test {
namespace {

constexpr uint64_t kSecond = 1000000000ull;

SaSpec tunnel_spec(Direction d, uint32_t spi = 0x600) {
  return make_spec(all_suites()[0], d, Mode::Tunnel, "192.0.2.1", "192.0.2.2", spi);
}

Bytes inner_packet(size_t size = 20) { return make_udp_packet("10.0.0.1", "10.0.0.2", size); }

TEST(EspLifetime, OutboundPacketLimitsRaiseSoftOnceThenStopAfterTheHardLimit) {
  SaSpec s = tunnel_spec(Direction::Out);
  s.life_packets = {2, 3};
  OutboundSa out(s, 0);
  const bool soft[] = {false, true, false};
  const bool hard[] = {false, false, true};
  for (int i = 0; i < 3; ++i) {
    PacketBuffer buf(inner_packet());
    LifetimeEvent ev;
    ASSERT_EQ(out.encapsulate(buf.packet(), 0, &ev), Reason::Ok) << i;
    EXPECT_EQ(ev.soft_expired_now, soft[i]) << i;
    EXPECT_EQ(ev.hard_expired_now, hard[i]) << i;
  }
  EXPECT_TRUE(out.delete_requested());
  for (int i = 0; i < 2; ++i) {
    PacketBuffer buf(inner_packet());
    LifetimeEvent ev;
    EXPECT_EQ(out.encapsulate(buf.packet(), 0, &ev), Reason::LifetimeExpired);
    EXPECT_FALSE(ev.hard_expired_now);
    EXPECT_FALSE(ev.soft_expired_now);
  }
  EXPECT_EQ(out.counters().packets.load(), 3u);
  EXPECT_EQ(out.counters().count(Reason::LifetimeExpired), 2u);
  EXPECT_EQ(out.next_seq(), 4u);  // refused packets spend no sequence number
}

// The daemon walks the SA table for delete requests only when
// delete_requests_raised() changed: each SA that starts asking counts once,
// by its hard limit or by its sequence space, and refused packets after that
// count nothing more.
TEST(EspLifetime, EachOutboundSaStartingToAskForDeletionCountsOnceInDeleteRequestsRaised) {
  const uint64_t raised0 = delete_requests_raised();
  SaSpec s = tunnel_spec(Direction::Out);
  s.life_packets = {0, 2};
  OutboundSa limited(s, 0);
  auto send = [](OutboundSa& sa) {
    PacketBuffer buf(inner_packet());
    return sa.encapsulate(buf.packet(), 0);
  };
  EXPECT_EQ(send(limited), Reason::Ok);
  EXPECT_EQ(delete_requests_raised(), raised0);
  EXPECT_EQ(send(limited), Reason::Ok);  // reaches the hard limit
  EXPECT_EQ(delete_requests_raised(), raised0 + 1);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(send(limited), Reason::LifetimeExpired);
  EXPECT_EQ(delete_requests_raised(), raised0 + 1);

  OutboundSa exhausted(tunnel_spec(Direction::Out, 0x601), 0);
  exhausted.set_next_seq(uint64_t{1} << 32);  // past the last non-ESN number
  for (int i = 0; i < 3; ++i) EXPECT_EQ(send(exhausted), Reason::SeqExhausted);
  EXPECT_TRUE(exhausted.delete_requested());
  EXPECT_EQ(delete_requests_raised(), raised0 + 2);
}

TEST(EspLifetime, OutboundByteLimitRefusesThePacketThatWouldCrossIt) {
  const size_t len = inner_packet().size();  // 48 bytes
  SaSpec s = tunnel_spec(Direction::Out);
  s.life_bytes = {len + 1, 2 * len + len / 2};
  OutboundSa out(s, 0);
  LifetimeEvent ev;
  PacketBuffer a(inner_packet());
  EXPECT_EQ(out.encapsulate(a.packet(), 0, &ev), Reason::Ok);
  EXPECT_FALSE(ev.soft_expired_now);
  PacketBuffer b(inner_packet());
  EXPECT_EQ(out.encapsulate(b.packet(), 0, &ev), Reason::Ok);
  EXPECT_TRUE(ev.soft_expired_now);
  PacketBuffer c(inner_packet());
  EXPECT_EQ(out.encapsulate(c.packet(), 0, &ev), Reason::LifetimeExpired);
  EXPECT_TRUE(ev.hard_expired_now);
  EXPECT_EQ(out.counters().bytes.load(), 2 * len);
}

TEST(EspLifetime, OutboundSecondsCountFromCreation) {
  SaSpec s = tunnel_spec(Direction::Out);
  s.life_seconds = {10, 20};
  const uint64_t created = 1000 * kSecond;
  OutboundSa out(s, created);
  LifetimeEvent ev;
  PacketBuffer a(inner_packet());
  EXPECT_EQ(out.encapsulate(a.packet(), created + 9 * kSecond, &ev), Reason::Ok);
  EXPECT_FALSE(ev.soft_expired_now);
  PacketBuffer b(inner_packet());
  EXPECT_EQ(out.encapsulate(b.packet(), created + 10 * kSecond, &ev), Reason::Ok);
  EXPECT_TRUE(ev.soft_expired_now);
  PacketBuffer c(inner_packet());
  EXPECT_EQ(out.encapsulate(c.packet(), created + 15 * kSecond, &ev), Reason::Ok);
  EXPECT_FALSE(ev.soft_expired_now);
  PacketBuffer d(inner_packet());
  EXPECT_EQ(out.encapsulate(d.packet(), created + 20 * kSecond, &ev), Reason::LifetimeExpired);
  EXPECT_TRUE(ev.hard_expired_now);
  EXPECT_TRUE(out.delete_requested());
}

// The seconds limits are deadlines computed once at creation (no division
// per packet): exact to the nanosecond, before and after, and a limit too
// far away to be a deadline on this clock never fires.
TEST(EspLifetime, SecondsLimitsAreExactToTheNanosecondAndAFarLimitNeverFires) {
  SaSpec s = tunnel_spec(Direction::Out);
  s.life_seconds = {10, 20};
  const uint64_t created = 7 * kSecond + 3;
  OutboundSa out(s, created);
  SaSpec in_spec = mirror(s);
  InboundSa in(in_spec, created);
  LifetimeEvent ev;
  PacketBuffer a(inner_packet());
  ASSERT_EQ(out.encapsulate(a.packet(), created + 10 * kSecond - 1, &ev), Reason::Ok);
  EXPECT_FALSE(ev.soft_expired_now);
  EXPECT_FALSE(in.decapsulate(a.packet(), created + 10 * kSecond - 1, &ev).sa_delete_req);
  EXPECT_FALSE(ev.soft_expired_now);
  PacketBuffer b(inner_packet());
  ASSERT_EQ(out.encapsulate(b.packet(), created + 20 * kSecond - 1, &ev), Reason::Ok);
  EXPECT_TRUE(ev.soft_expired_now);
  EXPECT_FALSE(in.decapsulate(b.packet(), created + 20 * kSecond - 1, &ev).sa_delete_req);
  EXPECT_TRUE(ev.soft_expired_now);
  EXPECT_FALSE(ev.hard_expired_now);
  PacketBuffer c(inner_packet());
  ASSERT_EQ(out.encapsulate(c.packet(), 0, &ev), Reason::Ok);  // a clock before creation: age 0
  EXPECT_EQ(in.decapsulate(c.packet(), created + 20 * kSecond, &ev).reason, Reason::Ok);
  EXPECT_TRUE(ev.hard_expired_now);
  PacketBuffer d(inner_packet());
  EXPECT_EQ(out.encapsulate(d.packet(), created + 20 * kSecond, &ev), Reason::LifetimeExpired);
  EXPECT_TRUE(ev.hard_expired_now);

  s.life_seconds = {UINT64_MAX / 2, UINT64_MAX};  // beyond any deadline: created + s * 1e9 would overflow
  OutboundSa far(s, created);
  PacketBuffer e(inner_packet());
  EXPECT_EQ(far.encapsulate(e.packet(), UINT64_MAX - 1, &ev), Reason::Ok);  // (2^64-1 ns, 584 years: "no limit")
  EXPECT_FALSE(ev.soft_expired_now);
  EXPECT_FALSE(ev.hard_expired_now);
}

TEST(EspLifetime, InboundHardLimitStillDeliversButSetsSaDeleteReqFromThenOn) {
  SaSpec s = tunnel_spec(Direction::Out);
  OutboundSa out(s, 0);
  SaSpec in_spec = mirror(s);
  in_spec.life_packets = {1, 2};
  in_spec.life_seconds = {0, 0};
  InboundSa in(in_spec, 0);
  const bool soft[] = {true, false, false, false};
  const bool hard[] = {false, true, false, false};
  const bool delete_req[] = {false, true, true, true};
  for (int i = 0; i < 4; ++i) {
    const Bytes plain = inner_packet(10 + i);
    PacketBuffer buf(plain);
    ASSERT_EQ(out.encapsulate(buf.packet(), 0), Reason::Ok);
    LifetimeEvent ev;
    const auto r = in.decapsulate(buf.packet(), 0, &ev);
    ASSERT_EQ(r.reason, Reason::Ok) << i;
    EXPECT_EQ(buf.bytes(), plain);
    EXPECT_EQ(ev.soft_expired_now, soft[i]) << i;
    EXPECT_EQ(ev.hard_expired_now, hard[i]) << i;
    EXPECT_EQ(r.sa_delete_req, delete_req[i]) << i;
    EXPECT_EQ(rx_info_for(r), ov2_rx_make(delete_req[i], 1, 0, CRYPTO_SUCCESS)) << i;
  }
}

TEST(EspLifetime, InboundSecondsAndBytes) {
  SaSpec s = tunnel_spec(Direction::Out);
  OutboundSa out(s, 0);
  SaSpec in_spec = mirror(s);
  in_spec.life_seconds = {5, 60};
  in_spec.life_bytes = {0, 100};
  InboundSa in(in_spec, 0);
  LifetimeEvent ev;
  PacketBuffer a(inner_packet(20));  // 48 bytes
  ASSERT_EQ(out.encapsulate(a.packet(), 0), Reason::Ok);
  EXPECT_FALSE(in.decapsulate(a.packet(), 4 * kSecond, &ev).sa_delete_req);
  EXPECT_FALSE(ev.soft_expired_now);
  PacketBuffer b(inner_packet(20));
  ASSERT_EQ(out.encapsulate(b.packet(), 0), Reason::Ok);
  EXPECT_FALSE(in.decapsulate(b.packet(), 5 * kSecond, &ev).sa_delete_req);  // 96 bytes < 100
  EXPECT_TRUE(ev.soft_expired_now);
  PacketBuffer c(inner_packet(20));
  ASSERT_EQ(out.encapsulate(c.packet(), 0), Reason::Ok);
  EXPECT_TRUE(in.decapsulate(c.packet(), 6 * kSecond, &ev).sa_delete_req);  // 144 bytes
  EXPECT_TRUE(ev.hard_expired_now);
}

// ---- bundles ---------------------------------------------------------------------

struct Bundle {
  SaSpec transport_spec = make_spec(all_suites()[4], Direction::Out, Mode::Transport, "10.0.0.1", "10.0.0.2", 0x701);
  SaSpec tunnel = make_spec(all_suites()[0], Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x702);
  OutboundSa out_transport{transport_spec, 0};
  OutboundSa out_tunnel{tunnel, 0};
  InboundSa in_transport{mirror(transport_spec), 0};
  InboundSa in_tunnel{mirror(tunnel), 0};
};

TEST(EspBundle, TransportInsideTunnelRoundTripsWithCryptoDoneAndNextCryptoDone) {
  Bundle b;
  const Bytes plain = inner_packet(33);
  PacketBuffer buf(plain);
  ASSERT_EQ(encapsulate_bundle(b.out_transport, b.out_tunnel, buf.packet(), 0), Reason::Ok);
  const Bytes wire = buf.bytes();
  EXPECT_EQ(wire[9], 50);        // outer: ESP (tunnel SA)
  EXPECT_EQ(wire[20 + 3], 0x02);  // tunnel SPI 0x702
  const BundleResult r = decapsulate_bundle(b.in_tunnel, b.in_transport, buf.packet(), 0);
  EXPECT_TRUE(r.ok());
  EXPECT_TRUE(r.transport_checked);
  EXPECT_EQ(r.rx_info, ov2_rx_make(0, 1, 1, CRYPTO_SUCCESS));
  EXPECT_EQ(to_hex(buf.bytes()), to_hex(plain));
  EXPECT_TRUE(buf.guards_intact());
}

TEST(EspBundle, TunnelFailureNamesTheTunnelPortionWithoutNextCryptoDone) {
  Bundle b;
  PacketBuffer buf(inner_packet());
  ASSERT_EQ(encapsulate_bundle(b.out_transport, b.out_tunnel, buf.packet(), 0), Reason::Ok);
  buf.packet().data[buf.packet().len - 1] ^= 1;  // tunnel ICV
  const BundleResult r = decapsulate_bundle(b.in_tunnel, b.in_transport, buf.packet(), 0);
  EXPECT_EQ(r.tunnel.reason, Reason::AuthFailed);
  EXPECT_FALSE(r.transport_checked);
  EXPECT_EQ(r.rx_info, ov2_rx_make(0, 1, 0, CRYPTO_TUNNEL_ESP_AUTH_FAILED));
}

TEST(EspBundle, TransportFailureNamesTheTransportPortionWithNextCryptoDone) {
  Bundle b;
  PacketBuffer buf(inner_packet());
  ASSERT_EQ(b.out_transport.encapsulate(buf.packet(), 0), Reason::Ok);
  buf.packet().data[buf.packet().len - 1] ^= 1;  // transport ICV, before the tunnel seals it
  ASSERT_EQ(b.out_tunnel.encapsulate(buf.packet(), 0), Reason::Ok);
  const BundleResult r = decapsulate_bundle(b.in_tunnel, b.in_transport, buf.packet(), 0);
  EXPECT_EQ(r.tunnel.reason, Reason::Ok);
  EXPECT_EQ(r.transport.reason, Reason::AuthFailed);
  EXPECT_TRUE(r.transport_checked);
  EXPECT_EQ(r.rx_info, ov2_rx_make(0, 1, 1, CRYPTO_TRANSPORT_ESP_AUTH_FAILED));
}

TEST(EspBundle, UnrecognisedTransportPortionIsAGenericErrorNotASuccess) {
  Bundle b;
  SaSpec other = b.transport_spec;
  other.spi = 0x799;
  OutboundSa wrong_transport(other, 0);
  PacketBuffer buf(inner_packet());
  ASSERT_EQ(encapsulate_bundle(wrong_transport, b.out_tunnel, buf.packet(), 0), Reason::Ok);
  const BundleResult r = decapsulate_bundle(b.in_tunnel, b.in_transport, buf.packet(), 0);
  EXPECT_EQ(r.transport.reason, Reason::WrongSpi);
  EXPECT_FALSE(r.transport_checked);
  EXPECT_EQ(r.rx_info, ov2_rx_make(0, 1, 0, CRYPTO_GENERIC_ERROR));
}

TEST(EspBundle, EitherLayersHardLifetimeSetsSaDeleteReq) {
  Bundle b;
  SaSpec t = mirror(b.transport_spec);
  t.life_packets = {0, 1};
  InboundSa in_transport(t, 0);
  PacketBuffer buf(inner_packet());
  ASSERT_EQ(encapsulate_bundle(b.out_transport, b.out_tunnel, buf.packet(), 0), Reason::Ok);
  const BundleResult r = decapsulate_bundle(b.in_tunnel, in_transport, buf.packet(), 0);
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.rx_info, ov2_rx_make(1, 1, 1, CRYPTO_SUCCESS));
}

// ---- status mapping and key hygiene ---------------------------------------------

TEST(EspStatus, EveryReasonHasANameAndTheDocumentedNdisStatus) {
  for (size_t i = 0; i < size_t(Reason::Count); ++i) EXPECT_STRNE(reason_name(Reason(i)), "unknown");
  EXPECT_EQ(crypto_status_for(Reason::Ok, Mode::Tunnel), uint32_t(CRYPTO_SUCCESS));
  EXPECT_EQ(crypto_status_for(Reason::AuthFailed, Mode::Tunnel), uint32_t(CRYPTO_TUNNEL_ESP_AUTH_FAILED));
  EXPECT_EQ(crypto_status_for(Reason::AuthFailed, Mode::Transport), uint32_t(CRYPTO_TRANSPORT_ESP_AUTH_FAILED));
  for (Reason r : {Reason::Truncated, Reason::BadLength, Reason::BadPadding})
    EXPECT_EQ(crypto_status_for(r, Mode::Tunnel), uint32_t(CRYPTO_INVALID_PACKET_SYNTAX));
  for (Reason r : {Reason::BadNextHeader, Reason::InnerMismatch})
    EXPECT_EQ(crypto_status_for(r, Mode::Transport), uint32_t(CRYPTO_INVALID_PROTOCOL));
  for (Reason r : {Reason::Replayed, Reason::LifetimeExpired, Reason::SeqExhausted, Reason::NoSpace,
                   Reason::Unsupported, Reason::WrongSpi, Reason::EcnDrop})
    EXPECT_EQ(crypto_status_for(r, Mode::Tunnel), uint32_t(CRYPTO_GENERIC_ERROR));
  EXPECT_FALSE(crypto_done_for(Reason::Unsupported));
  EXPECT_FALSE(crypto_done_for(Reason::WrongSpi));
  EXPECT_TRUE(crypto_done_for(Reason::Replayed));
}

TEST(EspKeys, SaObjectsKeepNoKeyCopyOnlyTheirParamsAndReleaseTheirKeySlots) {
  const size_t before = key_arena_stats().slots_in_use;
  {
    SaSpec s = tunnel_spec(Direction::Out);
    s.udp_encap = true;
    s.encap_sport = 4501;
    const size_t with_spec = key_arena_stats().slots_in_use;
    OutboundSa out(s, 0);
    InboundSa in(mirror(s), 0);
    EXPECT_EQ(out.params().spi, s.spi);
    EXPECT_EQ(out.params().mode, Mode::Tunnel);
    EXPECT_EQ(out.params().esn, s.esn);
    EXPECT_TRUE(out.params().udp_encap);
    EXPECT_EQ(out.params().encap_sport, 4501);
    EXPECT_EQ(in.params().spi, mirror(s).spi);
    EXPECT_EQ(key_arena_stats().slots_in_use, with_spec);  // the engine holds keys only in its crypto state
  }
  EXPECT_EQ(key_arena_stats().slots_in_use, before);
}

TEST(EspSpec, WrongDirectionOrUnsupportedCombinationThrowsAClearError) {
  EXPECT_THROW(OutboundSa(tunnel_spec(Direction::In), 0), Error);
  EXPECT_THROW(InboundSa(tunnel_spec(Direction::Out), 0), Error);
  SaSpec cbc_no_auth = make_spec(all_suites()[4], Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2");
  cbc_no_auth.auth = AuthAlg::None;
  try {
    OutboundSa sa(cbc_no_auth, 0);
    ADD_FAILURE() << "CBC without authentication was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Unsupported);
    EXPECT_NE(std::string(e.what()).find("aes-cbc with hmac"), std::string::npos) << e.what();
  }
  SaSpec short_key = tunnel_spec(Direction::Out);
  short_key.enc_key = SecureBytes(key_bytes(16, 1));
  EXPECT_THROW(OutboundSa(short_key, 0), Error);
}

}  // namespace
}  // namespace ov2::esp::test
