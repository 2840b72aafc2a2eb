#include "model/sa_spec.h"

#include "common/error.h"

namespace ov2 {

const char* to_string(Direction d) { return d == Direction::In ? "in" : "out"; }
const char* to_string(Mode m) { return m == Mode::Tunnel ? "tunnel" : "transport"; }

Direction parse_direction(std::string_view s) {
  if (s == "in") return Direction::In;
  if (s == "out") return Direction::Out;
  fail(ErrorCode::InvalidArgument, "direction must be 'in' or 'out', not '" + std::string(s) + "'");
}

Mode parse_mode(std::string_view s) {
  if (s == "tunnel") return Mode::Tunnel;
  if (s == "transport") return Mode::Transport;
  fail(ErrorCode::InvalidArgument, "mode must be 'tunnel' or 'transport', not '" + std::string(s) + "'");
}

namespace {

void check_lifetime(const char* what, const LifetimeLimit& l) {
  if (l.soft != 0 && l.hard != 0 && l.soft >= l.hard)
    fail(ErrorCode::InvalidArgument, std::string("lifetime ") + what + ": the soft limit (" + std::to_string(l.soft) +
                                         ") must be below the hard limit (" + std::to_string(l.hard) + ")");
}

}  // namespace

EncAlg enc_alg_for_key_length(EncAlg alg, size_t len) {
  const EncAlgInfo& want = info(alg);
  if (want.key_len + want.salt_len == len) return alg;
  // Same family (same ip-xfrm spelling), different size.
  for (const auto& i : enc_algorithms())
    if (std::string_view(i.xfrm_name) == want.xfrm_name && i.key_len + i.salt_len == len) return i.alg;
  return alg;  // validation reports the mismatch
}

AuthAlg auth_alg_for_key_length(AuthAlg alg, size_t len) {
  const AuthAlgInfo& want = info(alg);
  if (want.key_len + want.salt_len == len) return alg;
  for (const auto& i : auth_algorithms())
    if (std::string_view(i.xfrm_name) == want.xfrm_name && i.key_len + i.salt_len == len) return i.alg;
  return alg;
}

void validate_sa(const SaSpec& sa) {
  if (sa.spi == 0)
    fail(ErrorCode::InvalidArgument, "SPI 0 is reserved for local use (RFC 4303 §2.1); choose an SPI of 256 or more");
  if (sa.spi <= 255)
    fail(ErrorCode::InvalidArgument, "SPI " + std::to_string(sa.spi) +
                                         " is in the range 1-255 reserved by IANA (RFC 4303 §2.1); choose 256 or more");
  if (sa.src.family != sa.dst.family)
    fail(ErrorCode::InvalidArgument, "source " + sa.src.to_string() + " and destination " + sa.dst.to_string() +
                                         " are of different address families");
  if (sa.dst.is_any())
    fail(ErrorCode::InvalidArgument, "the destination address is the SA's lookup key and cannot be 'any'");
  if (sa.dir == Direction::Out && sa.mode == Mode::Tunnel && sa.src.is_any())
    fail(ErrorCode::InvalidArgument, "an outbound tunnel SA needs a source address for the outer header");

  const EncAlgInfo& enc = info(sa.enc);
  const AuthAlgInfo& auth = info(sa.auth);
  if (enc.aead) {
    if (sa.auth != AuthAlg::None)
      fail(ErrorCode::InvalidArgument, std::string(enc.name) + " is an AEAD cipher and authenticates by itself: "
                                                               "give no --auth algorithm");
    if (sa.enc_key.size() != size_t(enc.key_len) + enc.salt_len)
      fail(ErrorCode::InvalidArgument,
           std::string(enc.name) + " needs " + std::to_string(enc.key_len + enc.salt_len) + " bytes of key material (" +
               std::to_string(enc.key_len) + "-byte key followed by a " + std::to_string(enc.salt_len) +
               "-byte salt), got " + std::to_string(sa.enc_key.size()));
    if (!sa.auth_key.empty())
      fail(ErrorCode::InvalidArgument, std::string(enc.name) + " takes no separate authentication key");
  } else {
    if (sa.auth == AuthAlg::None)
      fail(ErrorCode::InvalidArgument, std::string("ESP without integrity is not permitted: ") + enc.name +
                                           " needs an --auth algorithm (hmac-sha256, hmac-sha1" +
                                           (sa.enc == EncAlg::Null ? ", aes-gmac-128" : "") + ")");
    const bool gmac = auth.iv_len != 0;
    if (gmac && sa.enc != EncAlg::Null)
      fail(ErrorCode::InvalidArgument, std::string(auth.name) + " is AES-GMAC (RFC 4543): it works only with "
                                                                "--enc null; for confidentiality use --aead aes-gcm-*");
    if (sa.enc_key.size() != enc.key_len)
      fail(ErrorCode::InvalidArgument, std::string(enc.name) + " needs a " + std::to_string(enc.key_len) +
                                           "-byte key, got " + std::to_string(sa.enc_key.size()));
    if (sa.auth_key.size() != size_t(auth.key_len) + auth.salt_len)
      fail(ErrorCode::InvalidArgument,
           std::string(auth.name) + " needs " + std::to_string(auth.key_len + auth.salt_len) + " bytes of key" +
               (auth.salt_len ? " material (key followed by a 4-byte salt)" : "") + ", got " +
               std::to_string(sa.auth_key.size()));
  }

  if (!sa.esn && sa.seq_hi != 0)
    fail(ErrorCode::InvalidArgument, "--seq-hi is the ESN high-order sequence number: it needs --esn");

  if (sa.udp_encap) {
    if (sa.encap_sport == 0 || sa.encap_dport == 0)
      fail(ErrorCode::InvalidArgument, "UDP encapsulation ports cannot be 0 (the usual port is 4500)");
  } else if (sa.encap_sport != 4500 || sa.encap_dport != 4500) {
    fail(ErrorCode::InvalidArgument, "--encap-sport/--encap-dport need --encap udp");
  }

  if (sa.replay_window > 65536)
    fail(ErrorCode::InvalidArgument, "replay window " + std::to_string(sa.replay_window) +
                                         " is too large; the maximum is 65536 packets");

  check_lifetime("packets", sa.life_packets);
  check_lifetime("bytes", sa.life_bytes);
  check_lifetime("seconds", sa.life_seconds);

  if (sa.inner_handle != 0 && sa.mode != Mode::Tunnel)
    fail(ErrorCode::InvalidArgument, "--inner puts a transport SA inside this SA: this SA must be in tunnel mode");
}

}  // namespace ov2
