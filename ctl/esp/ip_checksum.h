// Big-endian field access and the Internet checksum (RFC 1071), shared by the
// ESP engine and the path MTU code (ICMP errors, IPv4 fragments).
#pragma once

#include <cstddef>
#include <cstdint>

namespace ov2::esp::wire {

inline uint16_t be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
inline uint32_t be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
inline void put16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}
inline void put32(uint8_t* p, uint32_t v) {
  put16(p, uint16_t(v >> 16));
  put16(p + 2, uint16_t(v));
}

// One's complement sum of 16-bit big-endian words (odd tail padded with zero).
inline uint32_t sum16(const uint8_t* p, size_t n, uint32_t acc = 0) {
  for (; n >= 2; p += 2, n -= 2) acc += be16(p);
  if (n) acc += uint32_t(p[0]) << 8;
  return acc;
}
inline uint16_t fold(uint32_t acc) {
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return uint16_t(~acc);
}

// Recomputes the IPv4 header checksum in place (IHL from the header).
inline void set_ipv4_checksum(uint8_t* ip) {
  const size_t ihl = size_t(ip[0] & 0x0f) * 4;
  put16(ip + 10, 0);
  put16(ip + 10, fold(sum16(ip, ihl)));
}

// Sum of the IPv6 pseudo-header (RFC 8200 §8.1) of `ip6` for an upper-layer
// packet of `len` bytes and next header `proto`.
inline uint32_t ipv6_pseudo_sum(const uint8_t* ip6, uint32_t len, uint8_t proto) {
  uint32_t acc = sum16(ip6 + 8, 32);  // source and destination addresses
  acc += len >> 16;
  acc += len & 0xffff;
  acc += proto;
  return acc;
}

}  // namespace ov2::esp::wire
