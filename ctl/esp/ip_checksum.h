// Big-endian field access and the Internet checksum (RFC 1071), shared by the
// ESP engine and the path MTU code (ICMP errors, IPv4 fragments).
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace ov2::esp::wire {

// One load or store and a byte swap each (the compiler does not merge the
// byte-by-byte form of the stores; several run on every packet).
inline uint16_t to_be(uint16_t v) {
  return std::endian::native == std::endian::little ? __builtin_bswap16(v) : v;
}
inline uint32_t to_be(uint32_t v) {
  return std::endian::native == std::endian::little ? __builtin_bswap32(v) : v;
}
inline uint16_t be16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return to_be(v);
}
inline uint32_t be32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return to_be(v);
}
inline void put16(uint8_t* p, uint16_t v) {
  v = to_be(v);
  std::memcpy(p, &v, 2);
}
inline void put32(uint8_t* p, uint32_t v) {
  v = to_be(v);
  std::memcpy(p, &v, 4);
}

// One's complement sum of 16-bit big-endian words (odd tail padded with
// zero), added to `acc`.  The sum does not depend on byte order (RFC 1071
// §2(B)): it adds native 32-bit halves of 8-byte loads and swaps the folded
// 16 bits once at the end, about a fifth of the instructions of a word loop
// (the tunnel header checksum is on every packet).
inline uint32_t sum16(const uint8_t* p, size_t n, uint32_t acc = 0) {
  uint64_t s = 0;  // < 2^47 for any n below 2^32
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    s += (w & 0xffffffffu) + (w >> 32);
  }
  auto add_tail = [&](auto w) {  // a 4-, then a 2-byte tail
    std::memcpy(&w, p, sizeof w);
    s += w;
    p += sizeof w;
    n -= sizeof w;
  };
  if (n >= 4) add_tail(uint32_t{});
  if (n >= 2) add_tail(uint16_t{});
  if (n) {
    const uint8_t tail[2] = {p[0], 0};
    uint16_t w;
    std::memcpy(&w, tail, 2);
    s += w;
  }
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  uint16_t v = uint16_t(s);
  if constexpr (std::endian::native == std::endian::little) v = uint16_t(v >> 8 | v << 8);
  return acc + v;
}
// Two end-around carries bring any 32-bit sum to 16 bits (the first leaves
// at most 0x1fffe, the second at most 0xffff).
inline uint16_t fold(uint32_t acc) {
  acc = (acc & 0xffff) + (acc >> 16);
  acc = (acc & 0xffff) + (acc >> 16);
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
