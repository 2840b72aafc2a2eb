/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ipsecov2 BPF <-> C++ ABI: the one definition of every structure and constant
 * that crosses the boundary between the XDP/TC programs and user space.
 *
 * NDIS names and values are kept exactly (IPsec Task Offload V2, ndis.h /
 * ntddndis.h).  Linux's struct xfrm_offload reuses some of these names with
 * *different* values (bit flags); convert only at the XFRM boundary
 * (ctl/xfrm/xfrm_status.h).
 *
 * Byte order: fields named *_be are network order; everything else is host
 * order.  All structures have explicit padding so BPF and C++ agree.
 */
#ifndef OV2_ABI_H
#define OV2_ABI_H

#ifdef __BPF__
#include <linux/types.h>
#else
#include <linux/types.h>
#include <stddef.h>
#endif

#ifdef __cplusplus
#define OV2_STATIC_ASSERT(c, m) static_assert(c, m)
#else
#define OV2_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif

/* ------------------------------------------------------------------------ */
/* Receive word: NDIS_IPSEC_OFFLOAD_V2_NET_BUFFER_LIST_INFO.Receive          */
/* bit 0 SaDeleteReq, bit 1 CryptoDone, bit 2 NextCryptoDone,                */
/* bits 3..15 reserved, bits 16..31 CryptoStatus (an enumeration).           */
/* ------------------------------------------------------------------------ */
#define OV2_RX_SA_DELETE_REQ     (1u << 0)
#define OV2_RX_CRYPTO_DONE       (1u << 1)
#define OV2_RX_NEXT_CRYPTO_DONE  (1u << 2)
#define OV2_RX_RESERVED_MASK     0x0000fff8u
#define OV2_RX_STATUS_SHIFT      16
#define OV2_RX_STATUS_MASK       0xffff0000u
/* Not an NDIS bit and never in a CryptoDone word: the whole receive word the
 * worker writes (with SA handle 0) for a reassembled UDP datagram that is not
 * NAT-T ESP (a big IKE message to a NAT-T SA's address).  ov2_verdict sends it
 * to the wire device's ingress so it arrives as received on the wire (the
 * peer's source routes via the wire: rp_filter passes).  A reserved bit, so no
 * ov2_rx_make() word equals it, and it differs from accept-plain's 0. */
#define OV2_RX_DELIVER_WIRE      (1u << 15)
/* Only together with OV2_RX_DELIVER_WIRE (and SA handle 0): the wire frame
 * carried one 802.1Q tag, whose TCI is in the shim's / metadata's
 * wire_vlan_tci.  ov2_verdict puts the tag back before the redirect, so the
 * datagram arrives on the wire's VLAN device as it would have. */
#define OV2_RX_WIRE_VLAN         (1u << 14)

/* CryptoStatus: NDIS enumeration, NOT bit flags. */
enum ov2_crypto_status {
	CRYPTO_SUCCESS = 0,
	CRYPTO_GENERIC_ERROR = 1,
	CRYPTO_TRANSPORT_AH_AUTH_FAILED = 2,
	CRYPTO_TRANSPORT_ESP_AUTH_FAILED = 3,
	CRYPTO_TUNNEL_AH_AUTH_FAILED = 4,
	CRYPTO_TUNNEL_ESP_AUTH_FAILED = 5,
	CRYPTO_INVALID_PACKET_SYNTAX = 6,
	CRYPTO_INVALID_PROTOCOL = 7,
	OV2_CRYPTO_STATUS_COUNT = 8,
};

static inline __u32 ov2_rx_sa_delete_req(__u32 w) { return w & OV2_RX_SA_DELETE_REQ; }
static inline __u32 ov2_rx_crypto_done(__u32 w) { return (w & OV2_RX_CRYPTO_DONE) >> 1; }
static inline __u32 ov2_rx_next_crypto_done(__u32 w) { return (w & OV2_RX_NEXT_CRYPTO_DONE) >> 2; }
static inline __u32 ov2_rx_crypto_status(__u32 w) { return w >> OV2_RX_STATUS_SHIFT; }
static inline __u32 ov2_rx_make(__u32 sa_delete_req, __u32 crypto_done, __u32 next_crypto_done,
				__u32 crypto_status)
{
	return (sa_delete_req ? OV2_RX_SA_DELETE_REQ : 0u) | (crypto_done ? OV2_RX_CRYPTO_DONE : 0u) |
	       (next_crypto_done ? OV2_RX_NEXT_CRYPTO_DONE : 0u) |
	       ((crypto_status & 0xffffu) << OV2_RX_STATUS_SHIFT);
}

