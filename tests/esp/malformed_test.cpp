// Every malformed inbound case gives its documented Reason and NDIS status
// and never reads outside the packet (truncation tests use exact-size heap
// buffers, so AddressSanitizer sees any overread in the OV2_SANITIZE build).
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <cstring>
#include <memory>

#include "esp/esp_crypto.h"
#include "esp/esp_test_util.h"
#include "ov2_abi.h"

namespace ov2::esp::test {
namespace {

struct Config {
  const char* name;
  size_t suite;
  Mode mode;
  bool v6;
  bool natt;
};
const Config kConfigs[] = {
    {"gcm128-tunnel-v4", 0, Mode::Tunnel, false, false},
    {"chacha-transport-v6", 3, Mode::Transport, true, false},
    {"cbc128sha256-tunnel-v6-natt", 4, Mode::Tunnel, true, true},
    {"cbc256sha256-transport-v4", 6, Mode::Transport, false, false},
    {"nullsha1-tunnel-v4-natt", 9, Mode::Tunnel, false, true},
    {"gmac128-transport-v4-natt", 10, Mode::Transport, false, true},
};

SaSpec spec_for(const Config& c, Direction d) {
  return make_spec(all_suites()[c.suite], d, c.mode, c.v6 ? "2001:db8::1" : "192.0.2.1",
                   c.v6 ? "2001:db8::2" : "192.0.2.2", 0x7777, false, c.natt);
}

Bytes sealed_packet(const Config& c, size_t size = 50) {
  OutboundSa out(spec_for(c, Direction::Out), 0);
  PacketBuffer buf(c.v6 ? make_udp_packet("2001:db8::1", "2001:db8::2", size)
                        : make_udp_packet("192.0.2.1", "192.0.2.2", size));
  EXPECT_EQ(out.encapsulate(buf.packet(), 0), Reason::Ok);
  return buf.bytes();
}

// Decapsulates `len` bytes held in an exact-size heap allocation.
InboundSa::Result open_exact(InboundSa& in, const uint8_t* bytes, size_t len) {
  std::unique_ptr<uint8_t[]> mem(new uint8_t[len ? len : 1]);
  if (len) std::memcpy(mem.get(), bytes, len);
  Packet p{mem.get(), uint32_t(len), 0, 0};
  return in.decapsulate(p, 0);
}

void set16(uint8_t* p, size_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}

// Makes the IP (and UDP) length fields agree with a buffer cut to `len`.
void make_lengths_consistent(Bytes& p, size_t len, bool natt) {
  const bool v6 = (p[0] >> 4) == 6;
  const size_t hl = v6 ? 40 : 20;
  if (v6) set16(&p[4], len - 40);
  else {
    set16(&p[2], len);
    fix_ipv4_checksum(p.data());
  }
  if (natt && len >= hl + 8) set16(&p[hl + 4], len - hl);
}

TEST(EspMalformed, TruncatedAtEveryOffsetIsTruncatedAndReadsNothingBeyond) {
  for (const Config& c : kConfigs) {
    SCOPED_TRACE(c.name);
    const Bytes wire = sealed_packet(c);
    InboundSa in(spec_for(c, Direction::In), 0);
    for (size_t cut = 0; cut < wire.size(); ++cut) {
      const auto r = open_exact(in, wire.data(), cut);
      ASSERT_EQ(r.reason, Reason::Truncated) << "cut at " << cut;
      EXPECT_EQ(r.crypto_status, uint32_t(CRYPTO_INVALID_PACKET_SYNTAX));
    }
    EXPECT_EQ(in.counters().count(Reason::Truncated), wire.size());
    EXPECT_EQ(open_exact(in, wire.data(), wire.size()).reason, Reason::Ok);
  }
}

TEST(EspMalformed, CutPacketsWithConsistentLengthFieldsFailAtTheFirstCheckThatCanSeeIt) {
  for (const Config& c : kConfigs) {
    SCOPED_TRACE(c.name);
    const Bytes wire = sealed_packet(c);
    const size_t hl = c.v6 ? 40 : 20, udp = c.natt ? 8 : 0;
    const Suite& s = all_suites()[c.suite];
    const size_t iv = info(s.enc).aead ? 8 : (s.enc == EncAlg::Null ? info(s.auth).iv_len : info(s.enc).iv_len);
    const size_t icv = info(s.enc).aead ? 16 : info(s.auth).icv_len;
    const bool cbc = s.enc == EncAlg::AesCbc128 || s.enc == EncAlg::AesCbc256;
    for (size_t cut = hl; cut < wire.size(); ++cut) {
      Bytes p(wire.begin(), wire.begin() + long(cut));
      make_lengths_consistent(p, cut, c.natt);
      InboundSa in(spec_for(c, Direction::In), 0);
      const auto r = open_exact(in, p.data(), p.size());
      Reason want;
      if (cut < hl + udp) want = Reason::Truncated;
      else if (cut - hl - udp < 8 + iv + icv + 2) want = Reason::Truncated;
      else if (cbc && (cut - hl - udp - 8 - iv - icv) % 16 != 0) want = Reason::BadLength;
      else want = Reason::AuthFailed;
      ASSERT_EQ(r.reason, want) << "cut at " << cut << ": " << reason_name(r.reason);
    }
  }
}

TEST(EspMalformed, EveryFlippedByteAfterTheEspHeaderFailsAuthentication) {
  for (const Config& c : kConfigs) {
    SCOPED_TRACE(c.name);
    const Bytes wire = sealed_packet(c, 30);
    const size_t esp = (c.v6 ? 40 : 20) + (c.natt ? 8 : 0);
    for (size_t i = esp + 8; i < wire.size(); ++i) {
      Bytes bad = wire;
      bad[i] ^= 0x40;
      InboundSa in(spec_for(c, Direction::In), 0);
      const auto r = open_exact(in, bad.data(), bad.size());
      ASSERT_EQ(r.reason, Reason::AuthFailed) << "byte " << i;
      EXPECT_EQ(r.crypto_status, uint32_t(c.mode == Mode::Tunnel ? CRYPTO_TUNNEL_ESP_AUTH_FAILED
                                                                  : CRYPTO_TRANSPORT_ESP_AUTH_FAILED));
      EXPECT_TRUE(r.crypto_done);
      EXPECT_EQ(in.highest_seq(), 0u);  // nothing recorded
    }
    // A flipped sequence number authenticates against another number: AuthFailed too.
    Bytes bad = wire;
    bad[esp + 7] ^= 0x02;
    InboundSa in(spec_for(c, Direction::In), 0);
    EXPECT_EQ(open_exact(in, bad.data(), bad.size()).reason, Reason::AuthFailed);
  }
}

TEST(EspMalformed, WrongSpiIsNotCheckedAndCarriesNoOffloadInformation) {
  const Config& c = kConfigs[0];
  Bytes wire = sealed_packet(c);
  wire[20 + 3] ^= 1;
  InboundSa in(spec_for(c, Direction::In), 0);
  const auto r = open_exact(in, wire.data(), wire.size());
  EXPECT_EQ(r.reason, Reason::WrongSpi);
  EXPECT_FALSE(r.crypto_done);
  EXPECT_EQ(rx_info_for(r), 0u);
  EXPECT_EQ(in.counters().count(Reason::WrongSpi), 1u);
}

TEST(EspMalformed, BadIpAndUdpLengthFieldsAreBadLength) {
  const Config& natt = kConfigs[4];  // IPv4 + NAT-T
  const Bytes wire = sealed_packet(natt);
  InboundSa in(spec_for(natt, Direction::In), 0);
  Bytes ihl = wire;
  ihl[0] = 0x44;  // IHL 16 bytes
  EXPECT_EQ(open_exact(in, ihl.data(), ihl.size()).reason, Reason::BadLength);
  Bytes tot = wire;
  set16(&tot[2], 19);  // total length shorter than the header
  EXPECT_EQ(open_exact(in, tot.data(), tot.size()).reason, Reason::BadLength);
  Bytes ulen = wire;
  set16(&ulen[24], wire.size() - 20 - 1);
  const auto r = open_exact(in, ulen.data(), ulen.size());
  EXPECT_EQ(r.reason, Reason::BadLength);
  EXPECT_EQ(r.crypto_status, uint32_t(CRYPTO_INVALID_PACKET_SYNTAX));
  // Link-layer padding after the IP packet is ignored.
  Bytes padded = wire;
  padded.insert(padded.end(), 6, 0);
  EXPECT_EQ(open_exact(in, padded.data(), padded.size()).reason, Reason::Ok);
}

TEST(EspMalformed, PacketsOutsideTheSasShapeAreUnsupportedAndNotChecked) {
  // NAT-T SA, plain ESP packet; plain SA, NAT-T packet; wrong family; fragment; IKE marker.
  const Bytes natt_wire = sealed_packet(kConfigs[4]);
  const Bytes plain_wire = sealed_packet(kConfigs[0]);
  InboundSa natt_in(spec_for(kConfigs[4], Direction::In), 0);
  InboundSa plain_in(spec_for(kConfigs[0], Direction::In), 0);
  const auto a = open_exact(natt_in, plain_wire.data(), plain_wire.size());
  EXPECT_EQ(a.reason, Reason::Unsupported);
  EXPECT_FALSE(a.crypto_done);
  EXPECT_EQ(open_exact(plain_in, natt_wire.data(), natt_wire.size()).reason, Reason::Unsupported);
  const Bytes v6_wire = sealed_packet(kConfigs[1]);
  EXPECT_EQ(open_exact(plain_in, v6_wire.data(), v6_wire.size()).reason, Reason::Unsupported);
  Bytes frag = plain_wire;
  frag[6] |= 0x20;
  fix_ipv4_checksum(frag.data());
  EXPECT_EQ(open_exact(plain_in, frag.data(), frag.size()).reason, Reason::Unsupported);
  Bytes ike = natt_wire;
  std::memset(&ike[28], 0, 4);  // non-ESP marker
  EXPECT_EQ(open_exact(natt_in, ike.data(), ike.size()).reason, Reason::Unsupported);
}

// ---- authenticated packets with a bad inside ---------------------------------

// Builds IPv4|ESP with `plaintext` (payload || padding || pad length || next
// header, exactly as given) sealed by the engine's own crypto for `spec`.
Bytes craft(const SaSpec& spec, const Bytes& plaintext, uint64_t seq, uint8_t outer_tos = 0) {
  CryptoState crypto(spec, true, 1);
  Bytes p(20 + 8 + crypto.iv_len() + plaintext.size() + crypto.icv_len());
  p[0] = 0x45;
  p[1] = outer_tos;
  set16(&p[2], p.size());
  p[8] = 64;
  p[9] = 50;
  std::memcpy(&p[12], spec.src.bytes.data(), 4);
  std::memcpy(&p[16], spec.dst.bytes.data(), 4);
  fix_ipv4_checksum(p.data());
  uint8_t* esp = &p[20];
  esp[0] = uint8_t(spec.spi >> 24);
  esp[1] = uint8_t(spec.spi >> 16);
  esp[2] = uint8_t(spec.spi >> 8);
  esp[3] = uint8_t(spec.spi);
  esp[4] = uint8_t(seq >> 24);
  esp[5] = uint8_t(seq >> 16);
  esp[6] = uint8_t(seq >> 8);
  esp[7] = uint8_t(seq);
  uint8_t* ct = esp + 8 + crypto.iv_len();
  std::memcpy(ct, plaintext.data(), plaintext.size());
  EXPECT_TRUE(crypto.seal({spec.spi, seq, spec.esn}, esp, esp + 8, ct, uint32_t(plaintext.size()),
                          ct + plaintext.size()));
  return p;
}

Bytes with_trailer(Bytes payload, const Bytes& pad, uint8_t nh) {
  payload.insert(payload.end(), pad.begin(), pad.end());
  payload.push_back(uint8_t(pad.size()));
  payload.push_back(nh);
  return payload;
}

struct Crafted {
  const char* what;
  Mode mode;
  Bytes plaintext;
  Reason want;
  uint32_t want_status;
};

TEST(EspMalformed, AuthenticatedButMalformedInsidesGiveTheirReasonAndStatus) {
  const Bytes inner4 = make_udp_packet("10.0.0.1", "10.0.0.2", 9);   // 37 bytes
  const Bytes inner6 = make_udp_packet("fd00::1", "fd00::2", 10);    // 58 bytes
  const Bytes l4(inner4.begin() + 20, inner4.end());                 // UDP header + data
  Bytes long_claim = inner4;
  set16(&long_claim[2], inner4.size() + 4);
  fix_ipv4_checksum(long_claim.data());
  const std::vector<Crafted> cases = {
      {"pad bytes not 1,2,3", Mode::Tunnel, with_trailer(inner4, {1, 3, 3}, 4), Reason::BadPadding, CRYPTO_INVALID_PACKET_SYNTAX},
      {"pad bytes zero", Mode::Tunnel, with_trailer(Bytes(inner4.begin(), inner4.end() - 1), {0, 0, 0, 0}, 4), Reason::BadPadding, CRYPTO_INVALID_PACKET_SYNTAX},
      {"pad length beyond payload", Mode::Tunnel, Bytes{1, 2, 200, 4}, Reason::BadPadding, CRYPTO_INVALID_PACKET_SYNTAX},
      {"tunnel next header tcp", Mode::Tunnel, with_trailer(inner4, {1, 2, 3}, 6), Reason::BadNextHeader, CRYPTO_INVALID_PROTOCOL},
      {"tunnel nh 4 carrying ipv6", Mode::Tunnel, with_trailer(inner6, {}, 4), Reason::InnerMismatch, CRYPTO_INVALID_PROTOCOL},
      {"tunnel nh 41 carrying ipv4", Mode::Tunnel, with_trailer(inner4, {1, 2, 3}, 41), Reason::InnerMismatch, CRYPTO_INVALID_PROTOCOL},
      {"tunnel inner longer than payload", Mode::Tunnel, with_trailer(long_claim, {1, 2, 3}, 4), Reason::InnerMismatch, CRYPTO_INVALID_PROTOCOL},
      {"tunnel inner shorter than a header", Mode::Tunnel, with_trailer(Bytes(inner4.begin(), inner4.begin() + 10), {}, 4), Reason::InnerMismatch, CRYPTO_INVALID_PROTOCOL},
      {"transport next header 4", Mode::Transport, with_trailer(inner4, {1, 2, 3}, 4), Reason::BadNextHeader, CRYPTO_INVALID_PROTOCOL},
      {"transport next header 41", Mode::Transport, with_trailer(inner6, {}, 41), Reason::BadNextHeader, CRYPTO_INVALID_PROTOCOL},
      {"dummy packet", Mode::Tunnel, with_trailer(Bytes(10, 0xab), {}, 59), Reason::DummyPacket, CRYPTO_SUCCESS},
      {"transport udp is fine", Mode::Transport, with_trailer(l4, {1}, 17), Reason::Ok, CRYPTO_SUCCESS},
  };
  for (const size_t suite : {size_t(0), size_t(4), size_t(8)}) {  // GCM, CBC+HMAC, NULL+HMAC
    for (const Crafted& c : cases) {
      SCOPED_TRACE(std::string(all_suites()[suite].name) + ": " + c.what);
      Bytes pt = c.plaintext;
      if (suite == 4 && pt.size() % 16) continue;  // CBC needs whole blocks; covered by the GCM/NULL runs
      SaSpec s = make_spec(all_suites()[suite], Direction::In, c.mode, "192.0.2.1", "192.0.2.2", 0x99);
      InboundSa in(s, 0);
      const Bytes wire = craft(s, pt, 1);
      const auto r = open_exact(in, wire.data(), wire.size());
      EXPECT_EQ(r.reason, c.want) << reason_name(r.reason);
      EXPECT_EQ(r.crypto_status, c.want_status);
      EXPECT_TRUE(r.crypto_done);
      EXPECT_EQ(in.highest_seq(), 1u);  // authenticated: the sequence number is spent
      EXPECT_EQ(in.counters().count(c.want), 1u);
    }
  }
}

TEST(EspMalformed, CbcBlockAlignedMalformedInsidesToo) {
  const Bytes inner4 = make_udp_packet("10.0.0.1", "10.0.0.2", 9);  // 37 bytes; +9 pad +2 = 48
  SaSpec s = make_spec(all_suites()[4], Direction::In, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x99);
  struct C {
    Bytes pt;
    Reason want;
  };
  const C cases[] = {{with_trailer(inner4, {1, 2, 3, 4, 5, 6, 7, 8, 9}, 4), Reason::Ok},
                     {with_trailer(inner4, {1, 2, 3, 4, 5, 6, 7, 8, 8}, 4), Reason::BadPadding},
                     {with_trailer(inner4, {1, 2, 3, 4, 5, 6, 7, 8, 9}, 17), Reason::BadNextHeader}};
  for (const C& c : cases) {
    ASSERT_EQ(c.pt.size() % 16, 0u);
    InboundSa in(s, 0);
    const Bytes wire = craft(s, c.pt, 3);
    EXPECT_EQ(open_exact(in, wire.data(), wire.size()).reason, c.want);
  }
}

TEST(EspMalformed, TunnelTfcPaddingAfterTheInnerPacketIsDropped) {
  const Bytes inner4 = make_udp_packet("10.0.0.1", "10.0.0.2", 9);
  Bytes with_tfc = inner4;
  with_tfc.insert(with_tfc.end(), 11, 0);  // RFC 4303 §2.7 TFC padding
  SaSpec s = make_spec(all_suites()[0], Direction::In, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x99);
  InboundSa in(s, 0);
  const Bytes wire = craft(s, with_trailer(with_tfc, {1}, 4), 1);
  PacketBuffer buf(wire);
  ASSERT_EQ(in.decapsulate(buf.packet(), 0).reason, Reason::Ok);
  EXPECT_EQ(to_hex(buf.bytes()), to_hex(inner4));
}

TEST(EspEcn, DecapsulationFollowsRfc6040) {
  struct C {
    uint8_t inner_ecn, outer_ecn;
    Reason want;
    uint8_t result_ecn;
  };
  const C cases[] = {
      {0, 0, Reason::Ok, 0}, {0, 1, Reason::Ok, 0}, {0, 2, Reason::Ok, 0}, {0, 3, Reason::EcnDrop, 0},
      {2, 0, Reason::Ok, 2}, {2, 1, Reason::Ok, 1}, {2, 2, Reason::Ok, 2}, {2, 3, Reason::Ok, 3},
      {1, 0, Reason::Ok, 1}, {1, 2, Reason::Ok, 1}, {1, 3, Reason::Ok, 3}, {3, 2, Reason::Ok, 3},
  };
  SaSpec s = make_spec(all_suites()[0], Direction::In, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x99);
  uint64_t seq = 1;
  for (const C& c : cases) {
    SCOPED_TRACE(std::to_string(c.inner_ecn) + " under " + std::to_string(c.outer_ecn));
    const Bytes inner = make_udp_packet("10.0.0.1", "10.0.0.2", 9, uint8_t(0xb8 | c.inner_ecn));
    InboundSa in(s, 0);
    const Bytes wire = craft(s, with_trailer(inner, {1, 2, 3}, 4), seq++, uint8_t(0x28 | c.outer_ecn));
    PacketBuffer buf(wire);
    const auto r = in.decapsulate(buf.packet(), 0);
    ASSERT_EQ(r.reason, c.want);
    if (c.want != Reason::Ok) continue;
    const Bytes out = buf.bytes();
    EXPECT_EQ(out[1], uint8_t(0xb8 | c.result_ecn));  // DSCP of the inner packet is kept
    EXPECT_TRUE(ipv4_checksum_ok(out.data()));
  }
}

}  // namespace
}  // namespace ov2::esp::test
