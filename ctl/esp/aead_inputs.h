// What an ESP AEAD or GMAC transform feeds its cipher besides the payload,
// shared by the OpenSSL (esp_crypto.cpp) and intel-ipsec-mb
// (esp_crypto_ipsecmb.cpp) backends.  Internal to the ESP engine.
#pragma once

#include <bit>
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
// one key because the sequence number never repeats.  One 8-byte store:
// aead_nonce_and_aad() loads it back at once.
inline void write_sequence_iv(const EspHeaderFields& h, uint8_t* iv) {
  const uint64_t be = std::endian::native == std::endian::little ? __builtin_bswap64(h.seq) : h.seq;
  std::memcpy(iv, &be, 8);
}

// RFC 4106 §5 / RFC 4543 §3 / RFC 7634 §2: nonce = salt || IV (12 bytes; the
// 8-byte `iv` as on the wire: a peer may choose it other than as the
// sequence number), AAD = SPI || [seq_hi ||] seq_lo.  Both buffers are 16
// bytes (the tail is zero), each written by whole-width stores: the cipher
// reads them right away in 8-, 12- or 16-byte loads, and a load that spans
// two smaller stores cannot take its data from the store buffer (a stall of
// about a dozen cycles per buffer and packet, which the byte-wise form
// paid).  Returns the AAD length (8 or 12).
inline uint32_t aead_nonce_and_aad(const uint8_t* salt, const EspHeaderFields& h, const uint8_t* iv, uint8_t* nonce,
                                   uint8_t* aad) {
  using Block = uint64_t __attribute__((vector_size(16)));
  if constexpr (std::endian::native == std::endian::little) {
    uint32_t salt32;
    uint64_t iv64;
    std::memcpy(&salt32, salt, 4);
    std::memcpy(&iv64, iv, 8);
    const Block n = {salt32 | iv64 << 32, iv64 >> 32};
    std::memcpy(nonce, &n, 16);
    const uint64_t hi_be = __builtin_bswap32(uint32_t(h.seq >> 32)), lo_be = __builtin_bswap32(uint32_t(h.seq));
    const uint64_t spi_be = __builtin_bswap32(h.spi);
    const Block a = h.esn ? Block{spi_be | hi_be << 32, lo_be} : Block{spi_be | lo_be << 32, 0};
    std::memcpy(aad, &a, 16);
  } else {
    std::memset(nonce, 0, 16);
    std::memcpy(nonce, salt, 4);
    std::memcpy(nonce + 4, iv, 8);
    std::memset(aad, 0, 16);
    wire::put32(aad, h.spi);
    if (h.esn) {
      wire::put32(aad + 4, uint32_t(h.seq >> 32));
      wire::put32(aad + 8, uint32_t(h.seq));
    } else {
      wire::put32(aad + 4, uint32_t(h.seq));
    }
  }
  return h.esn ? 12 : 8;
}

}  // namespace ov2::esp
