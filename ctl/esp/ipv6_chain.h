// The IPv6 extension headers in front of a Fragment header or the upper
// layer: Hop-by-Hop Options, Routing and Destination Options (RFC 8200 §4.1
// order; on a fragment these are the unfragmentable part, §4.5).  One walk,
// bounded like ov2_wire's (OV2_MAX_IPV6_EXT_HDRS headers), shared by the
// reassembly of outer fragments and the worker's SA lookup, so both find the
// same Fragment header and the same ESP header that ov2_wire found.
#pragma once

#include <cstdint>

#include "ov2_abi.h"

namespace ov2::esp {

struct Ipv6Chain {
  enum class Status : uint8_t {
    Ok,         // `next` is neither Hop-by-Hop, Routing nor Destination Options
    Truncated,  // a header, or its length, runs past the packet
    TooLong,    // more than OV2_MAX_IPV6_EXT_HDRS of them
  };
  Status status = Status::Ok;
  uint32_t off = 40;    // offset of the first header not walked (Fragment header, ESP, ...)
  uint32_t nh_off = 6;  // offset of the Next Header byte that names it (6: the fixed header's)
  uint8_t next = 0;     // its type
};

// Walks the IPv6 packet at `ip`, `len` bytes by its own payload length (at
// least the 40-byte fixed header), through at most `max_headers` headers (the
// ESP engine's own packets: no limit but the packet's length).
inline Ipv6Chain walk_ipv6_chain(const uint8_t* ip, uint32_t len, uint32_t max_headers = OV2_MAX_IPV6_EXT_HDRS) {
  Ipv6Chain c;
  c.next = ip[6];
  for (uint32_t walked = 0;; ++walked) {
    if (c.next != 0 && c.next != 43 && c.next != 60) return c;  // Hop-by-Hop 0, Routing 43, Destination Options 60
    if (walked == max_headers) {
      c.status = Ipv6Chain::Status::TooLong;
      return c;
    }
    if (c.off + 2 > len || c.off + (ip[c.off + 1] + 1u) * 8u > len) {
      c.status = Ipv6Chain::Status::Truncated;
      return c;
    }
    c.nh_off = c.off;
    c.next = ip[c.off];
    c.off += (ip[c.off + 1] + 1u) * 8u;
  }
}

}  // namespace ov2::esp
