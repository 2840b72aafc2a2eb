#include "model/algorithms.h"

#include <algorithm>

#include "common/error.h"
#include "ov2_abi.h"

namespace ov2 {

const std::vector<EncAlgInfo>& enc_algorithms() {
  static const std::vector<EncAlgInfo> table = {
      {EncAlg::AesGcm128, "aes-gcm-128", "rfc4106(gcm(aes))", IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_128, true, 16, 4, 8, 1, 16},
      {EncAlg::AesGcm192, "aes-gcm-192", "rfc4106(gcm(aes))", IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_192, true, 24, 4, 8, 1, 16},
      {EncAlg::AesGcm256, "aes-gcm-256", "rfc4106(gcm(aes))", IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_256, true, 32, 4, 8, 1, 16},
      {EncAlg::ChaCha20Poly1305, "chacha20-poly1305", "rfc7539esp(chacha20,poly1305)", OV2_ENCRYPTION_CHACHA20_POLY1305, true, 32, 4, 8, 1, 16},
      {EncAlg::AesCbc128, "aes-cbc-128", "cbc(aes)", IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_128, false, 16, 0, 16, 16, 0},
      {EncAlg::AesCbc192, "aes-cbc-192", "cbc(aes)", IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_192, false, 24, 0, 16, 16, 0},
      {EncAlg::AesCbc256, "aes-cbc-256", "cbc(aes)", IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_256, false, 32, 0, 16, 16, 0},
      {EncAlg::Null, "null", "ecb(cipher_null)", IPSEC_OFFLOAD_V2_ENCRYPTION_NONE, false, 0, 0, 0, 1, 0},
  };
  return table;
}

const std::vector<AuthAlgInfo>& auth_algorithms() {
  static const std::vector<AuthAlgInfo> table = {
      {AuthAlg::None, "none", "", 0, 0, 0, 0, 0},
      {AuthAlg::HmacSha256, "hmac-sha256", "hmac(sha256)", IPSEC_OFFLOAD_V2_AUTHENTICATION_SHA_256, 32, 0, 16, 0},
      {AuthAlg::HmacSha1, "hmac-sha1", "hmac(sha1)", IPSEC_OFFLOAD_V2_AUTHENTICATION_SHA_1, 20, 0, 12, 0},
      {AuthAlg::AesGmac128, "aes-gmac-128", "rfc4543(gcm(aes))", IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_128, 16, 4, 16, 8},
      {AuthAlg::AesGmac192, "aes-gmac-192", "rfc4543(gcm(aes))", IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_192, 24, 4, 16, 8},
      {AuthAlg::AesGmac256, "aes-gmac-256", "rfc4543(gcm(aes))", IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_256, 32, 4, 16, 8},
  };
  return table;
}

const EncAlgInfo& info(EncAlg alg) {
  for (const auto& i : enc_algorithms())
    if (i.alg == alg) return i;
  fail(ErrorCode::Internal, "unknown encryption algorithm");
}

const AuthAlgInfo& info(AuthAlg alg) {
  for (const auto& i : auth_algorithms())
    if (i.alg == alg) return i;
  fail(ErrorCode::Internal, "unknown authentication algorithm");
}

std::string ascii_lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

namespace {

void refuse_broken(const std::string& n) {
  if (n == "des" || n == "des-cbc" || n == "cbc(des)")
    fail(ErrorCode::Unsupported, "DES is refused: its 56-bit key is broken by exhaustive search (RFC 8221 says MUST NOT); use aes-gcm-128 or aes-cbc-128");
  if (n == "3des" || n == "3des-cbc" || n == "des3_ede" || n == "cbc(des3_ede)")
    fail(ErrorCode::Unsupported, "3DES is refused: its 64-bit block allows Sweet32 collisions (RFC 8221 SHOULD NOT); use aes-gcm-128 or aes-cbc-128");
  if (n == "md5" || n == "hmac-md5" || n == "hmac(md5)")
    fail(ErrorCode::Unsupported, "HMAC-MD5 is refused: MD5 is broken and RFC 8221 says MUST NOT; use hmac-sha256");
}

template <typename Table>
std::string names(const Table& table, bool (*keep)(const typename Table::value_type&)) {
  std::string out;
  for (const auto& i : table) {
    if (!keep(i)) continue;
    if (!out.empty()) out += ", ";
    out += i.name;
  }
  return out;
}

}  // namespace

EncAlg parse_enc_alg(std::string_view name) {
  const std::string n = ascii_lower(name);
  refuse_broken(n);
  for (const auto& i : enc_algorithms()) {
    if (i.aead) continue;
    if (n == i.name || n == i.xfrm_name) {
      // ip-xfrm's cbc(aes) leaves the size to the key; default to 128 and let
      // validation pick the size from the key length.
      return i.alg;
    }
  }
  for (const auto& i : enc_algorithms())
    if (i.aead && (n == i.name || n == i.xfrm_name))
      fail(ErrorCode::InvalidArgument, "'" + std::string(name) + "' is an AEAD cipher: use --aead " + i.name + " instead of --enc");
  fail(ErrorCode::InvalidArgument, "unknown encryption algorithm '" + std::string(name) + "'; use one of: " +
                                       names(enc_algorithms(), [](const EncAlgInfo& i) { return !i.aead; }));
}

EncAlg parse_aead_alg(std::string_view name) {
  const std::string n = ascii_lower(name);
  refuse_broken(n);
  for (const auto& i : enc_algorithms())
    if (i.aead && (n == i.name || n == i.xfrm_name)) return i.alg;
  fail(ErrorCode::InvalidArgument, "unknown AEAD algorithm '" + std::string(name) + "'; use one of: " +
                                       names(enc_algorithms(), [](const EncAlgInfo& i) { return i.aead; }));
}

AuthAlg parse_auth_alg(std::string_view name) {
  const std::string n = ascii_lower(name);
  refuse_broken(n);
  for (const auto& i : auth_algorithms())
    if (i.alg != AuthAlg::None && (n == i.name || n == i.xfrm_name)) return i.alg;
  fail(ErrorCode::InvalidArgument,
       "unknown authentication algorithm '" + std::string(name) + "'; use one of: " +
           names(auth_algorithms(), [](const AuthAlgInfo& i) { return i.alg != AuthAlg::None; }));
}

uint32_t supported_enc_mask() {
  uint32_t m = 0;
  for (const auto& i : enc_algorithms()) m |= i.ndis_id;
  return m;
}

uint32_t supported_auth_mask() {
  uint32_t m = 0;
  for (const auto& i : auth_algorithms()) m |= i.ndis_id;
  return m;
}

}  // namespace ov2
