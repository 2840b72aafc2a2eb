/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* BPF-only packet parsing shared by ov2_wire and ov2_tx: Ethernet with up to
 * two VLAN tags, IPv4 (options honoured) and IPv6 (extension header chain,
 * bounded).  Every read is bounds-checked against data_end; nothing here
 * modifies the packet. */
#ifndef OV2_PARSE_H
#define OV2_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "ov2_abi.h"

#define OV2_MAX_VLAN_DEPTH 2 /* 802.1Q, and 802.1ad outer + 802.1Q inner */

#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

enum ov2_parse_result {
  OV2_PARSE_OK = 0,
  OV2_PARSE_NOT_IP,    /* neither IPv4 nor IPv6 (ARP, LLDP, a third VLAN tag, ...) */
  OV2_PARSE_MALFORMED, /* truncated, or length fields inconsistent */
  OV2_PARSE_TOO_DEEP,  /* more than OV2_MAX_IPV6_EXT_HDRS (ov2_abi.h) IPv6 extension headers */
};

struct ov2_vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

/* The fields the programs need from the network layer. */
struct ov2_l3_info {
	void *l4;        /* upper-layer header (after IPv4 options / IPv6 ext headers) */
	void *ip_end;    /* end of the IP packet by its own length field (<= data_end) */
	__u8 family;     /* enum ov2_family */
	__u8 proto;      /* upper-layer protocol */
	__u8 fragment;   /* IPv4 MF/offset, or an IPv6 fragment header */
	__u8 frag_more;  /* fragment: MF / M set */
	__u16 frag_offset; /* fragment: offset of its payload in the datagram, bytes */
	__u8 saddr[16];  /* IPv4 in the first 4 bytes, rest zero */
	__u8 daddr[16];
};

/* Walks Ethernet and at most OV2_MAX_VLAN_DEPTH VLAN tags.  On OV2_PARSE_OK,
 * *proto_be is the EtherType after the tags and *l3 points behind them. */
static __always_inline int ov2_parse_eth(void *data, void *data_end, __be16 *proto_be, void **l3)
{
	struct ethhdr *eth = data;
	void *pos;
	__be16 proto;

	if ((void *)(eth + 1) > data_end)
		return OV2_PARSE_MALFORMED;
	proto = eth->h_proto;
	pos = eth + 1;
#pragma unroll
	for (int i = 0; i < OV2_MAX_VLAN_DEPTH; i++) {
		struct ov2_vlan_hdr *vlan = pos;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vlan + 1) > data_end)
			return OV2_PARSE_MALFORMED;
		proto = vlan->encapsulated_proto;
		pos = vlan + 1;
	}
	*proto_be = proto;
	*l3 = pos;
	return OV2_PARSE_OK;
}

/* IPv4: rejects IHL < 5, a header or total length beyond the frame, a total
 * length shorter than the header, and a version other than 4. */
static __always_inline int ov2_parse_ipv4(void *l3, void *data_end, struct ov2_l3_info *out)
{
	struct iphdr *ip = l3;
	__u32 header_len, total_len;

	if ((void *)(ip + 1) > data_end)
		return OV2_PARSE_MALFORMED;
	if (ip->version != 4 || ip->ihl < 5)
		return OV2_PARSE_MALFORMED;
	header_len = ip->ihl * 4;
	total_len = bpf_ntohs(ip->tot_len);
	if (total_len < header_len)
		return OV2_PARSE_MALFORMED;
	if (l3 + total_len > data_end) /* Ethernet padding after the packet is fine */
		return OV2_PARSE_MALFORMED;
	out->family = OV2_AF_INET;
	out->proto = ip->protocol;
	out->fragment = (ip->frag_off & bpf_htons(0x3fff)) != 0;
	out->frag_more = (ip->frag_off & bpf_htons(0x2000)) != 0;
	out->frag_offset = (bpf_ntohs(ip->frag_off) & 0x1fff) * 8;
	out->l4 = l3 + header_len;
	out->ip_end = l3 + total_len;
	__builtin_memset(out->saddr, 0, sizeof(out->saddr));
	__builtin_memset(out->daddr, 0, sizeof(out->daddr));
	__builtin_memcpy(out->saddr, &ip->saddr, 4);
	__builtin_memcpy(out->daddr, &ip->daddr, 4);
	return OV2_PARSE_OK;
}

