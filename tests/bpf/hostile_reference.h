// Reference classifier for the hostile-packet tests: what ov2_wire, ov2_tx
// and ov2_deliver must do with any frame, stated from the rules (DESIGN.md §2,
// the counter comments in ov2_abi.h, issue 7) and NOT transliterated from the
// BPF code.  The tests run the same bytes through BPF_PROG_TEST_RUN and
// compare action, output bytes, data_meta and counters with what this file
// says.
//
// The rules, as this file states them:
//
// Link layer (all three programs see Ethernet II; the kernel refuses test runs
// of frames shorter than an Ethernet header, 14 bytes).
//   ov2_wire and ov2_tx skip at most two VLAN tags (TPID 0x8100 or 0x88a8, in
//   any mix); a tag that does not fit in the frame is malformed; whatever
//   follows the second tag is taken as the EtherType, so a third tag is "not
//   IP".  Only 0x0800 and 0x86DD are IP.
// IPv4: version 4, IHL >= 5, header inside the total length, total length
//   inside the frame (bytes after it are Ethernet padding and are ignored);
//   anything else is malformed.  The header checksum is the stack's business.
//   A fragment is any packet with MF set or a non-zero offset (DF and the
//   reserved bit do not make a fragment).  The upper layer starts at IHL*4.
// IPv6: version 6, payload length non-zero (no jumbograms) and inside the
//   frame.  Up to six hop-by-hop (0) / routing (43) / destination-options (60)
//   headers are skipped, each entirely inside the payload; a seventh is
//   malformed.  A fragment header (44), which must fit in the payload, marks a
//   fragment and ends the walk: its next header is the upper layer.  Any other
//   value (AH, no-next-header, mobility, unknown numbers) IS the upper layer.
// ov2_wire (never drops, never writes metadata, passes frames untouched):
//   not IP -> NOT_IP; malformed -> MALFORMED; fragment (before any
//   upper-layer check): of ESP, or of UDP to a destination that has a
//   UDP-encapsulated SA -> REDIRECT_FRAGMENT (NO_WORKER without an XSK)
//   unless offset + payload > 65535 or a non-last payload is empty or not a
//   multiple of 8 (MALFORMED); of anything else -> FRAGMENT.  ESP (50): 8 header bytes inside the IP packet, else
//   malformed.  UDP (17): 8 header bytes inside the IP packet, else malformed;
//   destination port other than 4500 -> NOT_ESP; UDP length < 8 or beyond the
//   IP packet -> malformed; then by UDP payload length (not the frame): 1 byte
//   0xff is a keepalive, 1 other byte malformed, 0/2/3 bytes malformed, first
//   four bytes zero (non-ESP marker) -> IKE, 4..7 bytes otherwise malformed,
//   else UDP-encapsulated ESP.  Every other protocol -> NOT_ESP.  SPI 0 ->
//   malformed.  (SPI, family, destination) not in the SA map -> NO_SA.  The SA
//   wants UDP encapsulation and the packet is plain ESP or the reverse, or
//   the SA wants a UDP port other than 4500 (0 means 4500) -> ENCAP_MISMATCH.
//   No XSK on the queue -> NO_WORKER.  Otherwise REDIRECT, frame unchanged.
// ov2_tx (never passes): not IP -> NOT_IP; malformed -> MALFORMED; an IPv6
//   non-fragment ICMPv6 packet whose 8-byte header lies inside the IP packet
//   and whose type is 133..137 (neighbour discovery) -> NOT_IP.  Non-fragment
//   TCP/UDP/SCTP need the two ports inside the IP packet, else malformed.
//   Then the SPD: the policy of the packet's family with the lowest
//   (priority, id) whose destination prefix, source prefix, protocol and port
//   ranges all match (a packet without ports matches only policies whose port
//   ranges are both "any").  None -> NO_POLICY; DISCARD -> DISCARD; no XSK ->
//   NO_WORKER; PROTECT / BYPASS -> REDIRECT, frame unchanged, metadata
//   {OffloadHandle, TunnelHandle} (both 0 for BYPASS), magic, version, dir TX.
// ov2_deliver (never redirects): EtherType other than 0x88B5 (also a shim
//   behind a VLAN tag) -> NOT_SHIM; a shim that does not fit -> MALFORMED;
//   cookie not the loaded one -> BAD_COOKIE; inner protocol neither 0x0800 nor
//   0x86DD -> MALFORMED; else PASS with the two MAC addresses kept, the
//   EtherType set to the inner protocol, the shim removed, and metadata {rx
//   word, SA handle, magic, version, dir RX, the shim's wire VLAN TCI}.  The inner packet itself is not
//   looked at (the worker built it; the cookie is the proof).
#pragma once

