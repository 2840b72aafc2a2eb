// Engine against itself: every suite, both modes, both families, NAT-T; and
// the header fields the outbound side must set.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "esp/esp_test_util.h"
#include "ov2_abi.h"

namespace ov2::esp::test {
namespace {

struct Endpoints {
  const char* outer_src;
  const char* outer_dst;
  const char* inner_src;
  const char* inner_dst;
};
const Endpoints kV4{"192.0.2.1", "192.0.2.2", "10.1.0.1", "10.2.0.1"};
const Endpoints kV6{"2001:db8::1", "2001:db8::2", "fd00:1::1", "fd00:2::1"};

TEST(EspRoundTrip, EverySuiteModeFamilyAndEncapsulationRestoresThePacketExactly) {
  int cases = 0;
  for (const Suite& suite : all_suites())
    for (Mode mode : {Mode::Tunnel, Mode::Transport})
      for (const Endpoints* outer : {&kV4, &kV6})
        for (const Endpoints* inner : {&kV4, &kV6})
          for (bool natt : {false, true})
            for (size_t size : {0, 1, 13, 14, 15, 100, 1400}) {
              if (mode == Mode::Transport && inner != outer) continue;
              SCOPED_TRACE(std::string(suite.name) + (mode == Mode::Tunnel ? " tunnel" : " transport") +
                           (outer == &kV6 ? " outer6" : " outer4") + (inner == &kV6 ? " inner6" : " inner4") +
                           (natt ? " natt" : "") + " size " + std::to_string(size));
              const char* s = mode == Mode::Tunnel ? outer->outer_src : outer->inner_src;
              const char* d = mode == Mode::Tunnel ? outer->outer_dst : outer->inner_dst;
              SaSpec spec = make_spec(suite, Direction::Out, mode, s, d, 0x2000, false, natt);
              OutboundSa out(spec, 0);
              InboundSa in(mirror(spec), 0);
              const Bytes plain = make_udp_packet(inner->inner_src, inner->inner_dst, size);
              PacketBuffer buf(plain);
              ASSERT_EQ(out.encapsulate(buf.packet(), 1), Reason::Ok);
              ASSERT_TRUE(buf.guards_intact());
              ASSERT_LE(buf.packet().len, plain.size() + max_overhead(spec));
              const auto r = in.decapsulate(buf.packet(), 2);
              ASSERT_EQ(r.reason, Reason::Ok) << reason_name(r.reason);
              EXPECT_EQ(r.crypto_status, uint32_t(CRYPTO_SUCCESS));
              EXPECT_TRUE(r.crypto_done);
              EXPECT_FALSE(r.sa_delete_req);
              EXPECT_EQ(r.seq, 1u);
              ASSERT_TRUE(buf.guards_intact());
              ASSERT_EQ(to_hex(buf.bytes()), to_hex(plain));
              EXPECT_EQ(out.counters().packets.load(), 1u);
              EXPECT_EQ(out.counters().bytes.load(), plain.size());
              EXPECT_EQ(in.counters().count(Reason::Ok), 1u);
              EXPECT_EQ(in.counters().bytes.load(), plain.size());
              ++cases;
            }
  EXPECT_EQ(cases, 12 * 7 * 2 * (4 + 2));
}

TEST(EspOutbound, TunnelIpv4OuterHeaderFieldsFollowTheRfcs) {
  const Suite& gcm = all_suites()[0];
  SaSpec spec = make_spec(gcm, Direction::Out, Mode::Tunnel, kV4.outer_src, kV4.outer_dst);
  OutboundSa out(spec, 0);
  struct Case {
    uint8_t inner_tos;
    bool df;
    uint8_t outer_tos;
  };
  // DSCP copied; ECN per RFC 6040 normal mode (CE -> ECT(0)); DF copied.
  const Case cases[] = {{0xb8, true, 0xb8}, {0xb9, false, 0xb9}, {0xba, true, 0xba}, {0xbb, false, 0xba}, {0x00, false, 0x00}};
  uint16_t prev_id = 0;
  for (size_t i = 0; i < std::size(cases); ++i) {
    const Case& c = cases[i];
    const Bytes plain = make_udp_packet(kV4.inner_src, kV4.inner_dst, 40, c.inner_tos, c.df);
    PacketBuffer buf(plain);
    ASSERT_EQ(out.encapsulate(buf.packet(), 0), Reason::Ok);
    const Bytes p = buf.bytes();
    EXPECT_EQ(p[0], 0x45);
    EXPECT_EQ(p[1], c.outer_tos) << i;
    EXPECT_EQ(be16(&p[2]), p.size());
    EXPECT_EQ((p[6] & 0x40) != 0, c.df) << i;
    EXPECT_EQ(p[8], 64);   // TTL
    EXPECT_EQ(p[9], 50);   // ESP
    EXPECT_TRUE(ipv4_checksum_ok(p.data()));
    EXPECT_EQ(IpAddr::parse(kV4.outer_src).bytes[3], p[15]);
    EXPECT_EQ(IpAddr::parse(kV4.outer_dst).bytes[3], p[19]);
    if (i > 0) {
      EXPECT_EQ(be16(&p[4]), uint16_t(prev_id + 1));  // per-SA IPv4 ID counter
    }
    prev_id = be16(&p[4]);
    EXPECT_EQ(be32(&p[20]), spec.spi);
    EXPECT_EQ(be32(&p[24]), i + 1);                              // sequence number
    EXPECT_EQ(to_hex(&p[28], 8), to_hex(Bytes{0, 0, 0, 0, 0, 0, 0, uint8_t(i + 1)}));  // RFC 4106: IV = seq
    // GCM pads to 4: 68-byte inner + 2 -> 2 bytes of padding.
    EXPECT_EQ(p.size(), 20u + 8 + 8 + 72 + 16);
  }
}

TEST(EspOutbound, TunnelIpv6OuterHeaderHasHopLimit64TrafficClassAndLength) {
  const Suite& gcm = all_suites()[0];
  SaSpec spec = make_spec(gcm, Direction::Out, Mode::Tunnel, kV6.outer_src, kV6.outer_dst);
  OutboundSa out(spec, 0);
  const Bytes plain = make_udp_packet(kV4.inner_src, kV4.inner_dst, 10, 0x2b /* DSCP 10, CE */);
  PacketBuffer buf(plain);
  ASSERT_EQ(out.encapsulate(buf.packet(), 0), Reason::Ok);
  const Bytes p = buf.bytes();
  EXPECT_EQ(p[0] >> 4, 6);
  const uint8_t tc = uint8_t((p[0] & 15) << 4 | p[1] >> 4);
  EXPECT_EQ(tc, 0x2a);  // DSCP kept, CE -> ECT(0)
  EXPECT_EQ(be16(&p[4]), p.size() - 40);
  EXPECT_EQ(p[6], 50);
  EXPECT_EQ(p[7], 64);
}

uint16_t udp6_checksum(const Bytes& p) {
  uint32_t acc = 0;
  for (size_t i = 8; i < 40; i += 2) acc += be16(&p[i]);
  const size_t ulen = p.size() - 40;
  acc += uint32_t(ulen) + 17;
  for (size_t i = 40; i + 1 < p.size(); i += 2) acc += be16(&p[i]);
  if (ulen % 2) acc += uint32_t(p.back()) << 8;
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return uint16_t(~acc);
}

TEST(EspOutbound, NatTraversalUdpHeaderHasPortsLengthAndChecksumPerFamily) {
  const Suite& gcm = all_suites()[0];
  for (const Endpoints* e : {&kV4, &kV6}) {
    SaSpec spec = make_spec(gcm, Direction::Out, Mode::Tunnel, e->outer_src, e->outer_dst, 0x3000, false, true);
    spec.encap_sport = 40000;
    spec.encap_dport = 4500;
    OutboundSa out(spec, 0);
    PacketBuffer buf(make_udp_packet(kV4.inner_src, kV4.inner_dst, 33));
    ASSERT_EQ(out.encapsulate(buf.packet(), 0), Reason::Ok);
    const Bytes p = buf.bytes();
    const size_t ip = e == &kV4 ? 20 : 40;
    EXPECT_EQ(e == &kV4 ? p[9] : p[6], 17);
    EXPECT_EQ(be16(&p[ip]), 40000);
    EXPECT_EQ(be16(&p[ip + 2]), 4500);
    EXPECT_EQ(be16(&p[ip + 4]), p.size() - ip);
    EXPECT_EQ(be32(&p[ip + 8]), 0x3000u);
    if (e == &kV4) {
      EXPECT_EQ(be16(&p[ip + 6]), 0);  // RFC 3948: zero over IPv4
    } else {
      EXPECT_NE(be16(&p[ip + 6]), 0);  // mandatory over IPv6
      EXPECT_EQ(udp6_checksum(p), 0);  // and correct
    }
  }
}

TEST(EspOutbound, TransportIpv4KeepsOptionsAndFixesProtocolLengthAndChecksum) {
  const Suite& cbc = all_suites()[4];
  SaSpec spec = make_spec(cbc, Direction::Out, Mode::Transport, kV4.inner_src, kV4.inner_dst);
  OutboundSa out(spec, 0);
  InboundSa in(mirror(spec), 0);
  // IPv4 header with 4 bytes of options (NOP NOP NOP EOL).
  Bytes plain = make_udp_packet(kV4.inner_src, kV4.inner_dst, 21);
  plain.insert(plain.begin() + 20, {1, 1, 1, 0});
  plain[0] = 0x46;
  plain[3] = uint8_t(plain.size());
  fix_ipv4_checksum(plain.data());
  PacketBuffer buf(plain);
  ASSERT_EQ(out.encapsulate(buf.packet(), 0), Reason::Ok);
  const Bytes p = buf.bytes();
  EXPECT_EQ(p[0], 0x46);
  EXPECT_EQ(to_hex(&p[20], 4), "01010100");
  EXPECT_EQ(p[9], 50);
  EXPECT_EQ(be16(&p[2]), p.size());
  EXPECT_TRUE(ipv4_checksum_ok(p.data()));
  EXPECT_EQ(be32(&p[24]), spec.spi);
  // CBC: 8 (UDP) + 21 + 2 = 31 -> 32 bytes of ciphertext; ICV 16.
  EXPECT_EQ(p.size(), 24u + 8 + 16 + 32 + 16);
  ASSERT_EQ(in.decapsulate(buf.packet(), 0).reason, Reason::Ok);
  EXPECT_EQ(to_hex(buf.bytes()), to_hex(plain));
}

TEST(EspOutbound, TransportIpv6GoesAfterHopByHopAndDestinationOptionsAndFixesTheChain) {
  const Suite& gcm = all_suites()[0];
  SaSpec spec = make_spec(gcm, Direction::Out, Mode::Transport, kV6.inner_src, kV6.inner_dst);
  OutboundSa out(spec, 0);
  InboundSa in(mirror(spec), 0);
  Bytes plain = make_udp_packet(kV6.inner_src, kV6.inner_dst, 10);
  // Insert hop-by-hop (nh 60, PadN) and destination options (nh 17, PadN).
  const Bytes hbh = {60, 0, 1, 4, 0, 0, 0, 0};
  const Bytes dst = {17, 0, 1, 4, 0, 0, 0, 0};
  plain.insert(plain.begin() + 40, dst.begin(), dst.end());
  plain.insert(plain.begin() + 40, hbh.begin(), hbh.end());
  plain[6] = 0;  // hop-by-hop
  const size_t pl = plain.size() - 40;
  plain[4] = uint8_t(pl >> 8);
  plain[5] = uint8_t(pl);
  PacketBuffer buf(plain);
  ASSERT_EQ(out.encapsulate(buf.packet(), 0), Reason::Ok);
  const Bytes p = buf.bytes();
  EXPECT_EQ(p[6], 0);       // IPv6 -> hop-by-hop
  EXPECT_EQ(p[40], 60);     // hop-by-hop -> destination options
  EXPECT_EQ(p[48], 50);     // destination options -> ESP
  EXPECT_EQ(be32(&p[56]), spec.spi);
  EXPECT_EQ(be16(&p[4]), p.size() - 40);
  const auto r = in.decapsulate(buf.packet(), 0);
  ASSERT_EQ(r.reason, Reason::Ok);
  EXPECT_EQ(r.next_header, 17);
  EXPECT_EQ(to_hex(buf.bytes()), to_hex(plain));
}

TEST(EspOutbound, PaddingIsOneTwoThreeAndAlignsToTheBlockSize) {
  for (const Suite* suite : {&all_suites()[0], &all_suites()[4], &all_suites()[8]}) {
    SaSpec spec = make_spec(*suite, Direction::Out, Mode::Tunnel, kV4.outer_src, kV4.outer_dst);
    OutboundSa out(spec, 0);
    const uint32_t block = info(suite->enc).block_len > 4 ? info(suite->enc).block_len : 4;
    for (size_t size = 0; size < 40; ++size) {
      const Bytes plain = make_udp_packet(kV4.inner_src, kV4.inner_dst, size);
      PacketBuffer buf(plain);
      ASSERT_EQ(out.encapsulate(buf.packet(), 0), Reason::Ok);
      const uint32_t iv = suite->enc == EncAlg::Null ? 0 : info(suite->enc).iv_len;
      const uint32_t icv = info(suite->enc).aead ? 16 : info(suite->auth).icv_len;
      const uint32_t ct = buf.packet().len - 20 - 8 - iv - icv;
      EXPECT_EQ(ct % block, 0u) << suite->name << " " << size;
      EXPECT_LT(ct - plain.size() - 2, block) << suite->name << " " << size;
      if (suite->enc == EncAlg::Null) {  // plaintext on the wire: check the pad bytes themselves
        const uint8_t* t = buf.packet().data + 28 + plain.size();
        const uint32_t pad = ct - uint32_t(plain.size()) - 2;
        for (uint32_t i = 0; i < pad; ++i) EXPECT_EQ(t[i], i + 1);
        EXPECT_EQ(t[pad], pad);
        EXPECT_EQ(t[pad + 1], 4);
      }
    }
  }
}

TEST(EspOutbound, TooLittleHeadroomOrTailroomIsNoSpaceAndLeavesThePacketAndSequenceAlone) {
  const Suite& gcm = all_suites()[0];
  SaSpec spec = make_spec(gcm, Direction::Out, Mode::Tunnel, kV4.outer_src, kV4.outer_dst);
  OutboundSa out(spec, 0);
  const Bytes plain = make_udp_packet(kV4.inner_src, kV4.inner_dst, 10);
  PacketBuffer small_head(plain, 20 + 8 + 8 - 1, 64);
  EXPECT_EQ(out.encapsulate(small_head.packet(), 0), Reason::NoSpace);
  EXPECT_EQ(small_head.bytes(), plain);
  PacketBuffer small_tail(plain, 64, 0 + 2 + 16 - 1);  // 38 + 2 needs no padding
  EXPECT_EQ(out.encapsulate(small_tail.packet(), 0), Reason::NoSpace);
  EXPECT_EQ(out.next_seq(), 1u);
  EXPECT_EQ(out.counters().count(Reason::NoSpace), 2u);
  PacketBuffer exact(plain, 20 + 8 + 8, 0 + 2 + 16);
  EXPECT_EQ(out.encapsulate(exact.packet(), 0), Reason::Ok);
  EXPECT_TRUE(exact.guards_intact());
  EXPECT_EQ(exact.packet().headroom, 0u);
  EXPECT_EQ(exact.packet().tailroom, 0u);
}

TEST(EspOutbound, TransportRefusesAnotherFamilyAndIpv4Fragments) {
  const Suite& gcm = all_suites()[0];
  OutboundSa out(make_spec(gcm, Direction::Out, Mode::Transport, kV4.inner_src, kV4.inner_dst), 0);
  PacketBuffer v6(make_udp_packet(kV6.inner_src, kV6.inner_dst, 10));
  EXPECT_EQ(out.encapsulate(v6.packet(), 0), Reason::Unsupported);
  Bytes frag = make_udp_packet(kV4.inner_src, kV4.inner_dst, 10);
  frag[6] = 0x20;  // more fragments
  fix_ipv4_checksum(frag.data());
  PacketBuffer f(frag);
  EXPECT_EQ(out.encapsulate(f.packet(), 0), Reason::Unsupported);
}

TEST(EspOutbound, SharedSaGivesEveryThreadUniqueSequenceNumbers) {
  const Suite& gcm = all_suites()[0];
  SaSpec spec = make_spec(gcm, Direction::Out, Mode::Tunnel, kV4.outer_src, kV4.outer_dst);
  OutboundSa out(spec, 0, 4);
  constexpr int kThreads = 4, kPer = 2000;
  std::vector<std::vector<uint32_t>> seen(kThreads);
  std::vector<std::thread> threads;
  const Bytes plain = make_udp_packet(kV4.inner_src, kV4.inner_dst, 64);
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPer; ++i) {
        PacketBuffer buf(plain);
        if (out.encapsulate(buf.packet(), 0) == Reason::Ok) seen[t].push_back(be32(buf.packet().data + 24));
      }
    });
  for (auto& th : threads) th.join();
  std::vector<uint32_t> all;
  for (auto& v : seen) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  ASSERT_EQ(all.size(), size_t(kThreads * kPer));
  for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all[i], i + 1);
  EXPECT_EQ(out.counters().packets.load(), uint64_t(kThreads * kPer));
}

}  // namespace
}  // namespace ov2::esp::test
