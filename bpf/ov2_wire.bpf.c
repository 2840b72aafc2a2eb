// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* ov2_wire: XDP on the wire interface.  Inbound ESP (IP protocol 50, or
 * UDP-encapsulated on port 4500, RFC 3948) whose (SPI, destination) is an
 * inbound SA goes to the worker's AF_XDP socket on this queue; everything else
 * passes to the stack untouched.  Writes no metadata: a frame from the wire can
 * never claim CryptoDone.
 *
 * Fragments are reassembled by the worker before ESP (RFC 4303 §3.4.1).  A
 * non-first fragment has no SPI (and a UDP one no port), so the destination
 * address decides (inbound_dests, kept by user space): an ESP fragment goes to
 * the worker only if its destination has an inbound ESP SA, a UDP fragment
 * only if its destination has an inbound UDP-encapsulated SA.  Every other
 * fragment passes untouched: ESP between two other hosts through a router
 * (pass-fragment-no-sa) is the stack's to forward, as is anything not ESP.
 * The worker drops a reassembled ESP datagram without an SA (rx-no-sa); it
 * opens what is NAT-T ESP with an SA and hands any other reassembled UDP
 * datagram (IKE) back to the stack. */
/* stddef.h first: bpf_helpers.h would otherwise define a non-constant offsetof
 * that the static asserts in ov2_abi.h cannot use. */
#include <stddef.h>
#include <linux/bpf.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "ov2_abi.h"
#include "ov2_maps.h"
#include "ov2_parse.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OV2_MAX_SAS);
	__type(key, struct ov2_sa_key);
	__type(value, struct ov2_sa_value);
} sa_map SEC(".maps");

/* (SPI 0, family, destination) -> inbound SAs to it, by encapsulation. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OV2_MAX_INBOUND_DESTS);
	__type(key, struct ov2_sa_key);
	__type(value, struct ov2_dest_sas);
} inbound_dests SEC(".maps");

OV2_XSK_MAP(xsks_map);
OV2_COUNTER_MAP(wire_counters, OV2_WIRE_COUNTER_MAX);

#define OV2_ESP_HDR_LEN 8 /* SPI + sequence number */
#define OV2_MAX_DATAGRAM 65535

static __always_inline int pass(__u32 counter)
{
	ov2_count(&wire_counters, counter);
	return XDP_PASS;
}

/* To the worker's XSK on this queue, counted as `counter`; no XSK: pass. */
static __always_inline int to_worker(struct xdp_md *ctx, __u32 counter)
{
	__u32 queue = ctx->rx_queue_index;

	if (!bpf_map_lookup_elem(&xsks_map, &queue))
		return pass(OV2_WIRE_PASS_NO_WORKER);
	if (bpf_redirect_map(&xsks_map, queue, XDP_PASS) != XDP_REDIRECT)
		return pass(OV2_WIRE_PASS_NO_WORKER);
	ov2_count(&wire_counters, counter);
	return XDP_REDIRECT;
}