/* ------------------------------------------------------------------------ */
/* Per-packet metadata carried in the XDP metadata area (data_meta).        */
/* ------------------------------------------------------------------------ */
#define OV2_META_MAGIC 0x4f56324du /* "OV2M" */
#define OV2_META_VERSION 1

/* The 8-byte NDIS union. */
union ov2_nbl_info {
	struct {
		__u64 offload_handle; /* outbound SA bundle handle; 0 = no offload */
	} tx;
	struct {
		__u32 info; /* the receive word above */
		__u32 reserved;
	} rx;
};

enum ov2_meta_dir {
	OV2_META_DIR_TX = 1,
	OV2_META_DIR_RX = 2,
};

struct ov2_meta {
	union ov2_nbl_info nbl; /* 0: NDIS_IPSEC_OFFLOAD_V2_NET_BUFFER_LIST_INFO */
	__u64 tunnel_handle;    /* 8: TX: NDIS ..._TUNNEL_NET_BUFFER_LIST_INFO.TunnelHandle */
	__u64 sa_handle;        /* 16: RX: handle of the (outer) inbound SA; 0 if none */
	__u32 magic;            /* 24: OV2_META_MAGIC */
	__u8 version;           /* 28: OV2_META_VERSION */
	__u8 dir;               /* 29: enum ov2_meta_dir */
	__u16 wire_vlan_tci;    /* 30: RX: the shim's wire_vlan_tci; TX: zero */
};
#define OV2_META_SIZE 32
OV2_STATIC_ASSERT(sizeof(union ov2_nbl_info) == 8, "NDIS union is 8 bytes");
OV2_STATIC_ASSERT(sizeof(struct ov2_meta) == OV2_META_SIZE, "metadata size");
OV2_STATIC_ASSERT(sizeof(struct ov2_meta) % 4 == 0, "metadata must be 4-byte multiple");
OV2_STATIC_ASSERT(sizeof(struct ov2_meta) <= 32, "older kernels cap data_meta at 32 bytes");
OV2_STATIC_ASSERT(offsetof(struct ov2_meta, nbl) == 0, "nbl offset");
OV2_STATIC_ASSERT(offsetof(struct ov2_meta, tunnel_handle) == 8, "tunnel_handle offset");
OV2_STATIC_ASSERT(offsetof(struct ov2_meta, sa_handle) == 16, "sa_handle offset");
OV2_STATIC_ASSERT(offsetof(struct ov2_meta, magic) == 24, "magic offset");
OV2_STATIC_ASSERT(offsetof(struct ov2_meta, version) == 28, "version offset");
OV2_STATIC_ASSERT(offsetof(struct ov2_meta, dir) == 29, "dir offset");

/* ------------------------------------------------------------------------ */
/* Worker -> host shim (EtherType 0x88B5, IEEE local experimental).          */
/* Frame: ethhdr(type 0x88B5) | ov2_shim | inner IP packet                   */
/* ------------------------------------------------------------------------ */
#define OV2_SHIM_ETHERTYPE 0x88B5
struct ov2_shim {
	__u64 cookie;         /* 0: per-boot random; wrong cookie -> dropped */
	__u64 sa_handle;      /* 8: inbound (outer) SA handle */
	__u32 rx_info;        /* 16: the receive word */
	__u16 inner_proto_be; /* 20: EtherType of the inner packet (0x0800 / 0x86DD) */
	__u16 wire_vlan_tci;  /* 22: with OV2_RX_WIRE_VLAN: the wire frame's 802.1Q TCI, host order; else zero */
};
#define OV2_SHIM_SIZE 24
OV2_STATIC_ASSERT(sizeof(struct ov2_shim) == OV2_SHIM_SIZE, "shim size");
OV2_STATIC_ASSERT(offsetof(struct ov2_shim, rx_info) == 16, "shim rx_info offset");

