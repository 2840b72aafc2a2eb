// XFRM netlink requests for the NIC engine, built with libmnl, attribute for
// attribute as iproute2 6.1's `ip xfrm state add ... offload dev DEV dir in|out`
// sends them (tests/xfrm compare against captured iproute2 requests), and the
// parsers for what the kernel sends back (GETSA / GETAE replies).
//
// Key material is written straight into the request buffer (no temporaries),
// and the buffer is wiped with OPENSSL_cleanse when the request dies.
#pragma once

#include <linux/netlink.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/ip_addr.h"
#include "model/sa_spec.h"

namespace ov2::xfrm {

// XFRMA_SA_DIR (Linux 6.10+; not in Debian 12's <linux/xfrm.h>).
inline constexpr uint16_t kXfrmaSaDir = 40;
inline constexpr uint8_t kXfrmSaDirIn = 1;
inline constexpr uint8_t kXfrmSaDirOut = 2;

enum class OffloadKind : uint8_t {
  None,    // a plain software SA (no XFRMA_OFFLOAD_DEV)
  Crypto,  // NIC encrypts/decrypts, the kernel does ESP framing
  Packet,  // NIC does the whole ESP job; needs matching policies (build_new_policy)
};
const char* to_string(OffloadKind kind);

// Everything an XFRM state message needs beyond the SaSpec.
struct NewSaOptions {
  uint32_t reqid = 0;
  OffloadKind offload = OffloadKind::Crypto;
  int ifindex = 0;  // the offload device; required unless offload == None
  // Fill the selector with the SA's endpoints as full-length prefixes, like
  // `ip xfrm state add ... sel src S dst D`.  Off: a zero selector, like
  // iproute2 without `sel` (the usual choice for tunnel mode).
  bool host_selector = false;
  // Also send XFRMA_SA_DIR.  iproute2 6.1 does not (it predates the
  // attribute), so off by default for parity.
  bool sa_dir_attr = false;
};

// The kernel's key of an SA: (daddr, spi, proto, family), plus the source
// address iproute2 sends with delete/get (XFRMA_SRCADDR).
struct SaId {
  IpAddr dst;
  IpAddr src;
  uint32_t spi = 0;    // host order
  uint8_t proto = 50;  // IPPROTO_ESP
  Family family() const { return dst.family; }
};
SaId sa_id_of(const SaSpec& sa);

// One netlink request in its own buffer.  Move-only; the buffer is wiped on
// destruction because ADD requests carry keys.
class NetlinkRequest {
 public:
  explicit NetlinkRequest(size_t capacity = 2048);
  ~NetlinkRequest();
  NetlinkRequest(NetlinkRequest&& other) noexcept;
  NetlinkRequest& operator=(NetlinkRequest&& other) noexcept;
  NetlinkRequest(const NetlinkRequest&) = delete;
  NetlinkRequest& operator=(const NetlinkRequest&) = delete;

  nlmsghdr* header() { return reinterpret_cast<nlmsghdr*>(buf_.data()); }
  const nlmsghdr* header() const { return reinterpret_cast<const nlmsghdr*>(buf_.data()); }
  // The message as it goes on the wire (nlmsg_len bytes).
  std::span<const uint8_t> bytes() const { return {buf_.data(), header()->nlmsg_len}; }
  size_t capacity() const { return buf_.size(); }

