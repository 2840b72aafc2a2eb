#include "esp/path_mtu.h"

#include <algorithm>
#include <cstring>

#include "esp/ip_checksum.h"

namespace ov2::esp {

namespace {

using namespace wire;  // NOLINT(google-build-using-namespace): field access and checksums

constexpr uint8_t kProtoIcmp = 1, kProtoIcmp6 = 58;
constexpr uint16_t kDf = 0x4000, kMf = 0x2000, kOffsetMask = 0x1fff;

bool icmp4_is_error(uint8_t type) { return type == 3 || type == 4 || type == 5 || type == 11 || type == 12; }

// RFC 1122 §3.2.2 / RFC 1812 §4.3.2.7: no error about these.
bool ipv4_may_answer(const uint8_t* ip, uint32_t ihl, uint32_t len) {
  const uint8_t src0 = ip[12], dst0 = ip[16];
  if ((be16(ip + 6) & kOffsetMask) != 0) return false;  // not the first fragment
  if (be32(ip + 12) == 0 || src0 >= 224 || src0 == 127) return false;
  if (dst0 >= 224) return false;  // multicast, limited broadcast, class E
  if (ip[9] == kProtoIcmp && len > ihl && icmp4_is_error(ip[ihl])) return false;
  return true;
}

}  // namespace

IcmpError icmp4_frag_needed(uint8_t* ip, uint32_t len, uint16_t mtu) {
  if (len < 20 || (ip[0] >> 4) != 4) return {};
  const uint32_t ihl = (ip[0] & 0x0f) * 4u;
  if (ihl < 20 || len < ihl + 8 || !ipv4_may_answer(ip, ihl, len)) return {};
  const uint32_t quote = std::min(len, kIcmp4ErrorMax - kIcmp4ErrorPrefix);
  uint8_t* const out = ip - kIcmp4ErrorPrefix;
  uint8_t* const icmp = out + 20;
  const uint32_t total = kIcmp4ErrorPrefix + quote;
  uint8_t addrs[8];
  std::memcpy(addrs, ip + 16, 4);      // error source: the packet's destination
  std::memcpy(addrs + 4, ip + 12, 4);  // error destination: the packet's source
  out[0] = 0x45;
  out[1] = 0xc0;  // precedence internetwork control, like Linux icmp_send
  put16(out + 2, uint16_t(total));
  put16(out + 4, 0);  // atomic datagram (RFC 6864 §4.1: DF set, ID 0)
  put16(out + 6, kDf);
  out[8] = 64;
  out[9] = kProtoIcmp;
  std::memcpy(out + 12, addrs, 8);
  set_ipv4_checksum(out);
  icmp[0] = 3;  // destination unreachable
  icmp[1] = 4;  // fragmentation needed and DF set
  put16(icmp + 2, 0);
  put16(icmp + 4, 0);  // unused (RFC 1191 §4)
  put16(icmp + 6, mtu);
  put16(icmp + 2, fold(sum16(icmp, 8 + quote)));
  return {out, total};
}

IcmpError icmp6_packet_too_big(uint8_t* ip, uint32_t len, uint32_t mtu) {
  if (len < 48 || (ip[0] >> 4) != 6) return {};
  static constexpr uint8_t kUnspecified[16] = {};
  if (ip[8] == 0xff || std::memcmp(ip + 8, kUnspecified, 16) == 0) return {};
  // An ICMPv6 error (type < 128) right after the fixed header: no error about it.
  if (ip[6] == kProtoIcmp6 && ip[40] < 128) return {};
  const uint32_t quote = std::min(len, kIpv6MinMtu - kIcmp6ErrorPrefix);
  uint8_t* const out = ip - kIcmp6ErrorPrefix;
  uint8_t* const icmp = out + 40;
  const uint32_t icmp_len = 8 + quote;
  uint8_t addrs[32];
  std::memcpy(addrs, ip + 24, 16);      // error source: the packet's destination
  std::memcpy(addrs + 16, ip + 8, 16);  // error destination: the packet's source
  out[0] = 0x60;
  out[1] = out[2] = out[3] = 0;
  put16(out + 4, uint16_t(icmp_len));
  out[6] = kProtoIcmp6;
  out[7] = 255;
  std::memcpy(out + 8, addrs, 32);
  icmp[0] = 2;  // packet too big
  icmp[1] = 0;
  put16(icmp + 2, 0);
  put32(icmp + 4, mtu);
  put16(icmp + 2, fold(sum16(icmp, icmp_len, ipv6_pseudo_sum(out, icmp_len, kProtoIcmp6))));
  return {out, 40 + icmp_len};
}

uint32_t ipv4_fragment_count(const uint8_t* ip, uint32_t len, uint32_t mtu) {
  if (len < 20 || (ip[0] >> 4) != 4) return 0;
  const uint32_t ihl = (ip[0] & 0x0f) * 4u;
  const uint32_t total = be16(ip + 2);
  if (ihl < 20 || total <= ihl || total > len || (be16(ip + 6) & kDf)) return 0;
  if (mtu < ihl + 8) return 0;
  const uint32_t chunk = (mtu - ihl) & ~7u;
  return (total - ihl + chunk - 1) / chunk;
}

uint32_t ipv4_fragment(const uint8_t* ip, uint32_t mtu, uint32_t i, uint8_t* out) {
  const uint32_t ihl = (ip[0] & 0x0f) * 4u;
  const uint32_t payload = be16(ip + 2) - ihl;
  const uint32_t chunk = (mtu - ihl) & ~7u;
  const uint32_t first = i * chunk;
  const uint32_t size = std::min(chunk, payload - first);
  const bool last = first + size == payload;
  const uint16_t frag = be16(ip + 6);
  const uint16_t offset = uint16_t((frag & kOffsetMask) + first / 8);
  const bool more = !last || (frag & kMf);
  // Payload first: in place (fragment 0) it does not move; the header is
  // then rewritten over itself.
  std::memmove(out + ihl, ip + ihl + first, size);
  std::memmove(out, ip, ihl);
  put16(out + 2, uint16_t(ihl + size));
  put16(out + 6, uint16_t((frag & ~(kMf | kOffsetMask)) | (more ? kMf : 0) | offset));
  if (i > 0) {
    // RFC 791: options without the copy flag stay in the first fragment only.
    for (uint32_t o = 20; o < ihl;) {
      const uint8_t type = out[o];
      if (type == 0) break;  // end of options
      if (type == 1) {
        ++o;
        continue;
      }
      const uint32_t olen = o + 1 < ihl ? out[o + 1] : 0;
      if (olen < 2 || o + olen > ihl) break;  // malformed: leave the rest
      if (!(type & 0x80)) std::memset(out + o, 1, olen);
      o += olen;
    }
  }
  set_ipv4_checksum(out);
  return ihl + size;
}

}  // namespace ov2::esp