#include <linux/bpf.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "ov2_abi.h"
#include "packet_builder.h"

namespace ov2::test::hostile {

// What a program must do with one frame.
struct Expected {
  bool refused = false;  // test run refused by the kernel: the program never ran
  uint32_t action = XDP_PASS;
  uint32_t counter = 0;  // the outcome counter (RX is counted on every run too)
  Bytes frame;           // the frame after the run (checked for PASS and REDIRECT)
  Bytes meta;            // data_meta after the run (checked for PASS and REDIRECT)
};

// ---------------------------------------------------------------------------
// Network layer
// ---------------------------------------------------------------------------

enum class L3Status { Ip, NotIp, Malformed, TooDeep };

struct L3View {
  L3Status status = L3Status::Malformed;
  uint8_t family = 0;  // enum ov2_family
  uint8_t proto = 0;   // upper-layer protocol
  bool fragment = false;
  bool frag_more = false;  // fragment: MF / M
  size_t frag_offset = 0;  // fragment: payload offset in the datagram, bytes
  size_t l4 = 0;           // offset of the upper-layer header
  size_t ip_end = 0;       // offset just past the IP packet by its own length
  std::array<uint8_t, 16> src{}, dst{};
};

inline uint16_t be16_at(const Bytes& f, size_t off) { return static_cast<uint16_t>(f[off] << 8 | f[off + 1]); }
inline uint32_t be32_at(const Bytes& f, size_t off) {
  return static_cast<uint32_t>(f[off]) << 24 | static_cast<uint32_t>(f[off + 1]) << 16 |
         static_cast<uint32_t>(f[off + 2]) << 8 | f[off + 3];
}

inline constexpr size_t kEthHeader = 14;
inline constexpr int kMaxVlanTags = 2;
inline constexpr int kMaxIpv6OptionHeaders = 6;

inline L3View malformed_l3() { return L3View{}; }

inline L3View parse_ipv4(const Bytes& f, size_t ip) {
  L3View v;
  if (f.size() < ip + 20) return malformed_l3();
  const unsigned version = f[ip] >> 4;
  const size_t header_bytes = (f[ip] & 0x0fu) * 4u;
  const size_t total = be16_at(f, ip + 2);
  if (version != 4 || header_bytes < 20) return malformed_l3();
  if (total < header_bytes || ip + total > f.size()) return malformed_l3();
  v.status = L3Status::Ip;
  v.family = OV2_AF_INET;
  const uint16_t flags_offset = be16_at(f, ip + 6);
  const bool more_fragments = flags_offset & 0x2000;
  const bool nonzero_offset = (flags_offset & 0x1fff) != 0;
  v.fragment = more_fragments || nonzero_offset;
  v.frag_more = more_fragments;
  v.frag_offset = (flags_offset & 0x1fffu) * 8u;
  v.proto = f[ip + 9];
  v.l4 = ip + header_bytes;
  v.ip_end = ip + total;
  std::copy_n(&f[ip + 12], 4, v.src.begin());
  std::copy_n(&f[ip + 16], 4, v.dst.begin());
  return v;
}

inline bool is_ipv6_option_header(uint8_t type) { return type == 0 || type == 43 || type == 60; }

inline L3View parse_ipv6(const Bytes& f, size_t ip) {
  L3View v;
  if (f.size() < ip + 40) return malformed_l3();
  if ((f[ip] >> 4) != 6) return malformed_l3();
  const size_t payload = be16_at(f, ip + 4);
  if (payload == 0 || ip + 40 + payload > f.size()) return malformed_l3();
  v.family = OV2_AF_INET6;
  v.ip_end = ip + 40 + payload;
  std::copy_n(&f[ip + 8], 16, v.src.begin());
  std::copy_n(&f[ip + 24], 16, v.dst.begin());
  uint8_t next = f[ip + 6];
  size_t at = ip + 40;
  int option_headers = 0;
  while (is_ipv6_option_header(next)) {
    if (at + 2 > v.ip_end) return malformed_l3();
    const size_t length = (static_cast<size_t>(f[at + 1]) + 1) * 8;
    if (at + length > v.ip_end) return malformed_l3();
    next = f[at];
    at += length;
    if (++option_headers > kMaxIpv6OptionHeaders) {  // a sound seventh header: too deep to go on
      L3View deep;
      deep.status = L3Status::TooDeep;
      return deep;
    }
  }
  if (next == 44) {
    if (at + 8 > v.ip_end) return malformed_l3();
    v.fragment = true;
    v.frag_more = f[at + 3] & 1;
    v.frag_offset = be16_at(f, at + 2) & 0xfff8u;
    next = f[at];
    at += 8;
  }
  v.status = L3Status::Ip;
  v.proto = next;
  v.l4 = at;
  return v;
}

// Ethernet, at most two VLAN tags, IPv4 or IPv6.
inline L3View parse_network_layer(const Bytes& f) {
  if (f.size() < kEthHeader) return malformed_l3();
  uint16_t type = be16_at(f, 12);
  size_t at = kEthHeader;
  for (int tags = 0; tags < kMaxVlanTags && (type == 0x8100 || type == 0x88a8); ++tags) {
    if (f.size() < at + 4) return malformed_l3();
    type = be16_at(f, at + 2);
    at += 4;
  }
  if (type == 0x0800) return parse_ipv4(f, at);
  if (type == 0x86dd) return parse_ipv6(f, at);
  L3View v;
  v.status = L3Status::NotIp;
  return v;
}

// ---------------------------------------------------------------------------
// ov2_wire
// ---------------------------------------------------------------------------

struct SaEntry {
  bool udp_encap = false;
  uint16_t encap_dport = 0;  // 0 = the standard 4500
};

// What ov2_wire's maps hold in a test.
struct WireWorld {
  // (SPI, family, destination bytes; IPv4 in the first 4) -> SA.
  std::map<std::tuple<uint32_t, uint8_t, std::array<uint8_t, 16>>, SaEntry> sas;
  bool worker_xsk = false;  // an XSK registered for queue 0
  // (family, destination) with a plain ESP / a UDP-encapsulated SA: inbound_dests.
  std::set<std::pair<uint8_t, std::array<uint8_t, 16>>> esp_dests, natt_dests;