/* ------------------------------------------------------------------------ */
/* NDIS constants                                                           */
/* ------------------------------------------------------------------------ */
/* IPSEC_OFFLOAD_V2_ADD_SA.Flags */
#define IPSEC_OFFLOAD_V2_INBOUND 0x1
#define IPSEC_OFFLOAD_V2_IPV6 0x10
/* IPSEC_OFFLOAD_V2_SECURITY_ASSOCIATION.Flags */
#define IPSEC_OFFLOAD_V2_ESN_SA 0x1
/* IPSEC_OFFLOAD_V2_OPERATION */
#define IPSEC_OFFLOAD_V2_AH 1
#define IPSEC_OFFLOAD_V2_ESP 2
#define IPSEC_OFFLOAD_V2_MAX_EXTENSION_HEADERS 2

/* Authentication algorithm identifiers (also capability bits). */
#define IPSEC_OFFLOAD_V2_AUTHENTICATION_MD5 0x01
#define IPSEC_OFFLOAD_V2_AUTHENTICATION_SHA_1 0x02
#define IPSEC_OFFLOAD_V2_AUTHENTICATION_SHA_256 0x04
#define IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_128 0x08
#define IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_192 0x10
#define IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_256 0x20
/* Encryption algorithm identifiers (also capability bits). */
#define IPSEC_OFFLOAD_V2_ENCRYPTION_NONE 0x001
#define IPSEC_OFFLOAD_V2_ENCRYPTION_DES_CBC 0x002
#define IPSEC_OFFLOAD_V2_ENCRYPTION_3_DES_CBC 0x004
#define IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_128 0x008
#define IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_192 0x010
#define IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_256 0x020
#define IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_128 0x040
#define IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_192 0x080
#define IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_256 0x100
/* Beyond NDIS (no identifier exists there): bits above the NDIS range. */
#define OV2_ENCRYPTION_CHACHA20_POLY1305 0x10000

/* IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TYPE */
#define IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_NONE 0x0
#define IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TRANSPORT 0x1
#define IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TUNNEL 0x2
#define IPSEC_OFFLOAD_V2_TRANSPORT_OVER_UDP_ESP_ENCAPSULATION_TUNNEL 0x4
#define IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TRANSPORT_OVER_TUNNEL 0x8

#define OV2_IPPROTO_ESP 50
#define OV2_NATT_PORT 4500

/* ------------------------------------------------------------------------ */
/* Maps                                                                     */
/* ------------------------------------------------------------------------ */
#define OV2_MAX_SAS 262144      /* inbound SA map capacity (bundles) */
#define OV2_MAX_INBOUND_DESTS 16384 /* local addresses with an inbound SA (inbound_dests) */
#define OV2_MAX_POLICIES 16384  /* SPD entries per direction */
#define OV2_SPD_MAX_CANDIDATES 16 /* policies whose dst prefix covers one trie leaf */
#define OV2_MAX_QUEUES 64
/* Hop-by-Hop, Routing and Destination Options headers walked in front of a
 * Fragment header or the upper layer (ov2_wire, and the worker's reassembly
 * and SA lookup alike); a longer chain is pass-ext-too-deep. */
#define OV2_MAX_IPV6_EXT_HDRS 6

enum ov2_family {
	OV2_AF_INET = 4,
	OV2_AF_INET6 = 6,
};

/* ov2_wire: inbound SA lookup by (SPI, destination). */
struct ov2_sa_key {
	__u32 spi_be;   /* network order, as on the wire */
	__u8 family;    /* enum ov2_family */
	__u8 pad[3];
	__u8 daddr[16]; /* IPv4 in the first 4 bytes, rest zero */
};
OV2_STATIC_ASSERT(sizeof(struct ov2_sa_key) == 24, "sa key size");

