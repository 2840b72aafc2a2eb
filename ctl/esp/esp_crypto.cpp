// HMAC uses OpenSSL's SHA-256/SHA-1 compression state directly (the
// "deprecated" low-level digest API) because in OpenSSL 3.0 every re-init of
// an EVP_MAC/EVP_MD context duplicates the provider context: two heap
// allocations per packet, measured with valgrind.  The ipad/opad states are
// computed once per SA (RFC 2104) and copied per packet as plain structs.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "esp/esp_crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <cstring>

#include "common/error.h"
#include "esp/crypto_backend.h"

namespace ov2::esp {

namespace {

// Algorithms are fetched once per process: a fetch per packet (or per SA)
// costs a provider lookup under a lock.
struct FetchedAlgorithms {
  EVP_CIPHER* gcm128;
  EVP_CIPHER* gcm192;
  EVP_CIPHER* gcm256;
  EVP_CIPHER* chacha;
  EVP_CIPHER* cbc128;
  EVP_CIPHER* cbc192;
  EVP_CIPHER* cbc256;
};

const FetchedAlgorithms& fetched() {
  static const FetchedAlgorithms algs = [] {
    FetchedAlgorithms a{};
    a.gcm128 = EVP_CIPHER_fetch(nullptr, "AES-128-GCM", nullptr);
    a.gcm192 = EVP_CIPHER_fetch(nullptr, "AES-192-GCM", nullptr);
    a.gcm256 = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
    a.chacha = EVP_CIPHER_fetch(nullptr, "ChaCha20-Poly1305", nullptr);
    a.cbc128 = EVP_CIPHER_fetch(nullptr, "AES-128-CBC", nullptr);
    a.cbc192 = EVP_CIPHER_fetch(nullptr, "AES-192-CBC", nullptr);
    a.cbc256 = EVP_CIPHER_fetch(nullptr, "AES-256-CBC", nullptr);
    return a;
  }();
  return algs;
}

EVP_CIPHER* cipher_for(EncAlg alg) {
  const auto& a = fetched();
  switch (alg) {
    case EncAlg::AesGcm128: return a.gcm128;
    case EncAlg::AesGcm192: return a.gcm192;
    case EncAlg::AesGcm256: return a.gcm256;
    case EncAlg::ChaCha20Poly1305: return a.chacha;
    case EncAlg::AesCbc128: return a.cbc128;
    case EncAlg::AesCbc192: return a.cbc192;
    case EncAlg::AesCbc256: return a.cbc256;
    case EncAlg::Null: return nullptr;
  }
  return nullptr;
}

EVP_CIPHER* gmac_cipher_for(AuthAlg alg) {
  const auto& a = fetched();
  switch (alg) {
    case AuthAlg::AesGmac128: return a.gcm128;
    case AuthAlg::AesGmac192: return a.gcm192;
    case AuthAlg::AesGmac256: return a.gcm256;
    default: return nullptr;
  }
}

bool is_hmac(AuthAlg a) { return a == AuthAlg::HmacSha256 || a == AuthAlg::HmacSha1; }
bool is_gmac(AuthAlg a) { return a == AuthAlg::AesGmac128 || a == AuthAlg::AesGmac192 || a == AuthAlg::AesGmac256; }

[[noreturn]] void openssl_failed(const char* what) {
  fail(ErrorCode::Internal, std::string("OpenSSL refused to prepare the SA's ") + what +
                                " context; check that the OpenSSL default provider is available");
}

}  // namespace

CryptoState::CryptoState(const SaSpec& spec, bool encrypt, unsigned slots) {
  const EncAlgInfo& enc = info(spec.enc);
  const AuthAlgInfo& auth = info(spec.auth);
  EVP_CIPHER* cipher = nullptr;
  const uint8_t* key = nullptr;
  const uint8_t* salt = nullptr;
  size_t key_len = 0;

  if (enc.aead) {
    if (spec.auth != AuthAlg::None)
      fail(ErrorCode::Unsupported, "an AEAD cipher carries its own ICV: use auth none with " + std::string(enc.name));
    suite_ = Suite::Aead;
    cipher = cipher_for(spec.enc);
    key_len = enc.key_len;
    if (spec.enc_key.size() != size_t(enc.key_len) + enc.salt_len)
      fail(ErrorCode::InvalidArgument, std::string(enc.name) + " needs " + std::to_string(enc.key_len + enc.salt_len) +
                                           " bytes of key material (key || 4-byte salt)");
    key = spec.enc_key.data();
    salt = key + key_len;
    iv_len_ = 8;
    icv_len_ = enc.icv_len;
  } else if (spec.enc == EncAlg::Null && is_gmac(spec.auth)) {
    suite_ = Suite::Gmac;
    cipher = gmac_cipher_for(spec.auth);
    key_len = auth.key_len;
    if (spec.auth_key.size() != size_t(auth.key_len) + auth.salt_len)
      fail(ErrorCode::InvalidArgument, std::string(auth.name) + " needs " + std::to_string(auth.key_len + auth.salt_len) +
                                           " bytes of key material (key || 4-byte salt)");
    key = spec.auth_key.data();
    salt = key + key_len;
    iv_len_ = 8;
    icv_len_ = auth.icv_len;
  } else if (is_hmac(spec.auth) && !enc.aead) {
    suite_ = spec.enc == EncAlg::Null ? Suite::NullHmac : Suite::CbcHmac;
    cipher = cipher_for(spec.enc);
    key_len = enc.key_len;
    if (spec.enc_key.size() != enc.key_len)
      fail(ErrorCode::InvalidArgument, std::string(enc.name) + " needs a " + std::to_string(enc.key_len) + "-byte key");
    key = spec.enc_key.data();
    iv_len_ = enc.iv_len;
    icv_len_ = auth.icv_len;
    block_len_ = enc.block_len > 4 ? enc.block_len : 4;
    if (spec.auth_key.size() != auth.key_len)
      fail(ErrorCode::InvalidArgument, std::string(auth.name) + " needs a " + std::to_string(auth.key_len) + "-byte key");
  } else {
    fail(ErrorCode::Unsupported, std::string("the ESP engine does not implement ") + enc.name + " with " + auth.name +
                                     "; use an AEAD cipher, aes-cbc with hmac, or null with hmac/gmac");
  }
  if (salt) std::memcpy(salt_, salt, 4);

  if (crypto_backend() == CryptoBackend::IpsecMb && ImbAead::covers(spec.enc, spec.auth)) {
    imb_.emplace(spec.enc, spec.auth, key, salt_, icv_len_);
    return;  // no OpenSSL slots: nslots_ stays 0
  }
  slots_.reset(new Slot[slots == 0 ? 1 : slots]);
  nslots_ = slots == 0 ? 1 : slots;
  for (unsigned i = 0; i < nslots_; ++i) {
    Slot& s = slots_[i];
    if (suite_ != Suite::NullHmac) {
      if (!cipher) openssl_failed("cipher (fetch)");
      s.cipher = EVP_CIPHER_CTX_new();
      if (!s.cipher) openssl_failed("cipher");
      // Key schedule once; per packet only the IV changes.
      if (!EVP_CipherInit_ex2(s.cipher, cipher, nullptr, nullptr, encrypt ? 1 : 0, nullptr)) openssl_failed("cipher");
      if (EVP_CIPHER_CTX_get_key_length(s.cipher) != int(key_len)) openssl_failed("cipher (key length)");
      if (!EVP_CipherInit_ex2(s.cipher, nullptr, key, nullptr, encrypt ? 1 : 0, nullptr)) openssl_failed("cipher");
      if (suite_ == Suite::CbcHmac) EVP_CIPHER_CTX_set_padding(s.cipher, 0);  // ESP pads itself (RFC 4303 §2.4)
    }
  }
  if (suite_ == Suite::CbcHmac || suite_ == Suite::NullHmac) {
    hmac_ = std::make_unique<HmacState>();
    hmac_->prepare(spec.auth == AuthAlg::HmacSha256, spec.auth_key.data(), spec.auth_key.size());
  }
}

CryptoState::~CryptoState() {
  for (unsigned i = 0; i < nslots_; ++i) {
    EVP_CIPHER_CTX_free(slots_[i].cipher);  // cleanses the key schedule
  }
  OPENSSL_cleanse(salt_, sizeof salt_);
  if (hmac_) OPENSSL_cleanse(hmac_.get(), sizeof *hmac_);
}

CryptoState::Slot& CryptoState::acquire() {
  // One slot: the SA belongs to one thread at a time (esp.h), no lock.
  if (nslots_ == 1) return slots_[0];
  // Each thread starts at its own slot so that with slots >= threads nobody waits.
  static std::atomic<unsigned> next_thread{0};
  thread_local unsigned hint = next_thread.fetch_add(1, std::memory_order_relaxed);
  for (unsigned i = hint % nslots_;; i = (i + 1) % nslots_)
    if (!slots_[i].busy.test_and_set(std::memory_order_acquire)) return slots_[i];
}

void HmacState::prepare(bool sha256_digest, const uint8_t* key, size_t key_len) {
  sha256 = sha256_digest;
  uint8_t block[64] = {};
  if (key_len > sizeof block) {  // RFC 2104: longer keys are hashed first
    if (sha256) SHA256(key, key_len, block);
    else SHA1(key, key_len, block);
  } else {
    std::memcpy(block, key, key_len);
  }
  uint8_t pad[64];
  for (int round = 0; round < 2; ++round) {
    for (size_t i = 0; i < sizeof pad; ++i) pad[i] = uint8_t(block[i] ^ (round == 0 ? 0x36 : 0x5c));
    if (sha256) {
      SHA256_CTX& c = round == 0 ? inner256 : outer256;
      SHA256_Init(&c);
      SHA256_Update(&c, pad, sizeof pad);
    } else {
      SHA_CTX& c = round == 0 ? inner1 : outer1;
      SHA1_Init(&c);
      SHA1_Update(&c, pad, sizeof pad);
    }
  }
  OPENSSL_cleanse(block, sizeof block);
  OPENSSL_cleanse(pad, sizeof pad);
}

void CryptoState::compute_icv(const EspHeaderFields& h, const uint8_t* esp_header, const uint8_t* iv,
                              const uint8_t* payload, uint32_t len, uint8_t* out) const {
  uint8_t hi[4];
  wire::put32(hi, uint32_t(h.seq >> 32));
  const HmacState& hmac = *hmac_;
  if (hmac.sha256) {
    SHA256_CTX c = hmac.inner256;  // a struct copy: no allocation
    SHA256_Update(&c, esp_header, 8);
    SHA256_Update(&c, iv, iv_len_);
    SHA256_Update(&c, payload, len);
    if (h.esn) SHA256_Update(&c, hi, 4);  // RFC 4303 §2.2.1: seq_hi follows the payload in the ICV
    uint8_t inner[SHA256_DIGEST_LENGTH];
    SHA256_Final(inner, &c);
    c = hmac.outer256;
    SHA256_Update(&c, inner, sizeof inner);
    SHA256_Final(out, &c);
    OPENSSL_cleanse(&c, sizeof c);
  } else {
    SHA_CTX c = hmac.inner1;
    SHA1_Update(&c, esp_header, 8);
    SHA1_Update(&c, iv, iv_len_);
    SHA1_Update(&c, payload, len);
    if (h.esn) SHA1_Update(&c, hi, 4);
    uint8_t inner[SHA_DIGEST_LENGTH];
    SHA1_Final(inner, &c);
    c = hmac.outer1;
    SHA1_Update(&c, inner, sizeof inner);
    SHA1_Final(out, &c);
    OPENSSL_cleanse(&c, sizeof c);
  }
}

bool CryptoState::seal_openssl(const EspHeaderFields& h, const uint8_t* esp_header, uint8_t* iv, uint8_t* payload,
                               uint32_t len, uint8_t* icv) {
  Slot& s = acquire();
  bool ok = true;
  int outl = 0;
  uint8_t scratch[64];
  switch (suite_) {
    case Suite::Aead:
    case Suite::Gmac: {
      write_sequence_iv(h, iv);
      uint8_t nonce[16], aad[16];
      const uint32_t aad_len = aead_nonce_and_aad(salt_, h, iv, nonce, aad);
      ok = EVP_EncryptInit_ex2(s.cipher, nullptr, nullptr, nonce, nullptr) &&
           EVP_EncryptUpdate(s.cipher, nullptr, &outl, aad, int(aad_len));
      if (suite_ == Suite::Aead) {
        ok = ok && EVP_EncryptUpdate(s.cipher, payload, &outl, payload, int(len));
      } else {  // RFC 4543 §3.3: IV and payload are AAD, nothing is encrypted
        ok = ok && EVP_EncryptUpdate(s.cipher, nullptr, &outl, iv, 8) &&
             EVP_EncryptUpdate(s.cipher, nullptr, &outl, payload, int(len));
      }
      ok = ok && EVP_EncryptFinal_ex(s.cipher, scratch, &outl) &&
           EVP_CIPHER_CTX_ctrl(s.cipher, EVP_CTRL_AEAD_GET_TAG, int(icv_len_), icv) > 0;
      break;
    }
    case Suite::CbcHmac:
    case Suite::NullHmac: {
      if (suite_ == Suite::CbcHmac) {
        // RFC 3602 §3: the CBC IV must be unpredictable: fresh random bytes
        // from OpenSSL's per-thread DRBG.
        ok = RAND_bytes(iv, int(iv_len_)) == 1 && EVP_EncryptInit_ex2(s.cipher, nullptr, nullptr, iv, nullptr) &&
             EVP_EncryptUpdate(s.cipher, payload, &outl, payload, int(len)) && outl == int(len);
      }
      if (ok) {
        compute_icv(h, esp_header, iv, payload, len, scratch);
        std::memcpy(icv, scratch, icv_len_);
      }
      OPENSSL_cleanse(scratch, sizeof scratch);
      break;
    }
  }
  release(s);
  return ok;
}

bool CryptoState::open_openssl(const EspHeaderFields& h, const uint8_t* esp_header, const uint8_t* iv,
                               uint8_t* payload, uint32_t len, const uint8_t* icv) {
  Slot& s = acquire();
  bool ok = true;
  int outl = 0;
  uint8_t scratch[64];
  switch (suite_) {
    case Suite::Aead:
    case Suite::Gmac: {
      uint8_t nonce[16], aad[16];
      const uint32_t aad_len = aead_nonce_and_aad(salt_, h, iv, nonce, aad);
      // SET_TAG only reads (copies) the expected tag: the packet's ICV is
      // passed as it is (the ctrl's pointer is not const).
      ok = EVP_DecryptInit_ex2(s.cipher, nullptr, nullptr, nonce, nullptr) &&
           EVP_CIPHER_CTX_ctrl(s.cipher, EVP_CTRL_AEAD_SET_TAG, int(icv_len_), const_cast<uint8_t*>(icv)) > 0 &&
           EVP_DecryptUpdate(s.cipher, nullptr, &outl, aad, int(aad_len));
      if (suite_ == Suite::Aead) {
        ok = ok && EVP_DecryptUpdate(s.cipher, payload, &outl, payload, int(len));
      } else {
        ok = ok && EVP_DecryptUpdate(s.cipher, nullptr, &outl, iv, 8) &&
             EVP_DecryptUpdate(s.cipher, nullptr, &outl, payload, int(len));
      }
      // The tag check happens here, in the same operation.
      ok = ok && EVP_DecryptFinal_ex(s.cipher, scratch, &outl) > 0;
      break;
    }
    case Suite::CbcHmac:
    case Suite::NullHmac: {
      compute_icv(h, esp_header, iv, payload, len, scratch);
      ok = CRYPTO_memcmp(scratch, icv, icv_len_) == 0;  // constant time
      // Decrypt only what authenticated.
      if (ok && suite_ == Suite::CbcHmac)
        ok = EVP_DecryptInit_ex2(s.cipher, nullptr, nullptr, iv, nullptr) &&
             EVP_DecryptUpdate(s.cipher, payload, &outl, payload, int(len)) && outl == int(len);
      OPENSSL_cleanse(scratch, sizeof scratch);
      break;
    }
  }
  release(s);
  return ok;
}

}  // namespace ov2::esp