struct ov2_ipv6_opt_hdr {
	__u8 nexthdr;
	__u8 hdrlen; /* in 8-octet units, not counting the first 8 */
};

struct ov2_ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 identification;
};

/* IPv6: walks hop-by-hop, routing and destination-options headers (at most
 * OV2_MAX_IPV6_EXT_HDRS); a fragment header sets `fragment` and ends the walk
 * with its next header as the protocol.  Payload length 0 (jumbogram) or beyond
 * the frame is malformed. */
static __always_inline int ov2_parse_ipv6(void *l3, void *data_end, struct ov2_l3_info *out)
{
	struct ipv6hdr *ip6 = l3;
	void *pos;
	__u32 payload_len;
	__u8 next;

	if ((void *)(ip6 + 1) > data_end)
		return OV2_PARSE_MALFORMED;
	if (ip6->version != 6)
		return OV2_PARSE_MALFORMED;
	payload_len = bpf_ntohs(ip6->payload_len);
	if (payload_len == 0)
		return OV2_PARSE_MALFORMED;
	if ((void *)(ip6 + 1) + payload_len > data_end)
		return OV2_PARSE_MALFORMED;
	out->family = OV2_AF_INET6;
	out->fragment = 0;
	out->frag_more = 0;
	out->frag_offset = 0;
	out->ip_end = (void *)(ip6 + 1) + payload_len;
	__builtin_memcpy(out->saddr, &ip6->saddr, 16);
	__builtin_memcpy(out->daddr, &ip6->daddr, 16);

	next = ip6->nexthdr;
	pos = ip6 + 1;
	for (int i = 0; i <= OV2_MAX_IPV6_EXT_HDRS; i++) { /* the last round finds the upper layer */
		if (next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS) {
			struct ov2_ipv6_opt_hdr *opt = pos;

			if ((void *)(opt + 1) > data_end)
				return OV2_PARSE_MALFORMED;
			next = opt->nexthdr;
			pos += ((__u32)opt->hdrlen + 1) * 8;
			if (pos > out->ip_end)
				return OV2_PARSE_MALFORMED;
			continue;
		}
		if (next == IPPROTO_FRAGMENT) {
			struct ov2_ipv6_frag_hdr *frag = pos;

			if ((void *)(frag + 1) > data_end || (void *)(frag + 1) > out->ip_end)
				return OV2_PARSE_MALFORMED;
			out->fragment = 1;
			out->frag_more = (frag->frag_off & bpf_htons(1)) != 0;
			out->frag_offset = bpf_ntohs(frag->frag_off) & 0xfff8;
			next = frag->nexthdr;
			pos = frag + 1;
		}
		out->proto = next;
		out->l4 = pos;
		return OV2_PARSE_OK;
	}
	return OV2_PARSE_TOO_DEEP;
}

/* Ethernet + VLAN + IPv4/IPv6 in one call. */
static __always_inline int ov2_parse_l3(void *data, void *data_end, struct ov2_l3_info *out)
{
	__be16 proto;
	void *l3;
	int res = ov2_parse_eth(data, data_end, &proto, &l3);

	if (res != OV2_PARSE_OK)
		return res;
	if (proto == bpf_htons(ETH_P_IP))
		return ov2_parse_ipv4(l3, data_end, out);
	if (proto == bpf_htons(ETH_P_IPV6))
		return ov2_parse_ipv6(l3, data_end, out);
	return OV2_PARSE_NOT_IP;
}

#endif /* OV2_PARSE_H */
