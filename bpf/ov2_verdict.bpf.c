// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* ov2_verdict: TC ingress on ov2.  The host-side verdict of IPsecOV2 receive:
 * a packet is accepted as decrypted only with valid RX metadata (written by
 * ov2_deliver), CryptoDone and CRYPTO_SUCCESS.  Every other status is counted
 * per status and dropped; SaDeleteReq raises an event to the daemon.  The one
 * plain packet accepted: metadata with SA handle 0 and receive word 0, which
 * the worker sends for its own ICMP errors (accept-plain).  One plain packet
 * is redirected: SA handle 0 and receive word OV2_RX_DELIVER_WIRE, a
 * reassembled UDP datagram that is not NAT-T ESP (IKE), goes to the wire
 * device's ingress (redirect-wire-ingress), with the wire frame's 802.1Q tag
 * put back when it had one (OV2_RX_WIRE_VLAN). */
/* stddef.h first: bpf_helpers.h would otherwise define a non-constant offsetof
 * that the static asserts in ov2_abi.h cannot use. */
#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "ov2_abi.h"
#include "ov2_maps.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* skb->mark for accepted packets; 0 leaves the mark alone.  In .data so the
 * daemon can change it at run time through the skeleton's mmap. */
volatile __u32 verdict_mark SEC(".data") = 0;

/* The wire device's ifindex (set by the daemon when ov2_wire is attached, 0
 * when not), for OV2_RX_DELIVER_WIRE packets. */
volatile __u32 wire_ifindex SEC(".data") = 0;

OV2_COUNTER_MAP(verdict_counters, OV2_VERDICT_COUNTER_MAX);
OV2_COUNTER_MAP(status_counters, OV2_CRYPTO_STATUS_COUNT);

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} events SEC(".maps");

static __always_inline int drop(__u32 counter)
{
	ov2_count(&verdict_counters, counter);
	return TC_ACT_SHOT;
}

SEC("tc")
int ov2_verdict(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	struct ov2_meta *meta = (void *)(long)skb->data_meta;
	struct ov2_event *event;
	__u32 info, status, mark;
	__u64 sa_handle;
	__u16 vlan_tci;

	ov2_count(&verdict_counters, OV2_VERDICT_RX);
	if ((void *)(meta + 1) > data)
		return drop(OV2_VERDICT_DROP_NO_META);
	if (meta->magic != OV2_META_MAGIC || meta->version != OV2_META_VERSION ||
	    meta->dir != OV2_META_DIR_RX)
		return drop(OV2_VERDICT_DROP_NO_META);
	info = meta->nbl.rx.info;
	sa_handle = meta->sa_handle;
	vlan_tci = meta->wire_vlan_tci;
	/* Exactly our metadata, nothing more: checked after the reads so the
	 * compiler cannot fold it into the bounds check the verifier needs. */
	if ((void *)(meta + 1) != data)
		return drop(OV2_VERDICT_DROP_NO_META);

	if (ov2_rx_sa_delete_req(info)) {
		event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
		if (event) {
			event->type = OV2_EVENT_SA_DELETE_REQ;
			event->rx_info = info;
			event->sa_handle = sa_handle;
			bpf_ringbuf_submit(event, 0);
			ov2_count(&verdict_counters, OV2_VERDICT_SA_DELETE_REQ);
		} else {
			ov2_count(&verdict_counters, OV2_VERDICT_EVENT_LOST);
		}
	}

	if (!ov2_rx_crypto_done(info)) {
		/* The worker's own packets (ICMP errors about packets too big for
		 * the tunnel) come with no SA and an all-zero receive word: plain
		 * traffic, no mark.  Only the worker has the shim cookie. */
		if (sa_handle == 0 && info == 0) {
			ov2_count(&verdict_counters, OV2_VERDICT_ACCEPT_PLAIN);
			return TC_ACT_OK;
		}
		/* A reassembled UDP datagram ov2_wire steered to the worker only
		 * because its fragments had no port (IKE to a NAT-T address).  Up
		 * through ov2 it would carry the peer's source on a device with no
		 * address: the reverse-path filter (strict or loose) drops it.  On
		 * the wire's ingress it is received as on the wire: the worker kept
		 * the wire frame's MACs (PACKET_HOST there).  bpf_redirect with
		 * BPF_F_INGRESS goes through netif_rx: ov2_wire, attached in driver
		 * mode, does not run again (no loop through the worker; the verdict
		 * test checks ov2_wire's counters do not move).  Generic XDP also
		 * skips tc-redirected skbs (netif_receive_generic_xdp); were it run,
		 * a whole UDP/4500 IKE datagram would pass as pass-ike. */
		if (sa_handle == 0 && (info == OV2_RX_DELIVER_WIRE || info == (OV2_RX_DELIVER_WIRE | OV2_RX_WIRE_VLAN))) {
			__u32 ifindex = wire_ifindex;

			if (ifindex == 0)
				return drop(OV2_VERDICT_DROP_NO_WIRE);
			/* The wire frame's 802.1Q tag, as the skb's (accelerated)
			 * tag: the wire's receive path hands it to the VLAN
			 * device (vlan_do_receive), as it did the fragments.
			 * Fails only without memory. */
			if ((info & OV2_RX_WIRE_VLAN) &&
			    bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), vlan_tci) != 0)
				return drop(OV2_VERDICT_DROP_VLAN_PUSH);
			ov2_count(&verdict_counters, OV2_VERDICT_REDIRECT_WIRE_INGRESS);
			return bpf_redirect(ifindex, BPF_F_INGRESS);
		}
		return drop(OV2_VERDICT_DROP_NOT_DONE);
	}
	status = ov2_rx_crypto_status(info);
	if (status != CRYPTO_SUCCESS) {
		if (status < OV2_CRYPTO_STATUS_COUNT)
			ov2_count(&status_counters, status);
		return drop(OV2_VERDICT_DROP_STATUS);
	}
	mark = verdict_mark;
	if (mark)
		skb->mark = mark;
	ov2_count(&verdict_counters, OV2_VERDICT_ACCEPT);
	return TC_ACT_OK;
}
