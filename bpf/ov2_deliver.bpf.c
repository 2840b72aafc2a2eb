// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* ov2_deliver: XDP on ov2, the host's end of the offload device.  The only
 * sender into ov2 is the worker (through ov2-nic); it wraps every decrypted
 * packet in a shim carrying the receive word, the SA handle and the per-boot
 * cookie.  A shim with the right cookie becomes data_meta (dir RX) and an
 * Ethernet frame of the inner protocol; anything else is dropped, so nothing
 * can reach ov2_verdict claiming CryptoDone without the cookie. */
/* stddef.h first: bpf_helpers.h would otherwise define a non-constant offsetof
 * that the static asserts in ov2_abi.h cannot use. */
#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "ov2_abi.h"
#include "ov2_maps.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by the loader before load (rodata): the per-boot random shim cookie. */
const volatile __u64 cookie = 0;

OV2_COUNTER_MAP(deliver_counters, OV2_DELIVER_COUNTER_MAX);

static __always_inline int drop(__u32 counter)
{
	ov2_count(&deliver_counters, counter);
	return XDP_DROP;
}

SEC("xdp")
int ov2_deliver(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ov2_shim *shim;
	struct ov2_meta *meta;
	unsigned char macs[2 * ETH_ALEN];
	__u64 sa_handle;
	__u32 rx_info;
	__u16 wire_vlan_tci;
	__be16 inner_proto;

	ov2_count(&deliver_counters, OV2_DELIVER_RX);
	if ((void *)(eth + 1) > data_end)
		return drop(OV2_DELIVER_MALFORMED);
	if (eth->h_proto != bpf_htons(OV2_SHIM_ETHERTYPE))
		return drop(OV2_DELIVER_NOT_SHIM);
	shim = (void *)(eth + 1);
	if ((void *)(shim + 1) > data_end)
		return drop(OV2_DELIVER_MALFORMED);
	if (shim->cookie != cookie)
		return drop(OV2_DELIVER_BAD_COOKIE);
	inner_proto = shim->inner_proto_be;
	if (inner_proto != bpf_htons(ETH_P_IP) && inner_proto != bpf_htons(ETH_P_IPV6))
		return drop(OV2_DELIVER_MALFORMED);
	sa_handle = shim->sa_handle;
	rx_info = shim->rx_info;
	wire_vlan_tci = shim->wire_vlan_tci;
	__builtin_memcpy(macs, eth, sizeof(macs));

	/* Drop the shim: the new Ethernet header ends where the shim ended. */
	if (bpf_xdp_adjust_head(ctx, (int)sizeof(struct ov2_shim)))
		return drop(OV2_DELIVER_MALFORMED);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return drop(OV2_DELIVER_MALFORMED);
	__builtin_memcpy(eth, macs, sizeof(macs));
	eth->h_proto = inner_proto;

	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct ov2_meta)))
		return drop(OV2_DELIVER_META_FAIL);
	meta = (void *)(long)ctx->data_meta;
	if ((void *)(meta + 1) > (void *)(long)ctx->data)
		return drop(OV2_DELIVER_META_FAIL);
	meta->nbl.rx.info = rx_info;
	meta->nbl.rx.reserved = 0;
	meta->tunnel_handle = 0;
	meta->sa_handle = sa_handle;
	meta->magic = OV2_META_MAGIC;
	meta->version = OV2_META_VERSION;
	meta->dir = OV2_META_DIR_RX;
	meta->wire_vlan_tci = wire_vlan_tci;
	ov2_count(&deliver_counters, OV2_DELIVER_ACCEPTED);
	return XDP_PASS;
}
