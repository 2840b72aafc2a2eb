// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* ov2_tx: XDP on ov2-nic, the worker's end of the offload device.  Plays the
 * Windows transport: looks the packet up in the outbound SPD and hands it to
 * the worker's AF_XDP socket with the IPsecOV2 metadata in front of it
 * (OffloadHandle, TunnelHandle).  PROTECT carries the SA handle, BYPASS carries
 * handle 0 (the worker sends it in clear); DISCARD, no policy and anything that
 * is not IP are dropped: nothing leaves the offload device unclassified. */
/* stddef.h first: bpf_helpers.h would otherwise define a non-constant offsetof
 * that the static asserts in ov2_abi.h cannot use. */
#include <stddef.h>
#include <linux/bpf.h>
#include <linux/icmpv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "ov2_abi.h"
#include "ov2_maps.h"
#include "ov2_parse.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#ifndef IPPROTO_SCTP
#define IPPROTO_SCTP 132
#endif

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, OV2_MAX_POLICIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ov2_spd_trie_key);
	__type(value, struct ov2_spd_candidates);
} spd_trie SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, OV2_MAX_POLICIES);
	__type(key, __u32);
	__type(value, struct ov2_spd_entry);
} spd_entries SEC(".maps");

OV2_XSK_MAP(xsks_map);
OV2_COUNTER_MAP(tx_counters, OV2_TX_COUNTER_MAX);

/* The selectors of one packet. */
struct ov2_flow {
	__u8 saddr[16];
	__u16 proto;
	__u16 sport; /* host order; valid only if has_ports */
	__u16 dport;
	__u8 family;
	__u8 has_ports;
};

static __always_inline int drop(__u32 counter)
{
	ov2_count(&tx_counters, counter);
	return XDP_DROP;
}

/* Source prefix test over the entry's prefix length, byte by byte. */
static __always_inline int src_matches(const struct ov2_spd_entry *e, const struct ov2_flow *f)
{
	__u32 bits = e->src_prefixlen;

	if (bits > 128)
		return 0;
	for (int i = 0; i < 16; i++) {
		__u8 mask;

		if (bits == 0)
			return 1;
		mask = bits >= 8 ? 0xff : (__u8)(0xff << (8 - bits));
		if ((e->saddr[i] ^ f->saddr[i]) & mask)
			return 0;
		bits = bits >= 8 ? bits - 8 : 0;
	}
	return 1;
}

static __always_inline int port_range_is_any(__u16 lo, __u16 hi)
{
	return lo == 0 && hi == 0xffff;
}

/* The remaining selectors of one candidate (the trie matched the destination).
 * A packet without ports (fragment, ICMP, ...) matches only entries whose port
 * ranges are "any" (RFC 4301 OPAQUE is not offered). */
static __always_inline int entry_matches(const struct ov2_spd_entry *e, const struct ov2_flow *f)
{
	if (!e->valid || e->family != f->family)
		return 0;
	if (e->proto != OV2_PROTO_ANY && e->proto != f->proto)
		return 0;
	if (!port_range_is_any(e->sport_lo, e->sport_hi) || !port_range_is_any(e->dport_lo, e->dport_hi)) {
		if (!f->has_ports)
			return 0;
		if (f->sport < e->sport_lo || f->sport > e->sport_hi)
			return 0;
		if (f->dport < e->dport_lo || f->dport > e->dport_hi)
			return 0;
	}
	return src_matches(e, f);
}

static __always_inline int is_neighbour_discovery(const struct ov2_l3_info *l3, void *data_end)
{
	struct icmp6hdr *icmp = l3->l4;

	if (l3->family != OV2_AF_INET6 || l3->proto != IPPROTO_ICMPV6 || l3->fragment)
		return 0;
	/* The header must lie inside the IP packet: deciding on Ethernet padding
	 * behind a short packet would make the verdict depend on bytes that are
	 * not part of it. */
	if ((void *)(icmp + 1) > data_end || (void *)(icmp + 1) > l3->ip_end)
		return 0;
	/* router solicitation/advertisement, neighbour solicitation/advertisement, redirect */
	return icmp->icmp6_type >= 133 && icmp->icmp6_type <= 137;
}

