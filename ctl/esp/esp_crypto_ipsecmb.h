// The intel-ipsec-mb side of CryptoState (esp_crypto.h): one SA's AEAD key,
// expanded once into protected key storage, and the seal/open of one ESP
// payload through the library's direct (synchronous, single-buffer) API.
// Internal to the ESP engine.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/secure_bytes.h"
#include "esp/aead_inputs.h"
#include "model/sa_spec.h"

struct IMB_MGR;
struct gcm_key_data;
struct gcm_context_data;

namespace ov2::esp {

class ImbAead {
 public:
  // AES-GCM or ChaCha20-Poly1305 (`enc`, auth None) or AES-GMAC (enc Null,
  // `auth`).  `key` is the cipher key without its 4-byte salt.  Throws
  // ov2::Error if intel-ipsec-mb cannot run here or does not cover the pair.
  // `salt` (4 bytes) goes into every nonce; `icv_len` is the ICV on the wire.
  ImbAead(EncAlg enc, AuthAlg auth, const uint8_t* key, const uint8_t* salt, uint32_t icv_len);
  ~ImbAead();  // wipes the salt (the key storage wipes itself)

  // True if intel-ipsec-mb implements `enc` with `auth` (see the constructor).
  static bool covers(EncAlg enc, AuthAlg auth);
  // Bytes of protected key storage an SA of `enc` keeps (ChaCha20: its key;
  // AES-GCM/GMAC: the schedule of the code path chosen for this CPU).
  static size_t key_block_bytes(EncAlg enc);

  // ESP (RFC 4106 / RFC 4543 / RFC 7634): writes the sequence number into
  // the 8-byte `iv`, then AEAD: encrypts `payload` in place and writes the
  // ICV; GMAC: the ICV over aad || iv || payload, nothing encrypted.  No
  // allocation, no lock: callable from any number of threads at once.
  void seal(const EspHeaderFields& h, uint8_t* iv, uint8_t* payload, uint32_t len, uint8_t* icv) const;
  // Verifies the ICV (constant time) and decrypts in place.  False if the
  // ICV does not verify (AEAD: the payload is then altered).
  bool open(const EspHeaderFields& h, const uint8_t* iv, uint8_t* payload, uint32_t len, const uint8_t* icv) const;

 private:
  enum class Kind : uint8_t { Gcm, Gmac, ChaCha };
  void tag(const uint8_t* nonce, const uint8_t* aad, uint32_t aad_len, const uint8_t* iv, uint8_t* payload,
           uint32_t len, uint8_t* out, uint32_t out_len, bool encrypt) const;

  // (The process's one manager is not kept here: 8 bytes per SA.)
  // AES-GCM: the code path's one-call encrypt/decrypt for the key length,
  // picked once per SA (null for GMAC and ChaCha20, which go through tag()).
  using GcmFn = void (*)(const gcm_key_data*, gcm_context_data*, uint8_t*, const uint8_t*, uint64_t, const uint8_t*,
                        const uint8_t*, uint64_t, uint8_t*, uint64_t);  // the library's aes_gcm_enc_dec_t
  GcmFn gcm_enc_ = nullptr, gcm_dec_ = nullptr;
  Kind kind_;
  uint8_t aes_key_len_ = 0;  // 16, 24, 32 for GCM/GMAC
  uint8_t salt_[4] = {};
  uint32_t icv_len_;
  SecureBlock key_;          // struct gcm_key_data (AES + GHASH tables) or the raw ChaCha20 key
};

}  // namespace ov2::esp
