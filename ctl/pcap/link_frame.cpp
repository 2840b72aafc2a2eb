#include "pcap/link_frame.h"

#include <pcap/dlt.h>

#include "esp/ip_checksum.h"

namespace ov2::pcap {

namespace {
constexpr uint16_t kEtherTypeIpv4 = 0x0800;
constexpr uint16_t kEtherTypeIpv6 = 0x86DD;
constexpr uint16_t kEtherTypeVlan = 0x8100;  // 802.1Q
constexpr uint16_t kEtherTypeQinQ = 0x88A8;  // 802.1ad
constexpr uint16_t kEtherTypeQinQ_old = 0x9100;

using esp::wire::be16;
}  // namespace

std::optional<LinkKind> link_kind_for_dlt(int dlt) {
  switch (dlt) {
    case DLT_EN10MB:
      return LinkKind::Ethernet;
    case DLT_RAW:  // libpcap maps LINKTYPE_RAW (101) in files to DLT_RAW
      return LinkKind::RawIp;
    case DLT_IPV4:
      return LinkKind::Ipv4;
    case DLT_IPV6:
      return LinkKind::Ipv6;
    default:
      return std::nullopt;
  }
}

std::optional<Family> ip_family(std::span<const uint8_t> ip) {
  if (ip.empty()) return std::nullopt;
  switch (ip[0] >> 4) {
    case 4:
      return Family::V4;
    case 6:
      return Family::V6;
    default:
      return std::nullopt;
  }
}

std::optional<FrameLayout> locate_ip(LinkKind kind, std::span<const uint8_t> frame) {
  FrameLayout out;
  switch (kind) {
    case LinkKind::RawIp:
      out.family = ip_family(frame);
      return out;
    case LinkKind::Ipv4:
      out.family = Family::V4;
      return out;
    case LinkKind::Ipv6:
      out.family = Family::V6;
      return out;
    case LinkKind::Ethernet:
      break;
  }
  size_t off = 12;
  while (true) {
    if (frame.size() < off + 2 || off + 2 > kMaxLinkHeader) return std::nullopt;
    const uint16_t type = be16(&frame[off]);
    if (type == kEtherTypeVlan || type == kEtherTypeQinQ || type == kEtherTypeQinQ_old) {
      off += 4;
      continue;
    }
    out.ip_offset = off + 2;
    if (type == kEtherTypeIpv4)
      out.family = Family::V4;
    else if (type == kEtherTypeIpv6)
      out.family = Family::V6;
    return out;
  }
}

uint16_t ethertype_for(Family f) { return f == Family::V4 ? kEtherTypeIpv4 : kEtherTypeIpv6; }

}  // namespace ov2::pcap
