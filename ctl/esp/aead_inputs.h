// What an ESP AEAD or GMAC transform feeds its cipher besides the payload,
// shared by the OpenSSL (esp_crypto.cpp) and intel-ipsec-mb
// (esp_crypto_ipsecmb.cpp) backends.  Internal to the ESP engine.
#pragma once

#include <cstdint>
#include <cstring>

#include "esp/ip_checksum.h"

namespace ov2::esp {

// The ESP fields every ICV covers besides the payload.
struct EspHeaderFields {
  uint32_t spi;    // host order
  uint64_t seq;    // full 64-bit sequence number
  bool esn;        // the high half is in the ICV
};

// RFC 4106 §3.1: the explicit IV is the 64-bit sequence number, unique under
// one key because the sequence number never repeats.
inline void write_sequence_iv(const EspHeaderFields& h, uint8_t* iv) {
  wire::put32(iv, uint32_t(h.seq >> 32));
  wire::put32(iv + 4, uint32_t(h.seq));
}

// RFC 4106 §5 / RFC 4543 §3 / RFC 7634 §2: nonce = salt || IV (12 bytes),
// AAD = SPI || [seq_hi ||] seq_lo.  Returns the AAD length (8 or 12).
inline uint32_t aead_nonce_and_aad(const uint8_t* salt, const EspHeaderFields& h, const uint8_t* iv, uint8_t* nonce,
                                   uint8_t* aad) {
  std::memcpy(nonce, salt, 4);
  std::memcpy(nonce + 4, iv, 8);
  wire::put32(aad, h.spi);
  if (h.esn) {
    wire::put32(aad + 4, uint32_t(h.seq >> 32));
    wire::put32(aad + 8, uint32_t(h.seq));
    return 12;
  }
  wire::put32(aad + 4, uint32_t(h.seq));
  return 8;
}

}  // namespace ov2::esp