  void add(uint32_t spi, const std::string& dst, SaEntry sa) {
    const Bytes d = addr(dst);
    std::array<uint8_t, 16> key{};
    std::copy(d.begin(), d.end(), key.begin());
    const uint8_t family = static_cast<uint8_t>(d.size() == 4 ? OV2_AF_INET : OV2_AF_INET6);
    sas[{spi, family, key}] = sa;
    (sa.udp_encap ? natt_dests : esp_dests).insert({family, key});
  }
};

inline Expected wire_pass(const Bytes& f, uint32_t counter) { return Expected{false, XDP_PASS, counter, f, {}}; }

inline Expected expect_wire(const Bytes& f, const WireWorld& world) {
  if (f.size() < kEthHeader) return Expected{.refused = true};
  const L3View l3 = parse_network_layer(f);
  if (l3.status == L3Status::NotIp) return wire_pass(f, OV2_WIRE_PASS_NOT_IP);
  if (l3.status == L3Status::Malformed) return wire_pass(f, OV2_WIRE_PASS_MALFORMED);
  if (l3.status == L3Status::TooDeep) return wire_pass(f, OV2_WIRE_PASS_EXT_TOO_DEEP);
  if (l3.fragment) {
    // ESP fragments to an address with an ESP SA (UDP ones: with a NAT-T SA)
    // go to the worker for reassembly, unless their offset and length cannot
    // belong to a datagram of at most 65535 bytes; other ESP fragments are a
    // router's transit traffic.
    if (l3.proto != 17 && l3.proto != OV2_IPPROTO_ESP) return wire_pass(f, OV2_WIRE_PASS_FRAGMENT);
    if (l3.proto == 17 && !world.natt_dests.count({l3.family, l3.dst})) return wire_pass(f, OV2_WIRE_PASS_FRAGMENT);
    if (l3.proto == OV2_IPPROTO_ESP && !world.esp_dests.count({l3.family, l3.dst}))
      return wire_pass(f, OV2_WIRE_PASS_FRAGMENT_NO_SA);
    const size_t payload = l3.ip_end - l3.l4;
    if (l3.frag_offset + payload > 65535 || (l3.frag_more && (payload == 0 || payload % 8 != 0)))
      return wire_pass(f, OV2_WIRE_PASS_MALFORMED);
    if (!world.worker_xsk) return wire_pass(f, OV2_WIRE_PASS_NO_WORKER);
    return Expected{false, XDP_REDIRECT, OV2_WIRE_REDIRECT_FRAGMENT, f, {}};
  }

  uint32_t spi = 0;
  bool udp_encapsulated = false;
  if (l3.proto == OV2_IPPROTO_ESP) {
    if (l3.l4 + 8 > l3.ip_end) return wire_pass(f, OV2_WIRE_PASS_MALFORMED);
    spi = be32_at(f, l3.l4);
  } else if (l3.proto == 17) {
    if (l3.l4 + 8 > l3.ip_end) return wire_pass(f, OV2_WIRE_PASS_MALFORMED);
    if (be16_at(f, l3.l4 + 2) != OV2_NATT_PORT) return wire_pass(f, OV2_WIRE_PASS_NOT_ESP);
    const size_t udp_length = be16_at(f, l3.l4 + 4);
    if (udp_length < 8 || l3.l4 + udp_length > l3.ip_end) return wire_pass(f, OV2_WIRE_PASS_MALFORMED);
    const size_t payload = udp_length - 8;
    const size_t p = l3.l4 + 8;
    if (payload == 1) return wire_pass(f, f[p] == 0xff ? OV2_WIRE_PASS_KEEPALIVE : OV2_WIRE_PASS_MALFORMED);
    if (payload < 4) return wire_pass(f, OV2_WIRE_PASS_MALFORMED);
    if (be32_at(f, p) == 0) return wire_pass(f, OV2_WIRE_PASS_IKE);
    if (payload < 8) return wire_pass(f, OV2_WIRE_PASS_MALFORMED);
    spi = be32_at(f, p);
    udp_encapsulated = true;
  } else {
    return wire_pass(f, OV2_WIRE_PASS_NOT_ESP);
  }
  if (spi == 0) return wire_pass(f, OV2_WIRE_PASS_MALFORMED);
  const auto sa = world.sas.find({spi, l3.family, l3.dst});
  if (sa == world.sas.end()) return wire_pass(f, OV2_WIRE_PASS_NO_SA);
  if (sa->second.udp_encap != udp_encapsulated) return wire_pass(f, OV2_WIRE_PASS_ENCAP_MISMATCH);
  if (udp_encapsulated && sa->second.encap_dport != 0 && sa->second.encap_dport != OV2_NATT_PORT)
    return wire_pass(f, OV2_WIRE_PASS_ENCAP_MISMATCH);
  if (!world.worker_xsk) return wire_pass(f, OV2_WIRE_PASS_NO_WORKER);
  return Expected{false, XDP_REDIRECT, OV2_WIRE_REDIRECT, f, {}};
}

// ---------------------------------------------------------------------------
// ov2_tx
// ---------------------------------------------------------------------------

struct RefPolicy {
  uint32_t id = 0;
  uint8_t family = OV2_AF_INET;
  std::array<uint8_t, 16> dst{};
  unsigned dst_len = 0;
  std::array<uint8_t, 16> src{};
  unsigned src_len = 0;
  uint16_t proto = OV2_PROTO_ANY;
  uint16_t sport_lo = 0, sport_hi = 0xffff;
  uint16_t dport_lo = 0, dport_hi = 0xffff;
  uint8_t action = OV2_SPD_DISCARD;  // enum ov2_spd_action
  uint32_t priority = 1000;
  uint64_t offload_handle = 0;
  uint64_t tunnel_handle = 0;
};

struct TxWorld {
  std::vector<RefPolicy> policies;
  bool worker_xsk = false;
};

// The first `bits` bits of a and b are equal.
inline bool prefix_equal(const std::array<uint8_t, 16>& a, const std::array<uint8_t, 16>& b, unsigned bits) {
  for (unsigned bit = 0; bit < bits; ++bit) {
    const unsigned byte = bit / 8, shift = 7 - bit % 8;
    if (((a[byte] >> shift) & 1) != ((b[byte] >> shift) & 1)) return false;
  }
  return true;
}

inline Expected tx_drop(uint32_t counter) { return Expected{false, XDP_DROP, counter, {}, {}}; }

inline Expected expect_tx(const Bytes& f, const TxWorld& world) {
  if (f.size() < kEthHeader) return Expected{.refused = true};
  const L3View l3 = parse_network_layer(f);
  if (l3.status == L3Status::NotIp) return tx_drop(OV2_TX_NOT_IP);
  if (l3.status == L3Status::Malformed || l3.status == L3Status::TooDeep) return tx_drop(OV2_TX_MALFORMED);
  if (l3.family == OV2_AF_INET6 && l3.proto == 58 && !l3.fragment && l3.l4 + 8 <= l3.ip_end && f[l3.l4] >= 133 &&
      f[l3.l4] <= 137)
    return tx_drop(OV2_TX_NOT_IP);

  bool has_ports = false;
  uint16_t sport = 0, dport = 0;
  if (!l3.fragment && (l3.proto == 6 || l3.proto == 17 || l3.proto == 132)) {
    if (l3.l4 + 4 > l3.ip_end) return tx_drop(OV2_TX_MALFORMED);
    sport = be16_at(f, l3.l4);
    dport = be16_at(f, l3.l4 + 2);
    has_ports = true;
  }
  const RefPolicy* best = nullptr;
  for (const RefPolicy& p : world.policies) {
    if (p.family != l3.family || !prefix_equal(p.dst, l3.dst, p.dst_len) || !prefix_equal(p.src, l3.src, p.src_len))
      continue;
    if (p.proto != OV2_PROTO_ANY && p.proto != l3.proto) continue;
    const bool any_ports = p.sport_lo == 0 && p.sport_hi == 0xffff && p.dport_lo == 0 && p.dport_hi == 0xffff;
    if (!any_ports &&
        (!has_ports || sport < p.sport_lo || sport > p.sport_hi || dport < p.dport_lo || dport > p.dport_hi))
      continue;
    if (!best || std::tie(p.priority, p.id) < std::tie(best->priority, best->id)) best = &p;
  }
  if (!best) return tx_drop(OV2_TX_NO_POLICY);
  if (best->action == OV2_SPD_DISCARD) return tx_drop(OV2_TX_DISCARD);
  if (!world.worker_xsk) return tx_drop(OV2_TX_NO_WORKER);
  if (best->action == OV2_SPD_PROTECT)
    return Expected{false, XDP_REDIRECT, OV2_TX_PROTECT, f, tx_meta_bytes(best->offload_handle, best->tunnel_handle)};
  return Expected{false, XDP_REDIRECT, OV2_TX_BYPASS, f, tx_meta_bytes(0, 0)};
}

// ---------------------------------------------------------------------------
// ov2_deliver
// ---------------------------------------------------------------------------

inline Expected deliver_drop(uint32_t counter) { return Expected{false, XDP_DROP, counter, {}, {}}; }

inline Expected expect_deliver(const Bytes& f, uint64_t loaded_cookie) {
  if (f.size() < kEthHeader) return Expected{.refused = true};
  if (be16_at(f, 12) != OV2_SHIM_ETHERTYPE) return deliver_drop(OV2_DELIVER_NOT_SHIM);
  const size_t shim = kEthHeader;
  if (f.size() < shim + OV2_SHIM_SIZE) return deliver_drop(OV2_DELIVER_MALFORMED);
  // The worker writes cookie, handle and receive word in host order.
  uint64_t cookie = 0, sa_handle = 0;
  uint32_t rx_word = 0;
  uint16_t wire_vlan_tci = 0;
  std::memcpy(&cookie, &f[shim + 0], 8);
  std::memcpy(&sa_handle, &f[shim + 8], 8);
  std::memcpy(&rx_word, &f[shim + 16], 4);
  std::memcpy(&wire_vlan_tci, &f[shim + 22], 2);
  const uint16_t inner = be16_at(f, shim + 20);
  if (cookie != loaded_cookie) return deliver_drop(OV2_DELIVER_BAD_COOKIE);
  if (inner != 0x0800 && inner != 0x86dd) return deliver_drop(OV2_DELIVER_MALFORMED);

  Bytes out(f.begin(), f.begin() + 12);  // destination and source MAC kept
  out.push_back(static_cast<uint8_t>(inner >> 8));
  out.push_back(static_cast<uint8_t>(inner));
  out.insert(out.end(), f.begin() + static_cast<long>(shim + OV2_SHIM_SIZE), f.end());
  return Expected{false, XDP_PASS, OV2_DELIVER_ACCEPTED, out, rx_meta_bytes(rx_word, sa_handle, wire_vlan_tci)};
}

}  // namespace ov2::test::hostile
