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

// manager().mgr for the packet path, without the function-local static's
// guard: set once, before the first ImbAead exists (an SA reaches a worker
// thread after it is constructed, so the worker sees it set).
IMB_MGR* g_packet_mgr = nullptr;

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
    g_packet_mgr = mgr;
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

ImbAead::ImbAead(EncAlg enc, AuthAlg auth, const uint8_t* key, const uint8_t* salt, uint32_t icv_len)
    : kind_(Kind::Gcm), icv_len_(icv_len), key_(key_block_bytes(enc)) {
  std::memcpy(salt_, salt, sizeof salt_);
  IMB_MGR* const m = manager().mgr;
  if (m == nullptr)
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
      IMB_AES128_GCM_PRE(m, key, kd);
      gcm_enc_ = m->gcm128_enc, gcm_dec_ = m->gcm128_dec;
      break;
    case 24:
      IMB_AES192_GCM_PRE(m, key, kd);
      gcm_enc_ = m->gcm192_enc, gcm_dec_ = m->gcm192_dec;
      break;
    default:
      IMB_AES256_GCM_PRE(m, key, kd);
      gcm_enc_ = m->gcm256_enc, gcm_dec_ = m->gcm256_dec;
      break;
  }
  if (kind_ != Kind::Gcm) gcm_enc_ = gcm_dec_ = nullptr;  // GMAC: the same schedule, other calls
}

namespace {
// Zeroes a small per-packet object (a GCM context, a computed tag) so that the
// compiler cannot drop the stores: the empty asm may read it (Linux's
// memzero_explicit).  A copy from a zero object becomes a few vector stores
// (a memset of this size becomes `rep stos`, slow to start); explicit_bzero's
// call and length dispatch cost about 25 instructions a wipe, two per opening.
template <class T>
void wipe_object(T& obj) {
  static const T zero{};
  std::memcpy(&obj, &zero, sizeof obj);
  __asm__ __volatile__("" : : "r"(&obj) : "memory");
}

// Constant-time equality of two tags of `n` bytes (16, or 12 for HMAC-SHA-1
// suites, which do not come here): no branch on their bytes, as
// CRYPTO_memcmp, in a few word operations instead of a byte loop behind a
// library call.
bool tags_equal(const uint8_t* a, const uint8_t* b, uint32_t n) {
  uint64_t diff = 0;
  uint32_t i = 0;
  if (n == 16) {
    uint64_t x[2], y[2];
    std::memcpy(x, a, 16);
    std::memcpy(y, b, 16);
    return ((x[0] ^ y[0]) | (x[1] ^ y[1])) == 0;
  }
  for (; i + 8 <= n; i += 8) {
    uint64_t x, y;
    std::memcpy(&x, a + i, 8);
    std::memcpy(&y, b + i, 8);
    diff |= x ^ y;
  }
  for (; i < n; ++i) diff |= uint64_t(a[i] ^ b[i]);
  return diff == 0;
}
}  // namespace

ImbAead::~ImbAead() { OPENSSL_cleanse(salt_, sizeof salt_); }

void ImbAead::seal(const EspHeaderFields& h, uint8_t* iv, uint8_t* payload, uint32_t len, uint8_t* icv) const {
  write_sequence_iv(h, iv);
  uint8_t nonce[16], aad[16];
  const uint32_t aad_len = aead_nonce_and_aad(salt_, h, iv, nonce, aad);
  if (gcm_enc_) {  // AES-GCM, the common case: one library call
    gcm_context_data ctx;
    gcm_enc_(reinterpret_cast<const gcm_key_data*>(key_.data()), &ctx, payload, payload, len, nonce, aad, aad_len,
             icv, icv_len_);
    wipe_object(ctx);  // holds keystream of the last partial block
    return;
  }
  tag(nonce, aad, aad_len, iv, payload, len, icv, icv_len_, true);
}

bool ImbAead::open(const EspHeaderFields& h, const uint8_t* iv, uint8_t* payload, uint32_t len,
                   const uint8_t* icv) const {
  uint8_t nonce[16], aad[16];
  const uint32_t aad_len = aead_nonce_and_aad(salt_, h, iv, nonce, aad);
  uint8_t computed[16];
  if (gcm_dec_) {
    gcm_context_data ctx;
    gcm_dec_(reinterpret_cast<const gcm_key_data*>(key_.data()), &ctx, payload, payload, len, nonce, aad, aad_len,
             computed, icv_len_);
    wipe_object(ctx);
  } else {
    tag(nonce, aad, aad_len, iv, payload, len, computed, icv_len_, false);
  }
  const bool ok = tags_equal(computed, icv, icv_len_);
  wipe_object(computed);
  return ok;
}

void ImbAead::tag(const uint8_t* nonce, const uint8_t* aad, uint32_t aad_len, const uint8_t* iv, uint8_t* payload,
                  uint32_t len, uint8_t* out, uint32_t out_len, bool encrypt) const {
  IMB_MGR* m = g_packet_mgr;  // the direct API only reads the manager
  const auto* kd = reinterpret_cast<const gcm_key_data*>(key_.data());
  switch (kind_) {
    case Kind::Gcm: {  // seal() and open() call gcm_enc_/gcm_dec_ themselves
      gcm_context_data ctx;
      (encrypt ? gcm_enc_ : gcm_dec_)(kd, &ctx, payload, payload, len, nonce, aad, aad_len, out, out_len);
      wipe_object(ctx);
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
      wipe_object(ctx);
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
      wipe_object(ctx);  // holds the one-time Poly1305 key and keystream
      break;
    }
  }
}

}  // namespace ov2::esp
