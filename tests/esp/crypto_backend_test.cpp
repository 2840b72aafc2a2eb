// The intel-ipsec-mb backend against the OpenSSL one: both produce the same
// ESP bytes for the same SA and sequence number (the IV is the sequence
// number, so AEAD output is deterministic), each opens what the other sealed,
// tampering is refused, and the expanded key lives in wiped key storage.
// The known-answer vectors and the zero-allocation check run on both backends
// in kat_test.cpp and hot_path_test.cpp.
#include <gtest/gtest.h>
#include <intel-ipsec-mb.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "common/error.h"
#include "common/secure_bytes.h"
#include "esp/esp_crypto_ipsecmb.h"
#include "esp/esp_test_util.h"

namespace ov2::esp::test {
namespace {

// Every pair intel-ipsec-mb covers: those of all_suites() plus GMAC-192.
const std::vector<Suite>& covered_suites() {
  static const std::vector<Suite> s = [] {
    std::vector<Suite> v;
    for (const Suite& suite : all_suites())
      if (ImbAead::covers(suite.enc, suite.auth)) v.push_back(suite);
    v.push_back({"null_gmac_192", EncAlg::Null, AuthAlg::AesGmac192});
    return v;
  }();
  return s;
}

TEST(CryptoBackend, TheCoveredSuitesAreAllGcmSizesChaChaAndAllGmacSizes) { EXPECT_EQ(covered_suites().size(), 7u); }

TEST(CryptoBackend, IntelIpsecMbInitialisesOnThisCpuWithAnAesNiCodePath) {
  const IpsecMbInfo& i = ipsecmb_info();
  ASSERT_TRUE(i.usable) << i.error;
  EXPECT_EQ(i.version.rfind("1.", 0), 0u) << i.version;
  EXPECT_NE(i.arch, "no-aesni");
  EXPECT_NE(i.arch, "none");
  std::string why;
  EXPECT_EQ(select_crypto_backend(CryptoBackend::IpsecMb, &why), CryptoBackend::IpsecMb);
  EXPECT_EQ(crypto_backend(), CryptoBackend::IpsecMb);
  EXPECT_EQ(select_crypto_backend(CryptoBackend::OpenSsl), CryptoBackend::OpenSsl);
  EXPECT_EQ(crypto_backend_description(CryptoBackend::IpsecMb).rfind("ipsec-mb (intel-ipsec-mb 1.", 0), 0u);
}

TEST(CryptoBackend, NamesParseBothWaysAndAnythingElseIsRefused) {
  for (const CryptoBackend b : kAllBackends) EXPECT_EQ(parse_backend(backend_name(b)), b);
  EXPECT_FALSE(parse_backend("ipsecmb").has_value());
  EXPECT_FALSE(parse_backend("OpenSSL").has_value());
  EXPECT_FALSE(parse_backend("").has_value());
}

TEST(CryptoBackend, IntelIpsecMbCoversAeadAndGmacButLeavesCbcAndHmacToOpenSsl) {
  for (const Suite& s : covered_suites()) EXPECT_TRUE(ImbAead::covers(s.enc, s.auth)) << s.name;
  EXPECT_FALSE(ImbAead::covers(EncAlg::AesCbc128, AuthAlg::HmacSha256));
  EXPECT_FALSE(ImbAead::covers(EncAlg::Null, AuthAlg::HmacSha1));
  EXPECT_FALSE(ImbAead::covers(EncAlg::AesGcm128, AuthAlg::HmacSha256));
}

// Encapsulates `plain` with a fresh SA of `backend` at sequence number `seq`.
Bytes seal_with(CryptoBackend backend, const SaSpec& out_spec, const Bytes& plain, uint64_t seq) {
  ScopedCryptoBackend use(backend);
  OutboundSa out(out_spec, 0);
  out.set_next_seq(seq);
  PacketBuffer buf(plain);
  EXPECT_EQ(out.encapsulate(buf.packet(), 0), Reason::Ok);
  EXPECT_TRUE(buf.guards_intact());
  return buf.bytes();
}

InboundSa::Result open_with(CryptoBackend backend, const SaSpec& in_spec, const Bytes& wire, uint64_t seq,
                            Bytes* inner) {
  ScopedCryptoBackend use(backend);
  InboundSa in(in_spec, 0);
  in.set_highest_seq(seq - 1);
  PacketBuffer buf(wire);
  const auto r = in.decapsulate(buf.packet(), 0);
  EXPECT_TRUE(buf.guards_intact());
  if (inner) *inner = buf.bytes();
  return r;
}

TEST(CryptoBackend, BothBackendsSealToIdenticalBytesAndOpenEachOthersPacketsForEveryModeSizeAndEsn) {
  int checked = 0;
  for (const Suite& suite : covered_suites())
    for (const Mode mode : {Mode::Tunnel, Mode::Transport})
      for (const bool esn : {false, true})
        for (const size_t payload : {size_t(0), size_t(1), size_t(15), size_t(36), size_t(484), size_t(1372)})
          for (const bool v6 : {false, true}) {
            SCOPED_TRACE(std::string(suite.name) + (mode == Mode::Tunnel ? " tunnel" : " transport") +
                         (esn ? " esn" : "") + " payload " + std::to_string(payload) + (v6 ? " v6" : " v4"));
            const std::string a = v6 ? "2001:db8::1" : "192.0.2.1", b = v6 ? "2001:db8::2" : "192.0.2.2";
            const SaSpec s = make_spec(suite, Direction::Out, mode, a, b, 0x4321, esn);
            const Bytes plain = make_udp_packet(a, b, payload);
            // A high sequence number, so the ESN high half is not zero.
            const uint64_t seq = esn ? 0x00000003fffffff0ull + payload : 1000 + payload;
            const Bytes by_openssl = seal_with(CryptoBackend::OpenSsl, s, plain, seq);
            const Bytes by_ipsecmb = seal_with(CryptoBackend::IpsecMb, s, plain, seq);
            ASSERT_EQ(to_hex(by_openssl), to_hex(by_ipsecmb));
            ASSERT_NE(by_openssl, plain);
            Bytes inner;
            auto r = open_with(CryptoBackend::OpenSsl, mirror(s), by_ipsecmb, seq, &inner);
            ASSERT_EQ(r.reason, Reason::Ok) << reason_name(r.reason);
            EXPECT_EQ(r.seq, seq);
            EXPECT_EQ(inner, plain);
            r = open_with(CryptoBackend::IpsecMb, mirror(s), by_openssl, seq, &inner);
            ASSERT_EQ(r.reason, Reason::Ok) << reason_name(r.reason);
            EXPECT_EQ(r.seq, seq);
            EXPECT_EQ(inner, plain);
            ++checked;
          }
  EXPECT_EQ(checked, 7 * 2 * 2 * 6 * 2);
}

TEST(CryptoBackend, IntelIpsecMbRefusesATamperedIcvPayloadIvOrSequenceNumberAndKeepsTheWindow) {
  for (const Suite& suite : covered_suites())
    for (const bool esn : {false, true}) {
      SCOPED_TRACE(std::string(suite.name) + (esn ? " esn" : ""));
      const SaSpec s = make_spec(suite, Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x77, esn);
      const Bytes plain = make_udp_packet("10.0.0.1", "10.0.0.2", 200);
      const Bytes wire = seal_with(CryptoBackend::IpsecMb, s, plain, 5);
      ScopedCryptoBackend use(CryptoBackend::IpsecMb);
      InboundSa in(mirror(s), 0);
      // Offsets in the outer IPv4 packet: ESP header at 20 (SPI 20..23, seq
      // 24..27), IV 28..35, payload from 36, ICV in the last bytes.
      for (const size_t at : {wire.size() - 1, wire.size() - 16, size_t(40), size_t(30), size_t(27)}) {
        Bytes bad = wire;
        bad[at] ^= 0x04;
        PacketBuffer buf(bad);
        const auto r = in.decapsulate(buf.packet(), 0);
        // A flipped sequence number lands elsewhere in the window: still not authentic.
        EXPECT_EQ(r.reason, Reason::AuthFailed) << "byte " << at << ": " << reason_name(r.reason);
      }
      EXPECT_EQ(in.counters().count(Reason::AuthFailed), 5u);
      EXPECT_EQ(in.highest_seq(), 0u);  // nothing forged moved the window
      PacketBuffer good(wire);
      EXPECT_EQ(in.decapsulate(good.packet(), 0).reason, Reason::Ok);
      EXPECT_EQ(good.bytes(), plain);
    }
}

TEST(CryptoBackend, AnIntelIpsecMbSaKeepsItsExpandedKeyInOneKeyStorageBlockReleasedOnDelete) {
  const size_t before = key_block_stats().slots_in_use;
  const SaSpec s = make_spec(covered_suites()[0], Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2");
  {
    ScopedCryptoBackend use(CryptoBackend::IpsecMb);
    OutboundSa out(s, 0);
    InboundSa in(mirror(s), 0);
    EXPECT_EQ(key_block_stats().slots_in_use, before + 2);
  }
  EXPECT_EQ(key_block_stats().slots_in_use, before);
  {
    ScopedCryptoBackend use(CryptoBackend::OpenSsl);
    OutboundSa out(s, 0);
    EXPECT_EQ(key_block_stats().slots_in_use, before);  // OpenSSL keeps its schedule in its own context
  }
}

TEST(CryptoBackend, AReleasedKeyStorageBlockIsWipedAndTheNextOneComesZeroedAndAligned) {
  uint8_t* where = nullptr;
  auto b = std::make_unique<SecureBlock>(1000);
  where = b->data();
  EXPECT_EQ(b->size(), 1024u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(where) % 64, 0u);
  std::memset(where, 0xA5, 1000);
  // A chunk holds 64 such blocks and slots are taken lowest-first: after 64
  // more, b's chunk holds another live block, so it stays mapped when b goes
  // and reading the released slot is defined.
  std::vector<std::unique_ptr<SecureBlock>> neighbours;
  for (int i = 0; i < 64; ++i) neighbours.push_back(std::make_unique<SecureBlock>(1000));
  b.reset();
  for (size_t i = 0; i < SecureBlock::kMaxSize; ++i) ASSERT_EQ(where[i], 0) << "byte " << i;
  SecureBlock again(1000);
  for (size_t i = 0; i < again.size(); ++i) ASSERT_EQ(again.data()[i], 0);
  EXPECT_THROW(SecureBlock too_big(SecureBlock::kMaxSize + 1), ov2::Error);
  EXPECT_THROW(SecureBlock empty(0), ov2::Error);
}

TEST(CryptoBackend, KeyStorageBlocksTakeTheirSizeRoundedTo64BytesAndSizesDoNotShareSlots) {
  const size_t before = key_block_stats().slots_in_use;
  {
    SecureBlock a(368), b(368), c(32), d(1);
    EXPECT_EQ(a.size(), 384u);
    EXPECT_EQ(c.size(), 64u);
    EXPECT_EQ(d.size(), 64u);
    for (const SecureBlock* blk : {&a, &b, &c, &d}) EXPECT_EQ(reinterpret_cast<uintptr_t>(blk->data()) % 64, 0u);
    // Neighbours in one size class are one rounded size apart or more: no overlap.
    const auto gap = std::abs(reinterpret_cast<intptr_t>(a.data()) - reinterpret_cast<intptr_t>(b.data()));
    EXPECT_GE(gap, 384);
    std::memset(a.data(), 0xA5, a.size());
    std::memset(b.data(), 0x5A, b.size());
    for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a.data()[i], 0xA5) << "byte " << i;
    EXPECT_EQ(key_block_stats().slots_in_use, before + 4);
  }
  EXPECT_EQ(key_block_stats().slots_in_use, before);
}

// The SA keeps only the leading ImbAead::key_block_bytes() of struct
// gcm_key_data (the layout of the code path this CPU runs).  Proof that the
// library reads nothing beyond: the schedule is placed so that the rounded
// block ends at a PROT_NONE page, and GCM seal/open and GMAC over many lengths
// must give the same bytes as with a whole struct (a read past it faults).
TEST(CryptoBackend, TheTrimmedGcmScheduleIsAllTheLibraryReadsForEveryKeySizeAndLength) {
  ASSERT_TRUE(ipsecmb_info().usable) << ipsecmb_info().error;
  const size_t used = ImbAead::key_block_bytes(EncAlg::AesGcm128);
  EXPECT_EQ(used, ipsecmb_info().gcm_key_bytes);
  EXPECT_LE(used, sizeof(gcm_key_data));
  EXPECT_GE(used, 240u + 16u);  // 15 round keys and at least one GHASH key
  EXPECT_EQ(ImbAead::key_block_bytes(EncAlg::ChaCha20Poly1305), 32u);
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void* mem = mmap(nullptr, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  ASSERT_EQ(mprotect(static_cast<uint8_t*>(mem) + page, page, PROT_NONE), 0);
  const size_t rounded = (used + 63) / 64 * 64;
  auto* trimmed = reinterpret_cast<gcm_key_data*>(static_cast<uint8_t*>(mem) + page - rounded);
  IMB_MGR* mgr = alloc_mb_mgr(0);
  ASSERT_NE(mgr, nullptr);
  IMB_ARCH arch = IMB_ARCH_NONE;
  init_mb_mgr_auto(mgr, &arch);
  alignas(64) static gcm_key_data whole;
  uint8_t key[32], iv[12], aad[12];
  for (size_t i = 0; i < sizeof key; ++i) key[i] = uint8_t(3 * i + 1);
  for (size_t i = 0; i < sizeof iv; ++i) iv[i] = uint8_t(7 * i);
  for (size_t i = 0; i < sizeof aad; ++i) aad[i] = uint8_t(11 * i);
  std::vector<uint8_t> in(9000), a(9000), b(9000);
  for (size_t i = 0; i < in.size(); ++i) in[i] = uint8_t(i * 13 + 5);
  std::vector<uint32_t> lengths;
  for (uint32_t n = 0; n <= 300; ++n) lengths.push_back(n);
  for (uint32_t n : {512u, 1024u, 1400u, 1500u, 4096u, 9000u}) lengths.push_back(n);
  for (const int key_len : {16, 24, 32}) {
    auto pre = [&](gcm_key_data* kd) {
      if (key_len == 16)
        IMB_AES128_GCM_PRE(mgr, key, kd);
      else if (key_len == 24)
        IMB_AES192_GCM_PRE(mgr, key, kd);
      else
        IMB_AES256_GCM_PRE(mgr, key, kd);
    };
    auto crypt = [&](const gcm_key_data* kd, bool enc, const uint8_t* src, uint8_t* dst, uint32_t n, uint32_t aad_len,
                     uint8_t* tag) {
      gcm_context_data ctx;
      aes_gcm_enc_dec_t fn = key_len == 16   ? (enc ? mgr->gcm128_enc : mgr->gcm128_dec)
                             : key_len == 24 ? (enc ? mgr->gcm192_enc : mgr->gcm192_dec)
                                             : (enc ? mgr->gcm256_enc : mgr->gcm256_dec);
      fn(kd, &ctx, dst, src, n, iv, aad, aad_len, tag, 16);
    };
    auto gmac = [&](const gcm_key_data* kd, uint32_t n, uint8_t* tag) {
      gcm_context_data ctx;
      aes_gmac_init_t init = key_len == 16 ? mgr->gmac128_init : key_len == 24 ? mgr->gmac192_init : mgr->gmac256_init;
      aes_gmac_update_t update = key_len == 16   ? mgr->gmac128_update
                                 : key_len == 24 ? mgr->gmac192_update
                                                 : mgr->gmac256_update;
      aes_gmac_finalize_t final = key_len == 16   ? mgr->gmac128_finalize
                                  : key_len == 24 ? mgr->gmac192_finalize
                                                  : mgr->gmac256_finalize;
      init(kd, &ctx, iv, 12);
      update(kd, &ctx, aad, 8);
      update(kd, &ctx, in.data(), n);
      final(kd, &ctx, tag, 16);
    };
    std::memset(&whole, 0, sizeof whole);
    pre(&whole);
    pre(trimmed);
    ASSERT_EQ(std::memcmp(&whole, trimmed, used), 0) << key_len;
    for (const uint32_t n : lengths) {
      for (const uint32_t aad_len : {8u, 12u}) {
        uint8_t tag_a[16], tag_b[16];
        crypt(&whole, true, in.data(), a.data(), n, aad_len, tag_a);
        crypt(trimmed, true, in.data(), b.data(), n, aad_len, tag_b);
        ASSERT_EQ(std::memcmp(a.data(), b.data(), n), 0) << key_len << " seal " << n;
        ASSERT_EQ(std::memcmp(tag_a, tag_b, 16), 0) << key_len << " seal tag " << n;
        crypt(trimmed, false, a.data(), b.data(), n, aad_len, tag_b);
        ASSERT_EQ(std::memcmp(in.data(), b.data(), n), 0) << key_len << " open " << n;
        ASSERT_EQ(std::memcmp(tag_a, tag_b, 16), 0) << key_len << " open tag " << n;
      }
      uint8_t tag_a[16], tag_b[16];
      gmac(&whole, n, tag_a);
      gmac(trimmed, n, tag_b);
      ASSERT_EQ(std::memcmp(tag_a, tag_b, 16), 0) << key_len << " gmac " << n;
    }
  }
  free_mb_mgr(mgr);
  munmap(mem, 2 * page);
}

}  // namespace
}  // namespace ov2::esp::test