SEC("xdp")
int ov2_wire(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ov2_l3_info l3 = {};
	struct ov2_sa_key key = {};
	struct ov2_sa_value *sa;
	__u32 udp_encap = 0;
	__u8 *esp;
	int res;

	ov2_count(&wire_counters, OV2_WIRE_RX);
	res = ov2_parse_l3(data, data_end, &l3);
	if (res == OV2_PARSE_NOT_IP)
		return pass(OV2_WIRE_PASS_NOT_IP);
	if (res == OV2_PARSE_TOO_DEEP)
		return pass(OV2_WIRE_PASS_EXT_TOO_DEEP);
	if (res != OV2_PARSE_OK)
		return pass(OV2_WIRE_PASS_MALFORMED);
	if (l3.fragment) {
		__u32 payload = l3.ip_end - l3.l4;
		struct ov2_dest_sas *dest;

		if (l3.proto != IPPROTO_UDP && l3.proto != OV2_IPPROTO_ESP)
			return pass(OV2_WIRE_PASS_FRAGMENT);
		key.family = l3.family;
		__builtin_memcpy(key.daddr, l3.daddr, sizeof(key.daddr));
		dest = bpf_map_lookup_elem(&inbound_dests, &key);
		if (l3.proto == IPPROTO_UDP && (!dest || dest->udp_encap == 0))
			return pass(OV2_WIRE_PASS_FRAGMENT);
		if (l3.proto == OV2_IPPROTO_ESP && (!dest || dest->esp == 0))
			return pass(OV2_WIRE_PASS_FRAGMENT_NO_SA);
		/* RFC 791 / 8200: the datagram ends within 65535 bytes and every
		 * fragment but the last carries a non-zero multiple of 8. */
		if ((__u32)l3.frag_offset + payload > OV2_MAX_DATAGRAM ||
		    (l3.frag_more && (payload == 0 || (payload & 7) != 0)))
			return pass(OV2_WIRE_PASS_MALFORMED);
		return to_worker(ctx, OV2_WIRE_REDIRECT_FRAGMENT);
	}

	if (l3.proto == OV2_IPPROTO_ESP) {
		esp = l3.l4;
		if ((void *)(esp + OV2_ESP_HDR_LEN) > data_end || (void *)(esp + OV2_ESP_HDR_LEN) > l3.ip_end)
			return pass(OV2_WIRE_PASS_MALFORMED);
	} else if (l3.proto == IPPROTO_UDP) {
		struct udphdr *udp = l3.l4;
		__u32 udp_len, payload_len;

		if ((void *)(udp + 1) > data_end || (void *)(udp + 1) > l3.ip_end)
			return pass(OV2_WIRE_PASS_MALFORMED);
		if (udp->dest != bpf_htons(OV2_NATT_PORT))
			return pass(OV2_WIRE_PASS_NOT_ESP);
		udp_len = bpf_ntohs(udp->len);
		if (udp_len < sizeof(*udp) || (void *)udp + udp_len > l3.ip_end)
			return pass(OV2_WIRE_PASS_MALFORMED);
		payload_len = udp_len - sizeof(*udp);
		esp = (__u8 *)(udp + 1);
		if (payload_len == 1) {
			if ((void *)(esp + 1) > data_end)
				return pass(OV2_WIRE_PASS_MALFORMED);
			return pass(esp[0] == 0xff ? OV2_WIRE_PASS_KEEPALIVE : OV2_WIRE_PASS_MALFORMED);
		}
		if (payload_len < 4 || (void *)(esp + 4) > data_end)
			return pass(OV2_WIRE_PASS_MALFORMED);
		if (*(__u32 *)esp == 0) /* RFC 3948 non-ESP marker: IKE */
			return pass(OV2_WIRE_PASS_IKE);
		if (payload_len < OV2_ESP_HDR_LEN || (void *)(esp + OV2_ESP_HDR_LEN) > data_end)
			return pass(OV2_WIRE_PASS_MALFORMED);
		udp_encap = 1;
	} else {
		return pass(OV2_WIRE_PASS_NOT_ESP);
	}

	/* RFC 4303: SPI 0 is reserved and never on the wire. */
	key.spi_be = *(__u32 *)esp;
	if (key.spi_be == 0)
		return pass(OV2_WIRE_PASS_MALFORMED);
	key.family = l3.family;
	__builtin_memcpy(key.daddr, l3.daddr, sizeof(key.daddr));
	sa = bpf_map_lookup_elem(&sa_map, &key);
	if (!sa)
		return pass(OV2_WIRE_PASS_NO_SA);
	if (((sa->flags & OV2_SA_F_UDP_ENCAP) != 0) != udp_encap)
		return pass(OV2_WIRE_PASS_ENCAP_MISMATCH);
	if (udp_encap && sa->encap_dport != 0 && sa->encap_dport != OV2_NATT_PORT)
		return pass(OV2_WIRE_PASS_ENCAP_MISMATCH);

	return to_worker(ctx, OV2_WIRE_REDIRECT);
}