 private:
  void wipe();
  std::vector<uint8_t> buf_;
};

// XFRM_MSG_NEWSA for `sa`, flags NLM_F_REQUEST|NLM_F_ACK (what `ip xfrm state
// add` sends).  Attributes, in iproute2's order: XFRMA_ALG_AEAD, or
// XFRMA_ALG_CRYPT then XFRMA_ALG_AUTH_TRUNC; XFRMA_ENCAP (NAT-T);
// XFRMA_OFFLOAD_DEV; XFRMA_REPLAY_ESN_VAL (ESN, or a window > 32);
// XFRMA_SA_DIR if asked.  Throws ov2::Error(InvalidArgument) for an SA the
// kernel cannot express (e.g. missing ifindex for offload); never mentions keys.
NetlinkRequest build_new_sa(const SaSpec& sa, const NewSaOptions& options);

// XFRM_MSG_DELSA: xfrm_usersa_id + XFRMA_SRCADDR (as `ip xfrm state delete`).
NetlinkRequest build_delete_sa(const SaId& id);
// XFRM_MSG_GETSA: same body; the reply is an XFRM_MSG_NEWSA (parse_sa).
NetlinkRequest build_get_sa(const SaId& id);

// The ESN replay state (struct xfrm_replay_state_esn with its bitmap).
struct ReplayEsn {
  uint32_t oseq = 0;
  uint32_t seq = 0;
  uint32_t oseq_hi = 0;
  uint32_t seq_hi = 0;
  uint32_t replay_window = 0;
  std::vector<uint32_t> bitmap;  // bmp_len words
};

// XFRM_MSG_GETAE (xfrm_aevent_id with XFRM_AE_RVAL): the reply is an
// XFRM_MSG_NEWAE carrying XFRMA_REPLAY_ESN_VAL (parse_ae).
NetlinkRequest build_get_ae(const SaId& id, uint32_t reqid);
// XFRM_MSG_NEWAE with NLM_F_REPLACE and XFRMA_REPLAY_ESN_VAL: replaces the
// SA's whole replay state.  The kernel requires the full state with the same
// bmp_len as the SA has, so UPDATE_SA is read (GETAE) - change the high bits -
// write (this); see XfrmSocket::set_esn_high_bits.
NetlinkRequest build_new_ae(const SaId& id, uint32_t reqid, const ReplayEsn& state);

// One entry of the kernel's SPD, as `ip xfrm policy add src S dst D [proto P
// [sport X] [dport Y]] dir in|out|fwd priority N [action block] [tmpl src A
// dst B proto esp reqid R mode M]` sends it.  With packet offload
// (offload_ifindex != 0) it also carries XFRMA_OFFLOAD_DEV{ifindex,
// XFRM_OFFLOAD_PACKET}, as iproute2 >= 6.2 `offload packet dev DEV` sends it
// (the kernel's xfrm_dev_policy_add accepts exactly that flag).
enum class XfrmPolicyDir : uint8_t { In, Out, Fwd };
const char* to_string(XfrmPolicyDir dir);

struct XfrmPolicy {
  XfrmPolicyDir dir = XfrmPolicyDir::Out;
  IpPrefix src;
  IpPrefix dst;
  uint8_t proto = 0;  // 0 = any
  // Ports as the kernel's selector keeps them: value and mask (host order);
  // mask 0 = any port, 0xffff = exactly this port.
  uint16_t sport = 0;
  uint16_t sport_mask = 0;
  uint16_t dport = 0;
  uint16_t dport_mask = 0;
  uint32_t priority = 0;      // lower wins, as in ipsecov2
  bool block = false;         // XFRM_POLICY_BLOCK (discard); else allow
  bool has_template = false;  // protect: the packets must use the SA below
  IpAddr tmpl_src;            // the SA's endpoints
  IpAddr tmpl_dst;
  uint32_t reqid = 0;
  Mode mode = Mode::Tunnel;
  int offload_ifindex = 0;  // packet offload device; 0 = none
  // The kernel's policy index (`ip -s xfrm policy` shows it; 0: the kernel
  // picks one).  ipsecov2 asks for ov2_policy_index(): that is how its
  // entries are told apart from everybody else's after a crash.
  uint32_t index = 0;
  bool operator==(const XfrmPolicy&) const = default;
};

// The index ipsecov2 gives the kernel entry of its policy `id` in direction
// `dir`: kOv2PolicyIndexTag in the top four bits, the id's low 25 bits, the
// kernel's direction in the low three (the kernel looks an index up in the
// direction index & 7).  The kernel takes a requested index when it is free
// and keeps it on XFRM_MSG_UPDPOLICY; the indexes it generates itself count
// up from 8 in steps of 8, so they reach the tag only after ~370 million
// policy insertions in one network namespace.
inline constexpr uint32_t kOv2PolicyIndexTag = 0xB0000000u;
uint32_t ov2_policy_index(uint32_t id, XfrmPolicyDir dir);
// Whether a kernel policy index carries ipsecov2's tag.
bool is_ov2_policy_index(uint32_t index);
// Same kernel key: direction and selector (the kernel keeps at most one
// policy per key; mark and if_id are always 0 here).
bool same_kernel_key(const XfrmPolicy& a, const XfrmPolicy& b);
// "outbound policy 10.1.0.0/24 -> 10.2.0.0/24" (for messages).
std::string describe_policy(const XfrmPolicy& p);
// XFRM_MSG_NEWPOLICY: xfrm_userpolicy_info, then XFRMA_TMPL (if
// has_template), then XFRMA_OFFLOAD_DEV (if offload_ifindex).  `replace`:
// XFRM_MSG_UPDPOLICY instead (replaces the entry with the same key in place,
// keeping its index; adds it when there is none).
NetlinkRequest build_new_policy(const XfrmPolicy& policy, bool replace = false);
// XFRM_MSG_GETPOLICY with NLM_F_DUMP: every policy of the namespace (the
// replies are XFRM_MSG_NEWPOLICY, parse_policy).
NetlinkRequest build_dump_policies();
// XFRM_MSG_DELPOLICY by index and direction (`ip xfrm policy delete index N dir D`).
NetlinkRequest build_delete_policy_by_index(uint32_t index, XfrmPolicyDir dir);
// XFRM_MSG_GETPOLICY / XFRM_MSG_DELPOLICY by selector and direction (the
// kernel's key of a policy; at most one per selector and direction).
NetlinkRequest build_get_policy(const XfrmPolicy& policy);
NetlinkRequest build_delete_policy(const XfrmPolicy& policy);

// A port range as the kernel's (port, mask) selector, when it is one: any
// (0/0), one port (P/0xffff) or an aligned power-of-two block.  nullopt
// otherwise (e.g. 1000-2000).
struct PortMask {
  uint16_t port = 0;
  uint16_t mask = 0;
};
std::optional<PortMask> port_mask_of(uint16_t lo, uint16_t hi);

struct PolicyReadback {
  std::optional<int> offload_ifindex;  // present iff the kernel kept the offload
  uint8_t offload_flags = 0;
  // The entry as the kernel holds it: direction, selector, priority, action,
  // index and the first template (offload_ifindex is left 0).
  XfrmPolicy policy;
  bool main_type = true;  // XFRM_POLICY_TYPE_MAIN (not a sub policy)
};
// Parses an XFRM_MSG_NEWPOLICY (GETPOLICY reply).  Throws ov2::Error(Kernel) if malformed.
PolicyReadback parse_policy(const nlmsghdr* msg);

// What GETSA reads back (the kernel's counters and replay state).
struct SaReadback {
  uint32_t spi = 0;
  IpAddr dst;
  IpAddr src;
  uint32_t reqid = 0;
  uint8_t mode = 0;   // XFRM_MODE_*
  uint8_t flags = 0;  // XFRM_STATE_*
  uint64_t bytes = 0;
  uint64_t packets = 0;
  uint64_t add_time = 0;
  uint64_t use_time = 0;
  uint32_t replay_window_failures = 0;  // stats.replay_window
  uint32_t replay_failures = 0;         // stats.replay
  uint32_t integrity_failures = 0;      // stats.integrity_failed
  // From XFRMA_REPLAY_ESN_VAL, or from the legacy XFRMA_REPLAY_VAL (no ESN,
  // window <= 32: high bits 0, one bitmap word).
  std::optional<ReplayEsn> replay_esn;
  std::optional<int> offload_ifindex;  // present iff the kernel kept the offload
  uint8_t offload_flags = 0;
};
// Parses an XFRM_MSG_NEWSA (GETSA reply).  Throws ov2::Error(Kernel) if malformed.
SaReadback parse_sa(const nlmsghdr* msg);

// What GETAE reads back.
struct AeReadback {
  std::optional<ReplayEsn> replay_esn;
  uint64_t bytes = 0;  // XFRMA_LTIME_VAL
  uint64_t packets = 0;
};
// Parses an XFRM_MSG_NEWAE (GETAE reply).  Throws ov2::Error(Kernel) if malformed.
AeReadback parse_ae(const nlmsghdr* msg);

// What the kernel tells XFRMNLGRP_EXPIRE / XFRMNLGRP_SA listeners about an SA.
enum class KernelSaEventKind : uint8_t {
  SoftExpire,  // XFRM_MSG_EXPIRE hard=0: a soft lifetime ran out (rekey now)
  HardExpire,  // XFRM_MSG_EXPIRE hard=1: the kernel deleted the SA
  Deleted,     // XFRM_MSG_DELSA: someone deleted the SA (ip xfrm state del/flush)
};
struct KernelSaMessage {
  KernelSaEventKind kind = KernelSaEventKind::SoftExpire;
  SaId id;
  uint32_t reqid = 0;
  uint64_t packets = 0;  // curlft at the event (EXPIRE, or DELSA with XFRMA_SA)
  uint64_t bytes = 0;
  // Expire: which limit ran out, "packets", "bytes" or "seconds" (the kernel
  // does not say; packets/bytes when the counter reached that limit, else
  // the time).  Empty for Deleted.
  std::string limit;
};
// Decodes an XFRM_MSG_EXPIRE (struct xfrm_user_expire) or an XFRM_MSG_DELSA
// notification (struct xfrm_usersa_id, the source address from XFRMA_SA or
// XFRMA_SRCADDR).  nullopt for every other message type (the SA group also
// carries NEWSA/UPDSA/FLUSHSA).  Throws ov2::Error(Kernel) if truncated.
std::optional<KernelSaMessage> parse_kernel_sa_event(const nlmsghdr* msg);

}  // namespace ov2::xfrm
