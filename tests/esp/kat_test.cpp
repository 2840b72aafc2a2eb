// Known-answer tests from published vectors (tests/data/esp/, sources named in
// each file), run through the engine's full inbound path, byte-exact.
//
// The published ESP vectors use explicit IVs that differ from the sequence
// number (draft-mcgrew-gcm-test-01, RFC 7634) or random CBC IVs (RFC 3602);
// the engine's sender always uses IV = sequence number (RFC 4106 §3.1) or a
// fresh random CBC IV, so the vectors are checked on the receiving side; the
// sending side is proven against scapy/tshark in interop_test.cpp.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstring>

#include "esp/esp_crypto.h"
#include "esp/esp_test_util.h"
#include "ov2_abi.h"

namespace ov2::esp::test {
namespace {

const std::string kData = std::string(OV2_TEST_DATA) + "/esp/";

// An outer IPv4 header (protocol ESP) in front of `esp`.
Bytes wrap_ipv4(const Bytes& esp) {
  Bytes p(20);
  p[0] = 0x45;
  p[2] = uint8_t((20 + esp.size()) >> 8);
  p[3] = uint8_t(20 + esp.size());
  p[8] = 64;
  p[9] = 50;
  const uint8_t src[] = {203, 0, 113, 153}, dst[] = {192, 0, 2, 5};
  std::memcpy(&p[12], src, 4);
  std::memcpy(&p[16], dst, 4);
  fix_ipv4_checksum(p.data());
  p.insert(p.end(), esp.begin(), esp.end());
  return p;
}

// What a transport-mode SA must deliver: the outer header with protocol and
// length restored, followed by the payload.
Bytes transport_expectation(const Bytes& wire, uint8_t nh, const Bytes& payload) {
  Bytes p(wire.begin(), wire.begin() + 20);
  p[9] = nh;
  p[2] = uint8_t((20 + payload.size()) >> 8);
  p[3] = uint8_t(20 + payload.size());
  fix_ipv4_checksum(p.data());
  p.insert(p.end(), payload.begin(), payload.end());
  return p;
}

uint64_t parse_seq(const std::string& hex) {
  uint64_t v = 0;
  for (uint8_t b : from_hex(hex)) v = v << 8 | b;
  return v;
}

SaSpec inbound(Mode mode, EncAlg enc, AuthAlg auth, const Bytes& enc_key, const Bytes& auth_key, uint32_t spi, bool esn) {
  SaSpec s;
  s.dir = Direction::In;
  s.mode = mode;
  s.src = IpAddr::parse("203.0.113.153");
  s.dst = IpAddr::parse("192.0.2.5");
  s.spi = spi;
  s.enc = enc;
  s.auth = auth;
  if (!enc_key.empty()) s.enc_key = SecureBytes(enc_key);
  if (!auth_key.empty()) s.auth_key = SecureBytes(auth_key);
  s.esn = esn;
  return s;
}

TEST(EspKnownAnswer, AesGcmEspVectorsOfDraftMcgrewGcmTest01OpenByteExactOnEveryBackend) {
  const auto cases = read_vectors(kData + "gcm_mcgrew_esp.txt");
  ASSERT_EQ(cases.size(), 14u);
  for (const CryptoBackend backend : kAllBackends)
    for (const auto& c : cases) {
      SCOPED_TRACE(std::string(backend_name(backend)) + " " + c.at("case"));
      ScopedCryptoBackend use(backend);
      const Bytes key = from_hex(c.at("key_salt"));
      const EncAlg alg = key.size() == 20   ? EncAlg::AesGcm128
                         : key.size() == 28 ? EncAlg::AesGcm192
                                            : EncAlg::AesGcm256;
      const bool esn = c.at("esn") == "1";
      const uint64_t seq = parse_seq(c.at("seq"));
      const uint32_t spi = uint32_t(parse_seq(c.at("spi")));
      const Bytes plaintext = from_hex(c.at("plaintext"));
      const uint8_t pad = plaintext[plaintext.size() - 2], nh = plaintext.back();
      const Bytes payload(plaintext.begin(), plaintext.end() - 2 - pad);
      // The draft's next headers are 1 (ICMP): a transport-mode SA accepts them.
      InboundSa in(inbound(Mode::Transport, alg, AuthAlg::None, key, {}, spi, esn), 0);
      in.set_highest_seq(seq - 1);  // the window sits just below the vector's sequence number
      const Bytes wire = wrap_ipv4(from_hex(c.at("esp")));

      PacketBuffer buf(wire);
      const auto r = in.decapsulate(buf.packet(), 0);
      ASSERT_EQ(r.reason, Reason::Ok) << reason_name(r.reason);
      EXPECT_EQ(r.seq, seq);
      EXPECT_EQ(r.next_header, nh);
      EXPECT_EQ(to_hex(buf.bytes()), to_hex(transport_expectation(wire, nh, payload)));

      PacketBuffer again(wire);  // the same packet again is a replay
      EXPECT_EQ(in.decapsulate(again.packet(), 0).reason, Reason::Replayed);

      InboundSa fresh(inbound(Mode::Transport, alg, AuthAlg::None, key, {}, spi, esn), 0);
      fresh.set_highest_seq(seq - 1);
      Bytes bad = wire;
      bad.back() ^= 0x01;  // one bit of the ICV
      PacketBuffer tampered(bad);
      const auto rb = fresh.decapsulate(tampered.packet(), 0);
      EXPECT_EQ(rb.reason, Reason::AuthFailed);
      EXPECT_EQ(rb.crypto_status, uint32_t(CRYPTO_TRANSPORT_ESP_AUTH_FAILED));
    }
}

TEST(EspKnownAnswer, ChaCha20Poly1305EspExampleOfRfc7634AppendixAOpensToTheSourceDatagramOnEveryBackend) {
  const auto cases = read_vectors(kData + "chacha_rfc7634_esp.txt");
  ASSERT_EQ(cases.size(), 1u);
  const auto& c = cases[0];
  for (const CryptoBackend backend : kAllBackends) {
    SCOPED_TRACE(backend_name(backend));
    ScopedCryptoBackend use(backend);
    InboundSa in(inbound(Mode::Tunnel, EncAlg::ChaCha20Poly1305, AuthAlg::None, from_hex(c.at("key_salt")), {},
                         uint32_t(parse_seq(c.at("spi"))), false),
                 0);
    PacketBuffer buf(wrap_ipv4(from_hex(c.at("esp"))));
    const auto r = in.decapsulate(buf.packet(), 0);
    ASSERT_EQ(r.reason, Reason::Ok) << reason_name(r.reason);
    EXPECT_EQ(r.seq, 5u);
    EXPECT_EQ(r.next_header, 4);
    EXPECT_EQ(to_hex(buf.bytes()), c.at("source"));
  }
}

TEST(EspKnownAnswer, AesCbcEspPacketsOfRfc3602OpenToTheirPayloadsWithAnHmacSha256Icv) {
  const auto cases = read_vectors(kData + "cbc_rfc3602_esp.txt");
  ASSERT_EQ(cases.size(), 4u);
  Bytes hmac_key(32);
  for (size_t i = 0; i < 32; ++i) hmac_key[i] = uint8_t(i + 1);
  for (const auto& c : cases) {
    SCOPED_TRACE(c.at("case"));
    const Mode mode = c.at("mode") == "tunnel" ? Mode::Tunnel : Mode::Transport;
    Bytes esp = from_hex(c.at("esp"));
    // HMAC-SHA-256-128 over SPI..ciphertext with OpenSSL's one-shot HMAC().
    uint8_t mac[32];
    unsigned mac_len = 0;
    ASSERT_NE(HMAC(EVP_sha256(), hmac_key.data(), int(hmac_key.size()), esp.data(), esp.size(), mac, &mac_len), nullptr);
    esp.insert(esp.end(), mac, mac + 16);
    const uint32_t spi = uint32_t(parse_seq(c.at("esp").substr(0, 8)));
    InboundSa in(inbound(mode, EncAlg::AesCbc128, AuthAlg::HmacSha256, from_hex(c.at("key")), hmac_key, spi, false), 0);
    const Bytes wire = wrap_ipv4(esp);
    PacketBuffer buf(wire);
    const auto r = in.decapsulate(buf.packet(), 0);
    ASSERT_EQ(r.reason, Reason::Ok) << reason_name(r.reason);
    const uint8_t nh = uint8_t(std::stoi(c.at("next_header")));
    EXPECT_EQ(r.next_header, nh);
    const Bytes payload = from_hex(c.at("payload"));
    if (mode == Mode::Tunnel) EXPECT_EQ(to_hex(buf.bytes()), c.at("payload"));
    else EXPECT_EQ(to_hex(buf.bytes()), to_hex(transport_expectation(wire, nh, payload)));
  }
}

TEST(EspKnownAnswer, HmacSha256Auth128VectorsOfRfc4868ComeOutOfTheEnginesIcvPath) {
  const auto cases = read_vectors(kData + "hmac_sha256_rfc4868.txt");
  ASSERT_EQ(cases.size(), 4u);
  for (const auto& c : cases) {
    SCOPED_TRACE(c.at("case"));
    SaSpec s = inbound(Mode::Tunnel, EncAlg::Null, AuthAlg::HmacSha256, {}, from_hex(c.at("key")), 1, false);
    s.dir = Direction::Out;
    CryptoState seal_state(s, true, 1);
    CryptoState open_state(s, false, 1);
    // NULL encryption: the ICV input is the 8-byte "ESP header" followed by
    // the payload, so the vector's data is split the same way (all are >= 8 bytes).
    Bytes data = from_hex(c.at("data"));
    ASSERT_GE(data.size(), 8u);
    uint8_t icv[16] = {};
    uint8_t no_iv[1] = {};
    const EspHeaderFields h{1, 1, false};
    ASSERT_TRUE(seal_state.seal(h, data.data(), no_iv, data.data() + 8, uint32_t(data.size() - 8), icv));
    EXPECT_EQ(to_hex(icv, 16), c.at("auth128"));
    EXPECT_TRUE(open_state.open(h, data.data(), no_iv, data.data() + 8, uint32_t(data.size() - 8), icv));
    icv[15] ^= 0x80;
    EXPECT_FALSE(open_state.open(h, data.data(), no_iv, data.data() + 8, uint32_t(data.size() - 8), icv));
  }
}

}  // namespace
}  // namespace ov2::esp::test
