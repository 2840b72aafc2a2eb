// Path MTU through the tunnel: OutboundSa::max_plaintext against real
// encapsulation, the ICMP/ICMPv6 too-big builders (checksums checked by the
// test's own RFC 1071 code and by scapy), IPv4 fragmentation before ESP
// (fragments reassemble to the packet), and the worker's token bucket.
#include "esp/path_mtu.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "dataplane/token_bucket.h"
#include "esp/esp_test_util.h"

namespace ov2::esp::test {
namespace {

// RFC 1071 verification, written independently of the engine: the one's
// complement sum over the data, checksum included, is all ones.
uint32_t add16(const uint8_t* p, size_t n, uint32_t acc = 0) {
  for (size_t i = 0; i + 1 < n; i += 2) acc += uint32_t(p[i]) * 256 + p[i + 1];
  if (n % 2) acc += uint32_t(p[n - 1]) * 256;
  return acc;
}
bool sums_to_ones(uint32_t acc) {
  while (acc > 0xffff) acc = (acc >> 16) + (acc & 0xffff);
  return acc == 0xffff;
}
bool icmp6_checksum_ok(const uint8_t* ip6) {
  const uint32_t len = be16(ip6 + 4);
  uint32_t acc = add16(ip6 + 8, 32) + len + 58;
  return sums_to_ones(add16(ip6 + 40, len, acc));
}

// A packet at offset 256 of a zeroed buffer (room in front for the error).
struct InPlace {
  explicit InPlace(const Bytes& pkt) : buf(256 + pkt.size() + 64, 0) {
    std::copy(pkt.begin(), pkt.end(), buf.begin() + 256);
  }
  uint8_t* ip() { return buf.data() + 256; }
  Bytes buf;
};

// scapy parses the message and recomputes both checksums; prints "ok" if they match.
void expect_scapy_agrees(const uint8_t* msg, uint32_t len, bool v6) {
  const std::string script = std::string(
                                 "import sys\n"
                                 "from scapy.all import IP, IPv6, ICMP, ICMPv6PacketTooBig, raw\n"
                                 "b = bytes.fromhex(sys.stdin.read().strip())\n") +
                             (v6 ? "p = IPv6(b); q = p.copy(); del q[ICMPv6PacketTooBig].cksum\n"
                                   "ok = raw(q) == b and p[ICMPv6PacketTooBig].mtu >= 0\n"
                                 : "p = IP(b); q = p.copy(); del q[IP].chksum; del q[ICMP].chksum\n"
                                   "ok = raw(q) == b and p[ICMP].type == 3 and p[ICMP].code == 4\n") +
                             "print('ok' if ok else 'mismatch ' + raw(q).hex())\n";
  ProcessResult r = run_process({"/usr/bin/python3", "-c", script}, to_hex(msg, len));
  ASSERT_EQ(r.status, 0) << "python3-scapy missing? " << r.err;
  EXPECT_EQ(r.out, "ok\n");
}

TEST(PathMtu, TunnelMaxPlaintextIsExactForEverySuiteFamilyAndNatT) {
  for (const Suite& suite : all_suites())
    for (const char* outer : {"192.0.2.1", "2001:db8::1"})
      for (bool natt : {false, true})
        for (uint32_t mtu : {1500u, 1400u, 1333u, 1280u}) {
          const bool v6 = std::strchr(outer, ':') != nullptr;
          SCOPED_TRACE(std::string(suite.name) + " " + outer + (natt ? " natt" : "") + " mtu " + std::to_string(mtu));
          SaSpec spec = make_spec(suite, Direction::Out, Mode::Tunnel, outer, v6 ? "2001:db8::2" : "192.0.2.2", 0x1000,
                                  false, natt);
          OutboundSa sa(spec);
          const uint32_t fits = sa.max_plaintext(mtu);
          ASSERT_GT(fits, 1000u);
          EXPECT_GE(fits + max_overhead(spec), mtu) << "never below the worst case";
          for (uint32_t len : {fits, fits + 1}) {
            PacketBuffer buf(make_udp_packet("10.1.0.1", "10.2.0.1", len - 28));
            ASSERT_EQ(sa.encapsulate(buf.packet(), 1), Reason::Ok);
            if (len == fits)
              EXPECT_LE(buf.packet().len, mtu) << "the largest packet that fits";
            else
              EXPECT_GT(buf.packet().len, mtu) << "one byte more does not fit";
          }
        }
}

TEST(PathMtu, TransportMaxPlaintextFitsWhateverTheHeaderLength) {
  for (const Suite& suite : all_suites()) {
    SCOPED_TRACE(suite.name);
    OutboundSa sa(make_spec(suite, Direction::Out, Mode::Transport, "10.1.0.1", "10.2.0.1"));
    const uint32_t fits = sa.max_plaintext(1500);
    for (uint32_t options = 0; options <= 40; options += 4) {
      // An IPv4 header with `options` bytes of NOP options: ESP goes after it.
      Bytes pkt = make_udp_packet("10.1.0.1", "10.2.0.1", fits - 28 - options);
      pkt.insert(pkt.begin() + 20, options, uint8_t{1});
      pkt[0] = uint8_t(0x45 + options / 4);
      pkt[2] = uint8_t(pkt.size() >> 8);
      pkt[3] = uint8_t(pkt.size());
      fix_ipv4_checksum(pkt.data());
      PacketBuffer buf(pkt);
      ASSERT_EQ(sa.encapsulate(buf.packet(), 1), Reason::Ok);
      EXPECT_LE(buf.packet().len, 1500u) << options << " option bytes";
    }
  }
}

TEST(PathMtu, BundleMaxPlaintextIsTheTransportSaInsideWhatTheTunnelSaCarries) {
  for (const Suite& suite : all_suites()) {
    SCOPED_TRACE(suite.name);
    OutboundSa transport(make_spec(suite, Direction::Out, Mode::Transport, "10.1.0.1", "10.2.0.1"));
    OutboundSa tunnel(make_spec(suite, Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x2000));
    const uint32_t fits = transport.max_plaintext(tunnel.max_plaintext(1500));
    PacketBuffer buf(make_udp_packet("10.1.0.1", "10.2.0.1", fits - 28));
    ASSERT_EQ(encapsulate_bundle(transport, tunnel, buf.packet(), 1), Reason::Ok);
    EXPECT_LE(buf.packet().len, 1500u);
    EXPECT_GT(buf.packet().len + 2 * 16, 1500u) << "not far below: at most a block of slack per layer";
  }
}

TEST(PathMtu, MaxPlaintextIsZeroWhenNothingFits) {
  OutboundSa sa(make_spec(all_suites()[0], Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2"));
  EXPECT_EQ(sa.max_plaintext(40), 0u);
  EXPECT_EQ(sa.max_plaintext(0), 0u);
}

TEST(PathMtu, FragNeededQuotesHeaderAndDataUpTo576BytesFromTheDestinationWithGoodChecksums) {
  Bytes pkt = make_udp_packet("10.1.0.1", "10.2.0.1", 1472, 0, true);
  InPlace b(pkt);
  const IcmpError e = icmp4_frag_needed(b.ip(), static_cast<uint32_t>(pkt.size()), 1438);
  ASSERT_TRUE(e);
  ASSERT_EQ(e.data, b.ip() - kIcmp4ErrorPrefix);
  ASSERT_EQ(e.len, 576u) << "RFC 1812: as much as fits in 576 bytes";
  const uint8_t* m = e.data;
  EXPECT_EQ(m[0], 0x45);
  EXPECT_EQ(be16(m + 2), 576u);
  EXPECT_EQ(m[9], 1) << "ICMP";
  EXPECT_EQ(be32(m + 12), 0x0a020001u) << "source: the packet's destination";
  EXPECT_EQ(be32(m + 16), 0x0a010001u) << "destination: the packet's source";
  EXPECT_TRUE(ipv4_checksum_ok(m));
  EXPECT_EQ(m[20], 3);
  EXPECT_EQ(m[21], 4);
  EXPECT_EQ(be16(m + 24), 0u);
  EXPECT_EQ(be16(m + 26), 1438u) << "next-hop MTU";
  EXPECT_TRUE(sums_to_ones(add16(m + 20, 576 - 20))) << "ICMP checksum";
  EXPECT_EQ(0, std::memcmp(m + 28, pkt.data(), 548)) << "the quote is the packet's first bytes";
  expect_scapy_agrees(m, e.len, false);
}

TEST(PathMtu, FragNeededForAShortPacketQuotesItWhole) {
  Bytes pkt = make_udp_packet("10.1.0.1", "10.2.0.1", 100, 0, true);
  InPlace b(pkt);
  const IcmpError e = icmp4_frag_needed(b.ip(), static_cast<uint32_t>(pkt.size()), 68);
  ASSERT_TRUE(e);
  EXPECT_EQ(e.len, 28u + pkt.size());
  EXPECT_TRUE(sums_to_ones(add16(e.data + 20, e.len - 20)));
  expect_scapy_agrees(e.data, e.len, false);
}

TEST(PathMtu, NoFragNeededAboutWhatRfc1122Forbids) {
  auto refused = [](Bytes pkt, const char* why) {
    fix_ipv4_checksum(pkt.data());
    InPlace b(pkt);
    const Bytes before = b.buf;
    EXPECT_FALSE(icmp4_frag_needed(b.ip(), static_cast<uint32_t>(pkt.size()), 1400)) << why;
    EXPECT_EQ(b.buf, before) << why << ": nothing written";
  };
  Bytes base = make_udp_packet("10.1.0.1", "10.2.0.1", 1472, 0, true);
  Bytes p = base;
  p[7] = 1;  // fragment offset 8
  refused(p, "non-first fragment");
  p = base;
  p[16] = 224;
  refused(p, "multicast destination");
  p = base;
  std::memset(p.data() + 16, 255, 4);
  refused(p, "broadcast destination");
  p = base;
  std::memset(p.data() + 12, 0, 4);
  refused(p, "unspecified source");
  p = base;
  p[12] = 239;
  refused(p, "multicast source");
  p = base;
  p[9] = 1;
  p[20] = 3;  // ICMP destination unreachable
  refused(p, "an ICMP error");
  refused(Bytes(base.begin(), base.begin() + 27), "shorter than header + 8");
  p = base;
  p[9] = 1;
  p[20] = 8;  // echo request: answered
  fix_ipv4_checksum(p.data());
  InPlace ok(p);
  EXPECT_TRUE(icmp4_frag_needed(ok.ip(), static_cast<uint32_t>(p.size()), 1400));
}

TEST(PathMtu, PacketTooBigQuotesAsMuchAsFitsIn1280BytesWithAGoodChecksum) {
  Bytes pkt = make_udp_packet("fd00:11::1", "fd00:12::1", 1452);
  InPlace b(pkt);
  const IcmpError e = icmp6_packet_too_big(b.ip(), static_cast<uint32_t>(pkt.size()), 1406);
  ASSERT_TRUE(e);
  ASSERT_EQ(e.data, b.ip() - kIcmp6ErrorPrefix);
  ASSERT_EQ(e.len, 1280u);
  const uint8_t* m = e.data;
  EXPECT_EQ(m[0] >> 4, 6);
  EXPECT_EQ(be16(m + 4), 1240u) << "payload length";
  EXPECT_EQ(m[6], 58);
  EXPECT_EQ(m[7], 255);
  EXPECT_EQ(0, std::memcmp(m + 8, pkt.data() + 24, 16)) << "source: the packet's destination";
  EXPECT_EQ(0, std::memcmp(m + 24, pkt.data() + 8, 16)) << "destination: the packet's source";
  EXPECT_EQ(m[40], 2);
  EXPECT_EQ(m[41], 0);
  EXPECT_EQ(be32(m + 44), 1406u);
  EXPECT_TRUE(icmp6_checksum_ok(m));
  EXPECT_EQ(0, std::memcmp(m + 48, pkt.data(), 1232));
  expect_scapy_agrees(m, e.len, true);
}

TEST(PathMtu, NoPacketTooBigAboutAnIcmpv6ErrorOrFromAMulticastSource) {
  Bytes err = make_udp_packet("fd00:11::1", "fd00:12::1", 1452);
  err[6] = 58;
  err[40] = 1;  // destination unreachable
  InPlace a(err);
  EXPECT_FALSE(icmp6_packet_too_big(a.ip(), static_cast<uint32_t>(err.size()), 1280));
  err[40] = 128;  // echo request: answered
  InPlace a2(err);
  EXPECT_TRUE(icmp6_packet_too_big(a2.ip(), static_cast<uint32_t>(err.size()), 1280));
  Bytes mc = make_udp_packet("fd00:11::1", "fd00:12::1", 1452);
  mc[8] = 0xff;
  InPlace c(mc);
  EXPECT_FALSE(icmp6_packet_too_big(c.ip(), static_cast<uint32_t>(mc.size()), 1280));
  Bytes any = make_udp_packet("fd00:11::1", "fd00:12::1", 1452);
  std::memset(any.data() + 8, 0, 16);
  InPlace d(any);
  EXPECT_FALSE(icmp6_packet_too_big(d.ip(), static_cast<uint32_t>(any.size()), 1280));
}

// Reassembles fragments (RFC 791) by offset; checks each header.
Bytes reassemble(const std::vector<Bytes>& frags, uint32_t mtu, bool last_has_mf = false) {
  Bytes payload;
  for (size_t i = 0; i < frags.size(); ++i) {
    const Bytes& f = frags[i];
    EXPECT_LE(f.size(), mtu);
    EXPECT_TRUE(ipv4_checksum_ok(f.data())) << "fragment " << i;
    EXPECT_EQ(be16(f.data() + 2), f.size());
    const uint32_t ihl = (f[0] & 15) * 4u;
    const uint32_t off = (be16(f.data() + 6) & 0x1fff) * 8u;
    const bool mf = be16(f.data() + 6) & 0x2000;
    EXPECT_EQ(mf, i + 1 < frags.size() || last_has_mf) << "fragment " << i;
    if (i + 1 < frags.size()) {
      EXPECT_EQ((f.size() - ihl) % 8, 0u) << "fragment " << i;
    }
    EXPECT_EQ(off, payload.size()) << "fragment " << i;
    payload.insert(payload.end(), f.begin() + ihl, f.end());
  }
  return payload;
}

TEST(PathMtu, Ipv4FragmentsCarryThePacketInEightByteMultiplesUnderTheMtu) {
  Bytes pkt = make_udp_packet("10.1.0.1", "10.2.0.1", 2972);  // 3000 bytes, no DF
  for (uint32_t mtu : {1446u, 1400u, 576u, 68u}) {
    SCOPED_TRACE(mtu);
    const uint32_t n = ipv4_fragment_count(pkt.data(), static_cast<uint32_t>(pkt.size()), mtu);
    const uint32_t chunk = (mtu - 20) / 8 * 8;
    ASSERT_EQ(n, (2980 + chunk - 1) / chunk);
    Bytes copy = pkt;
    std::vector<Bytes> frags(n);
    for (uint32_t i = n; i-- > 0;) {  // the worker's order: fragment 0 last, in place
      uint8_t* out = i == 0 ? copy.data() : (frags[i].resize(mtu), frags[i].data());
      const uint32_t len = ipv4_fragment(copy.data(), mtu, i, out);
      frags[i].assign(out, out + len);
    }
    EXPECT_EQ(reassemble(frags, mtu), Bytes(pkt.begin() + 20, pkt.end()));
    for (const Bytes& f : frags) EXPECT_EQ(0, std::memcmp(f.data() + 4, pkt.data() + 4, 2)) << "same ID";
  }
}

TEST(PathMtu, AFragmentIsFragmentedFurtherWithItsOffsetAndMoreFragmentsFlag) {
  Bytes pkt = make_udp_packet("10.1.0.1", "10.2.0.1", 1472);
  pkt[6] = 0x20 | 0x00;  // MF, offset 1480/8 = 185
  pkt[7] = 185;
  fix_ipv4_checksum(pkt.data());
  const uint32_t n = ipv4_fragment_count(pkt.data(), static_cast<uint32_t>(pkt.size()), 1446);
  ASSERT_EQ(n, 2u);
  std::vector<Bytes> frags(n);
  for (uint32_t i = 0; i < n; ++i) {
    frags[i].resize(1446);
    frags[i].resize(ipv4_fragment(pkt.data(), 1446, i, frags[i].data()));
  }
  EXPECT_EQ((be16(frags[0].data() + 6) & 0x1fff), 185u);
  EXPECT_EQ((be16(frags[1].data() + 6) & 0x1fff), 185u + (1446u - 20) / 8);
  EXPECT_TRUE(be16(frags[1].data() + 6) & 0x2000) << "the piece of a non-last fragment keeps MF";
}

TEST(PathMtu, DfPacketsAndNonsenseAreNotFragmented) {
  Bytes df = make_udp_packet("10.1.0.1", "10.2.0.1", 1472, 0, true);
  EXPECT_EQ(ipv4_fragment_count(df.data(), static_cast<uint32_t>(df.size()), 1400), 0u);
  Bytes pkt = make_udp_packet("10.1.0.1", "10.2.0.1", 1472);
  EXPECT_EQ(ipv4_fragment_count(pkt.data(), 100, 1400), 0u) << "total length beyond the buffer";
  EXPECT_EQ(ipv4_fragment_count(pkt.data(), static_cast<uint32_t>(pkt.size()), 27), 0u) << "no 8 bytes of payload";
  Bytes v6 = make_udp_packet("fd00:11::1", "fd00:12::1", 1452);
  EXPECT_EQ(ipv4_fragment_count(v6.data(), static_cast<uint32_t>(v6.size()), 1400), 0u);
}

TEST(PathMtu, OptionsWithoutTheCopyFlagBecomeNopsAfterTheFirstFragment) {
  Bytes pkt = make_udp_packet("10.1.0.1", "10.2.0.1", 1472);
  // Record route (7, not copied, 7 bytes) + end; router alert (148, copied, 4 bytes).
  const Bytes opts = {7, 7, 4, 0, 0, 0, 0, 148, 4, 0, 0, 0};
  pkt.insert(pkt.begin() + 20, opts.begin(), opts.end());
  pkt[0] = 0x48;
  pkt[2] = uint8_t(pkt.size() >> 8);
  pkt[3] = uint8_t(pkt.size());
  fix_ipv4_checksum(pkt.data());
  Bytes f0(1400), f1(1400);
  f1.resize(ipv4_fragment(pkt.data(), 1400, 1, f1.data()));
  f0.resize(ipv4_fragment(pkt.data(), 1400, 0, f0.data()));
  EXPECT_EQ(Bytes(f0.begin() + 20, f0.begin() + 32), opts) << "the first fragment keeps every option";
  EXPECT_EQ(Bytes(f1.begin() + 20, f1.begin() + 32), Bytes({1, 1, 1, 1, 1, 1, 1, 148, 4, 0, 0, 0}));
  EXPECT_TRUE(ipv4_checksum_ok(f1.data()));
}

TEST(PathMtuTokenBucket, AllowsTheBurstThenTheRate) {
  TokenBucket b(1000, 50);  // the worker's defaults
  const uint64_t t0 = 5'000'000'000ull;
  int n = 0;
  while (b.take(t0)) ++n;
  EXPECT_EQ(n, 50) << "a full bucket at the start";
  EXPECT_FALSE(b.take(t0 + 999'999)) << "one token per millisecond";
  EXPECT_TRUE(b.take(t0 + 1'000'000));
  EXPECT_FALSE(b.take(t0 + 1'000'000));
  n = 0;
  for (uint64_t t = t0 + 2'000'000; t < t0 + 102'000'000; t += 100'000) n += b.take(t);
  EXPECT_EQ(n, 100) << "1000 a second over 100 ms";
  n = 0;
  while (b.take(t0 + 10'000'000'000ull)) ++n;
  EXPECT_EQ(n, 50) << "never more than the burst saved up";
  TokenBucket off(0, 50);
  EXPECT_FALSE(off.take(t0)) << "rate 0: nothing";
}

}  // namespace
}  // namespace ov2::esp::test
