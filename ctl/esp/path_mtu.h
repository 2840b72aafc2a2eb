// Path MTU through the tunnel (RFC 4301 §8): what the worker does with a
// plaintext packet that would not fit the wire once encapsulated
// (OutboundSa::max_plaintext says how big a packet fits).
//
//  - IPv4 with DF, and IPv6: an ICMP "fragmentation needed" (RFC 792/1191) /
//    ICMPv6 Packet Too Big (RFC 4443 §3.2, RFC 8201) back to the sender,
//    quoting the packet.  Source address: the quoted packet's destination.
//    Linux XFRM answers from its own address (icmp_send on the gateway), but
//    it generates the error inside the stack; ours arrives from outside, on
//    ov2, where a local source address is a martian (fib_validate_source,
//    accept_local=0) and any other address than one routed through ov2 fails
//    a strict rp_filter.  The destination is routed through ov2 by
//    construction, and the PMTU is keyed on the quoted destination anyway.
//  - IPv4 without DF through a tunnel SA: fragmentation of the inner packet
//    before encapsulation (RFC 4301 §8.1 allows either; each fragment is its
//    own ESP packet, so every peer can open it, even one that does not
//    reassemble outer fragments; the destination host reassembles).  Linux
//    XFRM in tunnel mode encapsulates first and fragments the outer packet
//    (ip_finish_output after xfrm_output), which needs a reassembling peer.
//  - IPv4 without DF through a transport SA: ESP over the whole datagram,
//    then the ESP packet fragmented (what Linux does; transport ESP carries
//    whole datagrams, so the worker first reassembles what the host cut for
//    ov2's MTU).  The receiver reassembles before ESP (esp/reassembly.h; so
//    does ipsecov2's worker).
//
// No I/O, no allocation: the builders work in place in the caller's buffer.
#pragma once

#include <cstdint>

namespace ov2::esp {

// Bytes an ICMP error puts in front of the packet it quotes (IP + ICMP header).
constexpr uint32_t kIcmp4ErrorPrefix = 20 + 8;
constexpr uint32_t kIcmp6ErrorPrefix = 40 + 8;
// RFC 1812 §4.3.2.3: an ICMPv4 error is at most 576 bytes (Linux: the same).
constexpr uint32_t kIcmp4ErrorMax = 576;
// RFC 8200 §5: the IPv6 minimum link MTU; RFC 4443 §2.4(c): an ICMPv6 error
// quotes as much as fits in a packet of this size.
constexpr uint32_t kIpv6MinMtu = 1280;

struct IcmpError {
  uint8_t* data = nullptr;  // first byte of the error's IP header; nullptr: none to send
  uint32_t len = 0;
  explicit operator bool() const { return data != nullptr; }
};

// ICMP destination unreachable, fragmentation needed (type 3 code 4) with
// next-hop MTU `mtu`, about the IPv4 packet at `ip` (`len` bytes, the packet's
// IP header first), written in place: its IP and ICMP headers go into the
// kIcmp4ErrorPrefix bytes in front of `ip` (the caller guarantees them), the
// quote (the packet's first bytes, the error at most kIcmp4ErrorMax bytes) is
// the packet itself.  From the packet's destination to its source, TTL 64,
// DF, both checksums.  Returns no error (and changes nothing) when RFC 1122
// §3.2.2 forbids one: the packet is an ICMP error, a non-first fragment, from
// a source that is not unicast or to a multicast/broadcast destination; or when
// it does not parse (shorter than its header + 8 bytes).
IcmpError icmp4_frag_needed(uint8_t* ip, uint32_t len, uint16_t mtu);

// ICMPv6 Packet Too Big (type 2 code 0) with MTU `mtu` about the IPv6 packet
// at `ip`, in place like icmp4_frag_needed (kIcmp6ErrorPrefix bytes in front;
// the error at most kIpv6MinMtu bytes).  Hop limit 255, checksum with the
// pseudo-header.  No error (RFC 4443 §2.4(e)) about an ICMPv6 error message
// or from an unspecified/multicast source, or for a packet shorter than 48
// bytes.
IcmpError icmp6_packet_too_big(uint8_t* ip, uint32_t len, uint32_t mtu);

// IPv4 fragmentation (RFC 791) of the packet at `ip` (its total length at
// most `len`) into fragments of at most `mtu` bytes.  Returns how many; 0 if
// the packet has DF, does not parse, or `mtu` leaves no 8 bytes of payload.
// An already fragmented packet is fragmented further (offsets added, MF kept
// on the last piece of a non-last fragment).
uint32_t ipv4_fragment_count(const uint8_t* ip, uint32_t len, uint32_t mtu);

// Writes fragment `i` (< ipv4_fragment_count) of the packet at `ip` to `out`
// (room for `mtu` bytes) and returns its length.  Fragment 0 may be written in
// place (out == ip): write the others first, it overwrites the header.
// Options without the copy flag become NOPs in fragments after the first
// (what Linux ip_options_fragment does: the header keeps its length).
uint32_t ipv4_fragment(const uint8_t* ip, uint32_t mtu, uint32_t i, uint8_t* out);

}  // namespace ov2::esp
