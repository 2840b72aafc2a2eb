// Per-SA crypto state: OpenSSL contexts prepared once (key schedule set at SA
// creation) so that a packet only sets its IV/nonce.  Internal to the ESP
// engine; the packet format lives in esp.cpp.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>

#include <openssl/sha.h>

#include "esp/aead_inputs.h"
#include "esp/esp_crypto_ipsecmb.h"
#include "model/sa_spec.h"

typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;

namespace ov2::esp {

// How the SA protects a payload.
enum class Suite : uint8_t {
  Aead,     // AES-GCM (RFC 4106) or ChaCha20-Poly1305 (RFC 7634)
  Gmac,     // ENCR_NULL_AUTH_AES_GMAC (RFC 4543): authenticated, not encrypted
  CbcHmac,  // AES-CBC (RFC 3602) + HMAC-SHA-256-128 (RFC 4868) / HMAC-SHA-1-96
  NullHmac, // NULL encryption + HMAC
};

// HMAC (RFC 2104) precomputed from the key: the digest states after the
// ipad and opad blocks.  Read-only after prepare(), shared by all threads.
struct HmacState {
  bool sha256 = true;
  SHA256_CTX inner256{}, outer256{};
  SHA_CTX inner1{}, outer1{};
  void prepare(bool sha256_digest, const uint8_t* key, size_t key_len);
};

class CryptoState {
 public:
  // Fetches nothing (algorithms are fetched once per process) and prepares
  // `slots` independent context sets with the SA's keys.  AEAD and GMAC SAs
  // use the process's crypto_backend() (crypto_backend.h) at creation: with
  // intel-ipsec-mb one expanded key serves every thread and `slots` is unused.
  // Throws ov2::Error.
  CryptoState(const SaSpec& spec, bool encrypt, unsigned slots);
  ~CryptoState();
  CryptoState(const CryptoState&) = delete;
  CryptoState& operator=(const CryptoState&) = delete;

  Suite suite() const { return suite_; }
  uint32_t iv_len() const { return iv_len_; }    // explicit IV bytes on the wire
  uint32_t icv_len() const { return icv_len_; }  // ICV bytes on the wire
  uint32_t block_len() const { return block_len_; }  // padding alignment (>= 4)

  // Encrypts `payload` (payload data || padding || pad length || next header,
  // `len` bytes) in place.  `iv` points at the wire IV slot (iv_len() bytes,
  // filled here), `esp_header` at the 8-byte ESP header (already written),
  // `icv` at icv_len() bytes after the payload.  Returns false only if OpenSSL
  // fails.
  bool seal(const EspHeaderFields& h, const uint8_t* esp_header, uint8_t* iv, uint8_t* payload, uint32_t len,
            uint8_t* icv) {
    if (imb_) {  // no slot: the intel-ipsec-mb direct API keeps its state on its stack
      imb_->seal(h, iv, payload, len, icv);
      return true;
    }
    return seal_openssl(h, esp_header, iv, payload, len, icv);
  }
  // Verifies the ICV and decrypts `payload` in place (same layout as seal()).
  // Returns false if the ICV does not verify.
  bool open(const EspHeaderFields& h, const uint8_t* esp_header, const uint8_t* iv, uint8_t* payload, uint32_t len,
            const uint8_t* icv) {
    if (imb_) return imb_->open(h, iv, payload, len, icv);
    return open_openssl(h, esp_header, iv, payload, len, icv);
  }

 private:
  struct Slot {
    std::atomic_flag busy = ATOMIC_FLAG_INIT;
    EVP_CIPHER_CTX* cipher = nullptr;
  };
  Slot& acquire();
  // seal()/open() on OpenSSL (the slots).
  bool seal_openssl(const EspHeaderFields& h, const uint8_t* esp_header, uint8_t* iv, uint8_t* payload, uint32_t len,
                    uint8_t* icv);
  bool open_openssl(const EspHeaderFields& h, const uint8_t* esp_header, const uint8_t* iv, uint8_t* payload,
                    uint32_t len, const uint8_t* icv);
  static void release(Slot& s) { s.busy.clear(std::memory_order_release); }
  // HMAC over ESP header || IV || payload [|| seq_hi]; `out` gets the full digest.
  void compute_icv(const EspHeaderFields& h, const uint8_t* esp_header, const uint8_t* iv, const uint8_t* payload,
                   uint32_t len, uint8_t* out) const;

  Suite suite_;
  uint32_t iv_len_ = 0, icv_len_ = 0, block_len_ = 4;
  uint8_t salt_[4] = {};
  // Only what the SA's suite uses is allocated (RSS per SA, issue #6): the
  // HMAC states (416 bytes) for CBC/NULL + HMAC, the OpenSSL slots unless
  // intel-ipsec-mb does the AEAD.
  std::unique_ptr<HmacState> hmac_;
  unsigned nslots_ = 0;
  std::unique_ptr<Slot[]> slots_;
  // Set: AEAD/GMAC runs on intel-ipsec-mb, not on the slots.  Inline (a heap
  // block of its own cost 64 bytes per SA, issue #6, and a pointer chase).
  std::optional<ImbAead> imb_;
};

}  // namespace ov2::esp