SEC("xdp")
int ov2_tx(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ov2_l3_info l3 = {};
	struct ov2_spd_trie_key trie_key = {};
	struct ov2_flow flow = {};
	struct ov2_spd_candidates *candidates;
	struct ov2_spd_entry *match = NULL;
	struct ov2_meta *meta;
	__u32 queue, counter;
	int res;

	ov2_count(&tx_counters, OV2_TX_RX);
	res = ov2_parse_l3(data, data_end, &l3);
	if (res == OV2_PARSE_NOT_IP)
		return drop(OV2_TX_NOT_IP);
	if (res != OV2_PARSE_OK)
		return drop(OV2_TX_MALFORMED);
	if (is_neighbour_discovery(&l3, data_end))
		return drop(OV2_TX_NOT_IP);

	flow.family = l3.family;
	flow.proto = l3.proto;
	__builtin_memcpy(flow.saddr, l3.saddr, sizeof(flow.saddr));
	if (!l3.fragment &&
	    (l3.proto == IPPROTO_TCP || l3.proto == IPPROTO_UDP || l3.proto == IPPROTO_SCTP)) {
		__be16 *ports = l3.l4; /* source and destination port lead all three headers */

		if ((void *)(ports + 2) > data_end || (void *)(ports + 2) > l3.ip_end)
			return drop(OV2_TX_MALFORMED);
		flow.sport = bpf_ntohs(ports[0]);
		flow.dport = bpf_ntohs(ports[1]);
		flow.has_ports = 1;
	}

	trie_key.prefixlen = 32 + (l3.family == OV2_AF_INET ? 32 : 128); /* family, pad[3], address */
	trie_key.family = l3.family;
	__builtin_memcpy(trie_key.daddr, l3.daddr, sizeof(trie_key.daddr));
	candidates = bpf_map_lookup_elem(&spd_trie, &trie_key);
	if (!candidates)
		return drop(OV2_TX_NO_POLICY);
	for (__u32 i = 0; i < OV2_SPD_MAX_CANDIDATES; i++) {
		struct ov2_spd_entry *e;
		__u32 id;

		if (i >= candidates->count)
			break;
		id = candidates->ids[i];
		e = bpf_map_lookup_elem(&spd_entries, &id);
		if (e && entry_matches(e, &flow)) {
			match = e;
			break;
		}
	}
	if (!match)
		return drop(OV2_TX_NO_POLICY);
	if (match->action == OV2_SPD_PROTECT)
		counter = OV2_TX_PROTECT;
	else if (match->action == OV2_SPD_BYPASS)
		counter = OV2_TX_BYPASS;
	else
		return drop(OV2_TX_DISCARD);

	queue = ctx->rx_queue_index;
	if (!bpf_map_lookup_elem(&xsks_map, &queue))
		return drop(OV2_TX_NO_WORKER);
	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct ov2_meta)))
		return drop(OV2_TX_META_FAIL);
	meta = (void *)(long)ctx->data_meta;
	if ((void *)(meta + 1) > (void *)(long)ctx->data)
		return drop(OV2_TX_META_FAIL);
	meta->nbl.tx.offload_handle = counter == OV2_TX_PROTECT ? match->offload_handle : 0;
	meta->tunnel_handle = counter == OV2_TX_PROTECT ? match->tunnel_handle : 0;
	meta->sa_handle = 0;
	meta->magic = OV2_META_MAGIC;
	meta->version = OV2_META_VERSION;
	meta->dir = OV2_META_DIR_TX;
	meta->wire_vlan_tci = 0;
	if (bpf_redirect_map(&xsks_map, queue, XDP_DROP) != XDP_REDIRECT)
		return drop(OV2_TX_NO_WORKER);
	ov2_count(&tx_counters, counter);
	return XDP_REDIRECT;
}