#define OV2_SA_F_UDP_ENCAP 0x1 /* SA expects UDP-encapsulated ESP (RFC 3948) */
#define OV2_SA_F_ESN 0x2
#define OV2_SA_F_TUNNEL 0x4
struct ov2_sa_value {
	__u64 handle; /* offload handle of the bundle */
	__u32 flags;  /* OV2_SA_F_* */
	__u16 encap_dport; /* UDP destination port when OV2_SA_F_UDP_ENCAP, host order */
	__u16 pad;
};
OV2_STATIC_ASSERT(sizeof(struct ov2_sa_value) == 16, "sa value size");

/* ov2_wire: inbound_dests, key ov2_sa_key with SPI 0 (family + destination).
 * Whether inbound SAs (sa_map entries) have that destination, by
 * encapsulation: 1 if at least one, else 0 (no entry when neither); user
 * space counts the SAs and writes the entry when a count goes 0 <-> 1.  A
 * non-first fragment has no SPI: ov2_wire sends ESP fragments to the worker
 * only for an address with an ESP SA, UDP fragments only for one with a
 * UDP-encapsulated SA; the rest are the stack's (a router's transit traffic). */
struct ov2_dest_sas {
	__u32 esp;       /* 1: an inbound SA expects plain ESP (IP protocol 50) */
	__u32 udp_encap; /* 1: an inbound SA expects UDP-encapsulated ESP (OV2_SA_F_UDP_ENCAP) */
};
OV2_STATIC_ASSERT(sizeof(struct ov2_dest_sas) == 8, "dest sas size");

/* ov2_tx: outbound SPD.  A trie over (family, destination) whose leaf holds the
 * ids of every policy whose destination prefix covers that leaf, best priority
 * first.  The program checks the remaining selectors over that bounded list. */
struct ov2_spd_trie_key {
	__u32 prefixlen; /* LPM: 32 (family byte + 3 zero pad bytes) + address bits */
	__u8 family;
	__u8 pad[3];
	__u8 daddr[16];
};
OV2_STATIC_ASSERT(sizeof(struct ov2_spd_trie_key) == 24, "spd trie key size");

struct ov2_spd_candidates {
	__u32 count;
	__u32 ids[OV2_SPD_MAX_CANDIDATES]; /* indexes into the policy array */
};

enum ov2_spd_action {
	OV2_SPD_DISCARD = 0,
	OV2_SPD_BYPASS = 1,
	OV2_SPD_PROTECT = 2,
};

#define OV2_PROTO_ANY 0xffff
struct ov2_spd_entry {
	__u8 saddr[16];
	__u8 src_prefixlen;
	__u8 family;
	__u8 action;     /* enum ov2_spd_action */
	__u8 valid;
	__u16 proto;     /* IP protocol, OV2_PROTO_ANY for any */
	__u16 sport_lo, sport_hi; /* host order, inclusive; 0..65535 = any */
	__u16 dport_lo, dport_hi;
	__u16 pad;
	__u32 priority;  /* lower wins */
	__u32 policy_id; /* user-visible id */
	__u64 offload_handle; /* PROTECT: the SA (transport SA of a bundle) */
	__u64 tunnel_handle;  /* PROTECT of a bundle: the tunnel SA, else 0 */
};
OV2_STATIC_ASSERT(sizeof(struct ov2_spd_entry) == 56, "spd entry size");

