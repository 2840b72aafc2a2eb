#include "esp/esp_crypto_ipsecmb.h"

#include <intel-ipsec-mb.h>
#include <openssl/crypto.h>
#include <openssl/opensslv.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "common/error.h"
#include "esp/crypto_backend.h"

namespace ov2::esp {
namespace {

static_assert(sizeof(gcm_key_data) <= SecureBlock::kMaxSize, "an expanded GCM key must fit a SecureBlock");

// One manager per process: the direct API used here only reads the function
// pointers init_mb_mgr_auto() filled in, so every thread can share it (the
// job API, which keeps per-manager queues, is not used).
struct Manager {
  IMB_MGR* mgr = nullptr;
  IpsecMbInfo info;
  size_t gcm_key_bytes = sizeof(gcm_key_data);  // what this code path's schedule occupies (gcm_schedule_bytes)
};

// How many leading bytes of struct gcm_key_data the chosen code path's
// precompute fills: the AES round keys, then the GHASH key powers in the
// layout of that path (intel-ipsec-mb's gcm_keys_*.asm: SSE/AVX 16 powers,
// AVX2/AVX512 8, VAES-AVX512 48).  The struct is the union of all layouts
// (1008 bytes); the AVX2 path uses 368.  Measured, not assumed: the key is
// expanded into two copies pre-filled with 0x00 and 0xff, and a byte the
// library wrote is equal in both.  The encrypt/decrypt/GMAC code reads only
// what its own precompute wrote (tests/esp/crypto_backend_test.cpp runs every
// operation on a schedule that ends at a PROT_NONE page to prove it here).
size_t gcm_schedule_bytes(IMB_MGR* mgr) {
  alignas(64) static gcm_key_data probe[2];
  uint8_t key[32];
  for (size_t i = 0; i < sizeof key; ++i) key[i] = uint8_t(0x5a + 37 * i);
  size_t used = 0;
  for (const int key_len : {16, 24, 32}) {
    std::memset(&probe[0], 0x00, sizeof probe[0]);
    std::memset(&probe[1], 0xff, sizeof probe[1]);
    for (auto& p : probe) {
      if (key_len == 16)
        IMB_AES128_GCM_PRE(mgr, key, &p);
      else if (key_len == 24)
        IMB_AES192_GCM_PRE(mgr, key, &p);
      else
        IMB_AES256_GCM_PRE(mgr, key, &p);
    }
    const auto* a = reinterpret_cast<const uint8_t*>(&probe[0]);
    const auto* b = reinterpret_cast<const uint8_t*>(&probe[1]);
    for (size_t i = sizeof(gcm_key_data); i > used; --i)
      if (a[i - 1] == b[i - 1]) {
        used = i;
        break;
      }
  }
  OPENSSL_cleanse(probe, sizeof probe);
  return used;
}

const char* arch_name(IMB_ARCH a) {
  switch (a) {
    case IMB_ARCH_NOAESNI:
      return "no-aesni";
    case IMB_ARCH_SSE:
      return "sse";
    case IMB_ARCH_AVX:
      return "avx";
    case IMB_ARCH_AVX2:
      return "avx2";
    case IMB_ARCH_AVX512:
      return "avx512";
    default:
      return "none";
  }
}

const Manager& manager() {
  static const Manager m = [] {
    Manager r;
    r.info.version = imb_get_version_str();
    // Test hook: proves the fallback to OpenSSL on a machine where the library runs.
    if (const char* off = std::getenv("OV2_TEST_IPSECMB_UNAVAILABLE"); off && *off) {
      r.info.error = "disabled by OV2_TEST_IPSECMB_UNAVAILABLE";
      return r;
    }
    IMB_MGR* mgr = alloc_mb_mgr(0);
    if (mgr == nullptr) {
      r.info.error = std::string("alloc_mb_mgr failed: ") + imb_get_strerror(imb_get_errno(nullptr));
      return r;
    }
    IMB_ARCH arch = IMB_ARCH_NONE;
    init_mb_mgr_auto(mgr, &arch);
    const int err = imb_get_errno(mgr);
    r.info.arch = arch_name(arch);
    if (err != 0 || arch == IMB_ARCH_NONE) {
      r.info.error = std::string("init_mb_mgr_auto failed: ") + imb_get_strerror(err);
      free_mb_mgr(mgr);
      return r;
    }
    if (arch == IMB_ARCH_NOAESNI) {  // works, but slower than OpenSSL by far
      r.info.error = "this CPU has no AES-NI (intel-ipsec-mb would run its slow no-aesni code)";
      free_mb_mgr(mgr);
      return r;
    }
    r.mgr = mgr;  // never freed: SAs may be deleted during static destruction
    r.gcm_key_bytes = gcm_schedule_bytes(mgr);
    r.info.gcm_key_bytes = r.gcm_key_bytes;
    r.info.usable = true;
    return r;
  }();
  return m;
}

std::atomic<CryptoBackend> g_backend{CryptoBackend::OpenSsl};

}  // namespace

// ---- backend selection (crypto_backend.h) ---------------------------------

const char* backend_name(CryptoBackend b) { return b == CryptoBackend::IpsecMb ? "ipsec-mb" : "openssl"; }

std::optional<CryptoBackend> parse_backend(std::string_view name) {
  if (name == "openssl") return CryptoBackend::OpenSsl;
  if (name == "ipsec-mb") return CryptoBackend::IpsecMb;
  return std::nullopt;
}

CryptoBackend crypto_backend() { return g_backend.load(std::memory_order_relaxed); }

const IpsecMbInfo& ipsecmb_info() { return manager().info; }

CryptoBackend select_crypto_backend(CryptoBackend wanted, std::string* why_not) {
  if (wanted == CryptoBackend::IpsecMb && !ipsecmb_info().usable) {
    if (why_not)
      *why_not =
          "intel-ipsec-mb " + ipsecmb_info().version + " cannot run here (" + ipsecmb_info().error + "); using OpenSSL";
    wanted = CryptoBackend::OpenSsl;
  }
  g_backend.store(wanted, std::memory_order_relaxed);
  return wanted;
}

std::string crypto_backend_description(CryptoBackend b) {
  if (b == CryptoBackend::IpsecMb)
    return "ipsec-mb (intel-ipsec-mb " + ipsecmb_info().version + ", " + ipsecmb_info().arch +
           "; aes-cbc/hmac on " OPENSSL_VERSION_TEXT ")";
  return "openssl (" OPENSSL_VERSION_TEXT ")";
}

// ---- ImbAead --------------------------------------------------------------

bool ImbAead::covers(EncAlg enc, AuthAlg auth) {
  switch (enc) {
    case EncAlg::AesGcm128:
    case EncAlg::AesGcm192:
    case EncAlg::AesGcm256:
    case EncAlg::ChaCha20Poly1305:
      return auth == AuthAlg::None;
    case EncAlg::Null:
      return auth == AuthAlg::AesGmac128 || auth == AuthAlg::AesGmac192 || auth == AuthAlg::AesGmac256;
    default:
      return false;
  }
}

size_t ImbAead::key_block_bytes(EncAlg enc) {
  return enc == EncAlg::ChaCha20Poly1305 ? size_t{32} : manager().gcm_key_bytes;
}

ImbAead::ImbAead(EncAlg enc, AuthAlg auth, const uint8_t* key)
    : mgr_(manager().mgr), kind_(Kind::Gcm), key_(key_block_bytes(enc)) {
  if (mgr_ == nullptr)
    fail(ErrorCode::Unsupported, "intel-ipsec-mb cannot run here (" + ipsecmb_info().error + "); use --crypto openssl");
  if (!covers(enc, auth)) fail(ErrorCode::Unsupported, "intel-ipsec-mb backend: algorithm pair not covered");
  if (enc == EncAlg::ChaCha20Poly1305) {
    kind_ = Kind::ChaCha;
    std::memcpy(key_.data(), key, 32);
    return;
  }
  kind_ = enc == EncAlg::Null ? Kind::Gmac : Kind::Gcm;
  aes_key_len_ = uint8_t(enc == EncAlg::Null ? info(auth).key_len : info(enc).key_len);
  auto* kd = reinterpret_cast<gcm_key_data*>(key_.data());
  // The AES key schedule and the GHASH key powers, computed once per SA,
  // live in DONTDUMP key storage and are wiped when the SA goes.
  switch (aes_key_len_) {
    case 16:
      IMB_AES128_GCM_PRE(mgr_, key, kd);
      break;
    case 24:
      IMB_AES192_GCM_PRE(mgr_, key, kd);
      break;
    default:
      IMB_AES256_GCM_PRE(mgr_, key, kd);
      break;
  }
}

namespace {
// Per packet: glibc's explicit_bzero is a memset the compiler may not drop,
// a few instructions for these small contexts where OPENSSL_cleanse's byte
// loop took about 60 (a tenth of a 64-byte packet's work on this backend).
inline void wipe(void* p, size_t n) { explicit_bzero(p, n); }
}  // namespace

void ImbAead::seal(const uint8_t* nonce, const uint8_t* aad, uint32_t aad_len, const uint8_t* iv, uint8_t* payload,
                   uint32_t len, uint8_t* icv, uint32_t icv_len) const {
  tag(nonce, aad, aad_len, iv, payload, len, icv, icv_len, true);
}

bool ImbAead::open(const uint8_t* nonce, const uint8_t* aad, uint32_t aad_len, const uint8_t* iv, uint8_t* payload,
                   uint32_t len, const uint8_t* icv, uint32_t icv_len) const {
  uint8_t computed[16];
  tag(nonce, aad, aad_len, iv, payload, len, computed, icv_len, false);
  const bool ok = CRYPTO_memcmp(computed, icv, icv_len) == 0;
  wipe(computed, sizeof computed);
  return ok;
}

void ImbAead::tag(const uint8_t* nonce, const uint8_t* aad, uint32_t aad_len, const uint8_t* iv, uint8_t* payload,
                  uint32_t len, uint8_t* out, uint32_t out_len, bool encrypt) const {
  IMB_MGR* m = const_cast<IMB_MGR*>(mgr_);  // the direct API only reads the manager
  const auto* kd = reinterpret_cast<const gcm_key_data*>(key_.data());
  switch (kind_) {
    case Kind::Gcm: {
      gcm_context_data ctx;
      aes_gcm_enc_dec_t fn = nullptr;
      if (aes_key_len_ == 16)
        fn = encrypt ? m->gcm128_enc : m->gcm128_dec;
      else if (aes_key_len_ == 24)
        fn = encrypt ? m->gcm192_enc : m->gcm192_dec;
      else
        fn = encrypt ? m->gcm256_enc : m->gcm256_dec;
      fn(kd, &ctx, payload, payload, len, nonce, aad, aad_len, out, out_len);
      wipe(&ctx, sizeof ctx);  // holds keystream of the last partial block
      break;
    }
    case Kind::Gmac: {
      // RFC 4543 §3.3: SPI || [seq_hi ||] seq_lo || IV || payload, all AAD.
      gcm_context_data ctx;
      aes_gmac_init_t init = m->gmac128_init;
      aes_gmac_update_t update = m->gmac128_update;
      aes_gmac_finalize_t final = m->gmac128_finalize;
      if (aes_key_len_ == 24) {
        init = m->gmac192_init, update = m->gmac192_update, final = m->gmac192_finalize;
      } else if (aes_key_len_ == 32) {
        init = m->gmac256_init, update = m->gmac256_update, final = m->gmac256_finalize;
      }
      init(kd, &ctx, nonce, 12);
      update(kd, &ctx, aad, aad_len);
      update(kd, &ctx, iv, 8);
      update(kd, &ctx, payload, len);
      final(kd, &ctx, out, out_len);
      wipe(&ctx, sizeof ctx);
      break;
    }
    case Kind::ChaCha: {
      chacha20_poly1305_context_data ctx;
      m->chacha20_poly1305_init(key_.data(), &ctx, nonce, aad, aad_len);
      if (encrypt)
        m->chacha20_poly1305_enc_update(key_.data(), &ctx, payload, payload, len);
      else
        m->chacha20_poly1305_dec_update(key_.data(), &ctx, payload, payload, len);
      m->chacha20_poly1305_finalize(&ctx, out, out_len);
      wipe(&ctx, sizeof ctx);  // holds the one-time Poly1305 key and keystream
      break;
    }
  }
}

}  // namespace ov2::esp
