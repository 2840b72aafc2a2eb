// The algorithms ipsecov2 knows: names (ours and ip-xfrm's), NDIS identifiers,
// key/salt/ICV/IV sizes.  One table, used by validation, the ESP engine, the
// capabilities report and the CLI.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ov2 {

enum class EncAlg : uint8_t {
  AesGcm128,
  AesGcm192,
  AesGcm256,
  ChaCha20Poly1305,
  AesCbc128,
  AesCbc192,
  AesCbc256,
  Null,
};

enum class AuthAlg : uint8_t {
  None,  // only with an AEAD cipher
  HmacSha256,
  HmacSha1,
  AesGmac128,
  AesGmac192,
  AesGmac256,
};

struct EncAlgInfo {
  EncAlg alg;
  const char* name;        // our canonical name
  const char* xfrm_name;   // ip-xfrm spelling
  uint32_t ndis_id;        // IPSEC_OFFLOAD_V2_ENCRYPTION_* (or OV2_ENCRYPTION_*)
  bool aead;               // combined mode: no separate auth algorithm
  uint8_t key_len;         // cipher key bytes, without salt
  uint8_t salt_len;        // trailing salt in the key material (RFC 4106/7634)
  uint8_t iv_len;          // explicit IV on the wire
  uint8_t block_len;       // padding alignment (1 -> pad to 4)
  uint8_t icv_len;         // AEAD ICV bytes (0 for non-AEAD)
};

struct AuthAlgInfo {
  AuthAlg alg;
  const char* name;
  const char* xfrm_name;
  uint32_t ndis_id;        // IPSEC_OFFLOAD_V2_AUTHENTICATION_*
  uint8_t key_len;         // exact key bytes (GMAC: without salt)
  uint8_t salt_len;        // GMAC: 4-byte salt after the key (RFC 4543)
  uint8_t icv_len;         // truncated ICV bytes on the wire
  uint8_t iv_len;          // GMAC carries an 8-byte IV
};

const std::vector<EncAlgInfo>& enc_algorithms();
const std::vector<AuthAlgInfo>& auth_algorithms();
const EncAlgInfo& info(EncAlg alg);
const AuthAlgInfo& info(AuthAlg alg);

// Parse a name (ours or ip-xfrm's).  Refused algorithms (des, 3des, md5) and
// unknown names throw ov2::Error with a message that lists the accepted names.
EncAlg parse_enc_alg(std::string_view name);
EncAlg parse_aead_alg(std::string_view name);  // only AEAD ciphers
AuthAlg parse_auth_alg(std::string_view name);
// The name in ASCII lower case (how the parsers compare names).
std::string ascii_lower(std::string_view s);

// Capability bitmasks (NDIS identifiers) of what the AF_XDP engine implements.
uint32_t supported_enc_mask();
uint32_t supported_auth_mask();

}  // namespace ov2