/* Per-CPU counters, one array per program, indexed by these enums. */
enum ov2_wire_counter {
	OV2_WIRE_RX = 0,
	OV2_WIRE_PASS_NOT_IP,        /* ARP, LLDP, anything but IPv4/IPv6 */
	OV2_WIRE_PASS_NOT_ESP,       /* IP that is neither ESP nor UDP/4500 */
	OV2_WIRE_PASS_FRAGMENT,      /* other IP fragments (not ESP, not UDP to a NAT-T SA's address): the stack's */
	OV2_WIRE_PASS_IKE,           /* UDP/4500 with the non-ESP marker */
	OV2_WIRE_PASS_KEEPALIVE,     /* UDP/4500 NAT keepalive (one 0xff byte) */
	OV2_WIRE_PASS_NO_SA,         /* ESP whose (SPI, dst) has no inbound SA */
	OV2_WIRE_PASS_MALFORMED,     /* truncated or inconsistent headers */
	OV2_WIRE_PASS_ENCAP_MISMATCH,/* ESP vs UDP-ESP does not match the SA */
	OV2_WIRE_PASS_NO_WORKER,     /* SA known but no XSK on this queue */
	OV2_WIRE_REDIRECT,           /* to the worker */
	OV2_WIRE_REDIRECT_FRAGMENT,  /* an ESP fragment to an ESP SA's address, or UDP to a NAT-T SA's address:
	                                the worker reassembles */
	OV2_WIRE_PASS_FRAGMENT_NO_SA,/* an ESP fragment to an address with no ESP SA (ESP between other hosts
	                                through a router): the stack's */
	OV2_WIRE_PASS_EXT_TOO_DEEP,  /* IPv6 with more than OV2_MAX_IPV6_EXT_HDRS extension headers before a
	                                Fragment header or the upper layer: the stack's */
	OV2_WIRE_COUNTER_MAX,
};

enum ov2_tx_counter {
	OV2_TX_RX = 0,
	OV2_TX_PROTECT,      /* metadata written, redirected */
	OV2_TX_BYPASS,       /* redirected with handle 0: forwarded in clear */
	OV2_TX_DISCARD,      /* policy DISCARD */
	OV2_TX_NO_POLICY,    /* no policy matched: dropped */
	OV2_TX_NOT_IP,       /* ARP/other: dropped (device is NOARP) */
	OV2_TX_MALFORMED,
	OV2_TX_META_FAIL,    /* bpf_xdp_adjust_meta refused */
	OV2_TX_NO_WORKER,
	OV2_TX_COUNTER_MAX,
};

enum ov2_deliver_counter {
	OV2_DELIVER_RX = 0,
	OV2_DELIVER_ACCEPTED,     /* shim with the right cookie, meta written */
	OV2_DELIVER_BAD_COOKIE,   /* forged or stale shim: dropped */
	OV2_DELIVER_NOT_SHIM,     /* anything else: dropped */
	OV2_DELIVER_MALFORMED,
	OV2_DELIVER_META_FAIL,
	OV2_DELIVER_COUNTER_MAX,
};

enum ov2_verdict_counter {
	OV2_VERDICT_RX = 0,
	OV2_VERDICT_ACCEPT,
	OV2_VERDICT_DROP_NO_META,    /* no valid metadata: never accepted as decrypted */
	OV2_VERDICT_DROP_NOT_DONE,   /* CryptoDone clear */
	OV2_VERDICT_DROP_STATUS,     /* CryptoDone with a failure status (also per status) */
	OV2_VERDICT_SA_DELETE_REQ,   /* event raised */
	OV2_VERDICT_EVENT_LOST,      /* ring buffer full */
	OV2_VERDICT_ACCEPT_PLAIN,    /* the device's own plain packet (SA handle 0, receive word 0:
	                                the worker's ICMP too-big errors): accepted, not marked */
	OV2_VERDICT_REDIRECT_WIRE_INGRESS, /* SA handle 0, receive word OV2_RX_DELIVER_WIRE (a reassembled
	                                      non-ESP UDP datagram, IKE): to the wire device's ingress */
	OV2_VERDICT_DROP_NO_WIRE,    /* the same with no wire ifindex set (no wire attached) */
	OV2_VERDICT_DROP_VLAN_PUSH,  /* the same with OV2_RX_WIRE_VLAN, and the tag could not be put back */
	OV2_VERDICT_COUNTER_MAX,
};

/* ov2_verdict -> daemon ring buffer record. */
enum ov2_event_type {
	OV2_EVENT_SA_DELETE_REQ = 1,
};
struct ov2_event {
	__u32 type;
	__u32 rx_info;
	__u64 sa_handle;
};
OV2_STATIC_ASSERT(sizeof(struct ov2_event) == 16, "event size");

#endif /* OV2_ABI_H */
