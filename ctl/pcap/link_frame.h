// Link layers of the capture files the pcap tool reads and writes: where the IP
// packet starts in a frame, and how to frame an IP packet again.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "common/ip_addr.h"

namespace ov2::pcap {

enum class LinkKind : uint8_t {
  Ethernet,  // DLT_EN10MB, with any number of 802.1Q / 802.1ad tags
  RawIp,     // DLT_RAW / LINKTYPE_RAW: IPv4 or IPv6 by the version nibble
  Ipv4,      // DLT_IPV4
  Ipv6,      // DLT_IPV6
};

// The link kind of a libpcap DLT value, or nullopt if the tool does not read it.
std::optional<LinkKind> link_kind_for_dlt(int dlt);

// The longest link header the tool keeps (Ethernet + 8 VLAN tags).
constexpr size_t kMaxLinkHeader = 14 + 8 * 4;

// Where the IP packet is in a frame.
struct FrameLayout {
  size_t ip_offset = 0;          // bytes of link header before the IP header (incl. the EtherType)
  std::optional<Family> family;  // nullopt: the frame does not carry IPv4/IPv6 (ARP, LLDP, ...)
};

// Finds the IP packet in `frame`.  Returns nullopt when the frame is too short
// for its own link header (a truncated frame).
std::optional<FrameLayout> locate_ip(LinkKind kind, std::span<const uint8_t> frame);

// The IP version of the packet at `ip` (its first nibble), or nullopt.
std::optional<Family> ip_family(std::span<const uint8_t> ip);

// The EtherType for an IP family (0x0800 / 0x86DD).
uint16_t ethertype_for(Family f);

}  // namespace ov2::pcap
