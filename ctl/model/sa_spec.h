// What an SA is, as the user asked for it: the control plane validates it, the
// engines install it, the ESP engine runs it.  Mirrors NDIS
// IPSEC_OFFLOAD_V2_ADD_SA plus what Linux users expect (explicit mode, NAT-T
// ports, replay window, lifetimes).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/ip_addr.h"
#include "common/secure_bytes.h"
#include "model/algorithms.h"

namespace ov2 {

enum class Direction : uint8_t { In, Out };
enum class Mode : uint8_t { Tunnel, Transport };

const char* to_string(Direction d);
const char* to_string(Mode m);
Direction parse_direction(std::string_view s);  // "in" | "out"
Mode parse_mode(std::string_view s);            // "tunnel" | "transport"

// Soft and hard limits; 0 means "no limit".
struct LifetimeLimit {
  uint64_t soft = 0;
  uint64_t hard = 0;
  bool operator==(const LifetimeLimit&) const = default;
};

// The fields are ordered by alignment, not by meaning, so that the spec packs
// into 144 bytes (160 in the order of meaning): the daemon keeps one per SA
// (issue #6).  By meaning: dir, mode, src, dst, spi; enc, auth and their
// keys; esn, seq_hi; udp_encap and its ports; replay_window; lifetimes;
// inner_handle.
struct SaSpec {
  SecureBytes enc_key;   // key || salt for AEAD (RFC 4106/7634)
  SecureBytes auth_key;  // HMAC key, or GMAC key || salt (RFC 4543)

  LifetimeLimit life_packets;
  LifetimeLimit life_bytes;
  LifetimeLimit life_seconds;

  // Bundle: this (tunnel-mode) SA carries the transport-mode SA `inner` inside.
  uint64_t inner_handle = 0;

  uint32_t spi = 0;
  uint32_t seq_hi = 0;          // ESN high-order 32 bits (NDIS SequenceNumberHighOrder)
  uint32_t replay_window = 64;  // inbound; 0 disables anti-replay
  uint16_t encap_sport = 4500;
  uint16_t encap_dport = 4500;

  Direction dir = Direction::Out;
  Mode mode = Mode::Tunnel;
  EncAlg enc = EncAlg::AesGcm128;
  AuthAlg auth = AuthAlg::None;
  bool esn = false;
  bool udp_encap = false;  // RFC 3948, with encap_sport/encap_dport

  IpAddr src;  // tunnel: outer source; transport: the host's address. all-zero = any (inbound only)
  IpAddr dst;  // the SA's destination (inbound lookup key with SPI)
};
static_assert(sizeof(SaSpec) == 144, "SaSpec packs without padding holes (see above)");

// Checks one SA on its own (everything that does not need the database):
// key lengths vs algorithms, SPI range, ESN, encapsulation vs family, mode
// and endpoints, lifetimes, replay window.  Throws ov2::Error with a message
// that says what is wrong and what to do; never mentions key bytes.
void validate_sa(const SaSpec& sa);

// ip-xfrm spellings leave the AES key size to the key: pick the variant whose
// key length matches (e.g. rfc4106(gcm(aes)) with a 36-byte key -> aes-gcm-256).
EncAlg enc_alg_for_key_length(EncAlg alg, size_t key_material_len);
AuthAlg auth_alg_for_key_length(AuthAlg alg, size_t key_material_len);

}  // namespace ov2
