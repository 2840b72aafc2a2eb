#include "xfrm/xfrm_messages.h"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/udp.h>
#include <linux/xfrm.h>
#include <openssl/crypto.h>
#include <sys/socket.h>

#include <cstring>

#include "common/error.h"
#include "model/algorithms.h"

namespace ov2::xfrm {

const char* to_string(OffloadKind kind) {
  switch (kind) {
    case OffloadKind::None:
      return "none";
    case OffloadKind::Crypto:
      return "crypto";
    case OffloadKind::Packet:
      return "packet";
  }
  return "?";
}

SaId sa_id_of(const SaSpec& sa) { return SaId{sa.dst, sa.src, sa.spi, IPPROTO_ESP}; }

// ---------------------------------------------------------------------------
// NetlinkRequest

NetlinkRequest::NetlinkRequest(size_t capacity) : buf_(capacity, 0) {}

NetlinkRequest::~NetlinkRequest() { wipe(); }

NetlinkRequest::NetlinkRequest(NetlinkRequest&& other) noexcept : buf_(std::move(other.buf_)) {}

NetlinkRequest& NetlinkRequest::operator=(NetlinkRequest&& other) noexcept {
  if (this != &other) {
    wipe();
    buf_ = std::move(other.buf_);
  }
  return *this;
}

void NetlinkRequest::wipe() {
  if (!buf_.empty()) OPENSSL_cleanse(buf_.data(), buf_.size());
}

namespace {

int af_of(Family f) { return f == Family::V4 ? AF_INET : AF_INET6; }

xfrm_address_t xfrm_addr(const IpAddr& a) {
  xfrm_address_t out;
  std::memset(&out, 0, sizeof(out));
  std::memcpy(&out, a.bytes.data(), a.size());
  return out;
}

IpAddr ip_addr(const xfrm_address_t& a, uint16_t af) {
  IpAddr out;
  out.family = af == AF_INET6 ? Family::V6 : Family::V4;
  std::memcpy(out.bytes.data(), &a, out.size());
  return out;
}

nlmsghdr* start(NetlinkRequest& req, uint16_t type, uint16_t flags) {
  nlmsghdr* nlh = mnl_nlmsg_put_header(req.header());
  nlh->nlmsg_type = type;
  nlh->nlmsg_flags = flags;
  return nlh;
}

template <typename T>
T* put_body(NetlinkRequest& req) {
  return static_cast<T*>(mnl_nlmsg_put_extra_header(req.header(), sizeof(T)));
}

// Appends one attribute whose payload `fill` writes in place (so key bytes
// never pass through a temporary).  The buffer is zeroed, so padding is zero.
template <typename Fill>
void put_attr(NetlinkRequest& req, uint16_t type, size_t len, Fill fill) {
  nlmsghdr* nlh = req.header();
  const size_t need = MNL_ALIGN(nlh->nlmsg_len) + MNL_ALIGN(MNL_ATTR_HDRLEN + len);
  if (need > req.capacity()) fail(ErrorCode::Internal, "XFRM request does not fit its buffer");
  auto* attr = static_cast<nlattr*>(mnl_nlmsg_get_payload_tail(nlh));
  attr->nla_type = type;
  attr->nla_len = static_cast<uint16_t>(MNL_ATTR_HDRLEN + len);
  fill(static_cast<uint8_t*>(mnl_attr_get_payload(attr)));
  nlh->nlmsg_len += MNL_ALIGN(attr->nla_len);
}

template <typename T>
void put_struct(NetlinkRequest& req, uint16_t type, const T& value) {
  put_attr(req, type, sizeof(T), [&](uint8_t* p) { std::memcpy(p, &value, sizeof(T)); });
}

void put_name(char (&dst)[64], const char* name) { std::strncpy(dst, name, sizeof(dst) - 1); }

bool is_gmac(AuthAlg a) { return a == AuthAlg::AesGmac128 || a == AuthAlg::AesGmac192 || a == AuthAlg::AesGmac256; }

void put_aead(NetlinkRequest& req, const char* name, const SecureBytes& key, uint32_t icv_bits) {
  put_attr(req, XFRMA_ALG_AEAD, sizeof(xfrm_algo_aead) + key.size(), [&](uint8_t* p) {
    auto* alg = reinterpret_cast<xfrm_algo_aead*>(p);
    put_name(alg->alg_name, name);
    alg->alg_key_len = static_cast<unsigned>(key.size() * 8);
    alg->alg_icv_len = icv_bits;
    if (!key.empty()) std::memcpy(alg->alg_key, key.data(), key.size());
  });
}

void put_algorithms(NetlinkRequest& req, const SaSpec& sa) {
  const EncAlgInfo& enc = info(sa.enc);
  if (enc.aead) {
    put_aead(req, enc.xfrm_name, sa.enc_key, enc.icv_len * 8u);
    return;
  }
  if (is_gmac(sa.auth)) {  // RFC 4543: ESP with integrity only, an AEAD in XFRM
    const AuthAlgInfo& auth = info(sa.auth);
    put_aead(req, auth.xfrm_name, sa.auth_key, auth.icv_len * 8u);
    return;
  }
  put_attr(req, XFRMA_ALG_CRYPT, sizeof(xfrm_algo) + sa.enc_key.size(), [&](uint8_t* p) {
    auto* alg = reinterpret_cast<xfrm_algo*>(p);
    put_name(alg->alg_name, enc.xfrm_name);
    alg->alg_key_len = static_cast<unsigned>(sa.enc_key.size() * 8);
    if (!sa.enc_key.empty()) std::memcpy(alg->alg_key, sa.enc_key.data(), sa.enc_key.size());
  });
  if (sa.auth == AuthAlg::None) return;
  const AuthAlgInfo& auth = info(sa.auth);
  put_attr(req, XFRMA_ALG_AUTH_TRUNC, sizeof(xfrm_algo_auth) + sa.auth_key.size(), [&](uint8_t* p) {
    auto* alg = reinterpret_cast<xfrm_algo_auth*>(p);
    put_name(alg->alg_name, auth.xfrm_name);
    alg->alg_key_len = static_cast<unsigned>(sa.auth_key.size() * 8);
    alg->alg_trunc_len = auth.icv_len * 8u;
    if (!sa.auth_key.empty()) std::memcpy(alg->alg_key, sa.auth_key.data(), sa.auth_key.size());
  });
}

uint64_t limit_or_inf(uint64_t v) { return v ? v : XFRM_INF; }

void put_usersa_id(NetlinkRequest& req, const SaId& id) {
  auto* sid = put_body<xfrm_usersa_id>(req);
  sid->daddr = xfrm_addr(id.dst);
  sid->spi = htonl(id.spi);
  sid->family = static_cast<uint16_t>(af_of(id.family()));
  sid->proto = id.proto;
}

uint32_t bitmap_words(uint32_t window) { return (window + 31) / 32; }

void put_replay_esn(NetlinkRequest& req, const ReplayEsn& st, uint32_t bmp_len, bool with_bitmap) {
  const size_t len = sizeof(xfrm_replay_state_esn) + (with_bitmap ? bmp_len * sizeof(uint32_t) : 0);
  put_attr(req, XFRMA_REPLAY_ESN_VAL, len, [&](uint8_t* p) {
    auto* rs = reinterpret_cast<xfrm_replay_state_esn*>(p);
    rs->bmp_len = bmp_len;
    rs->oseq = st.oseq;
    rs->seq = st.seq;
    rs->oseq_hi = st.oseq_hi;
    rs->seq_hi = st.seq_hi;
    rs->replay_window = st.replay_window;
    if (with_bitmap)
      for (uint32_t i = 0; i < bmp_len && i < st.bitmap.size(); ++i) rs->bmp[i] = st.bitmap[i];
  });
}

}  // namespace

NetlinkRequest build_new_sa(const SaSpec& sa, const NewSaOptions& options) {
  if (options.offload != OffloadKind::None && options.ifindex <= 0)
    fail(ErrorCode::InvalidArgument, "XFRM offload needs the offload device's interface index");
  if (sa.src.family != sa.dst.family)
    fail(ErrorCode::InvalidArgument, "SA source and destination are of different address families");

  NetlinkRequest req;
  start(req, XFRM_MSG_NEWSA, NLM_F_REQUEST | NLM_F_ACK);
  auto* sa_info = put_body<xfrm_usersa_info>(req);
  const int af = af_of(sa.dst.family);
  sa_info->id.daddr = xfrm_addr(sa.dst);
  sa_info->id.spi = htonl(sa.spi);
  sa_info->id.proto = IPPROTO_ESP;
  sa_info->saddr = xfrm_addr(sa.src);
  sa_info->family = static_cast<uint16_t>(af);
  sa_info->mode = sa.mode == Mode::Tunnel ? XFRM_MODE_TUNNEL : XFRM_MODE_TRANSPORT;
  sa_info->reqid = options.reqid;
  if (sa.esn) sa_info->flags |= XFRM_STATE_ESN;
  sa_info->lft.soft_byte_limit = limit_or_inf(sa.life_bytes.soft);
  sa_info->lft.hard_byte_limit = limit_or_inf(sa.life_bytes.hard);
  sa_info->lft.soft_packet_limit = limit_or_inf(sa.life_packets.soft);
  sa_info->lft.hard_packet_limit = limit_or_inf(sa.life_packets.hard);
  sa_info->lft.soft_add_expires_seconds = sa.life_seconds.soft;
  sa_info->lft.hard_add_expires_seconds = sa.life_seconds.hard;
  if (options.host_selector) {
    sa_info->sel.family = static_cast<uint16_t>(af);
    sa_info->sel.daddr = xfrm_addr(sa.dst);
    sa_info->sel.saddr = xfrm_addr(sa.src);
    sa_info->sel.prefixlen_d = sa_info->sel.prefixlen_s = sa.dst.family == Family::V4 ? 32 : 128;
  }
  // iproute2 uses the ESN replay attribute for ESN and for windows wider than
  // the legacy 32-bit bitmap; otherwise the window goes in the header.
  const bool esn_replay = sa.esn || sa.replay_window > 32;
  if (!esn_replay) sa_info->replay_window = static_cast<uint8_t>(sa.replay_window);

  put_algorithms(req, sa);
  if (sa.udp_encap) {
    xfrm_encap_tmpl encap;
    std::memset(&encap, 0, sizeof(encap));
    encap.encap_type = UDP_ENCAP_ESPINUDP;
    encap.encap_sport = htons(sa.encap_sport);
    encap.encap_dport = htons(sa.encap_dport);
    put_struct(req, XFRMA_ENCAP, encap);
  }
  if (options.offload != OffloadKind::None) {
    xfrm_user_offload xuo;
    std::memset(&xuo, 0, sizeof(xuo));
    xuo.ifindex = options.ifindex;
    if (sa.dir == Direction::In) xuo.flags |= XFRM_OFFLOAD_INBOUND;
    if (options.offload == OffloadKind::Packet) xuo.flags |= XFRM_OFFLOAD_PACKET;
    put_struct(req, XFRMA_OFFLOAD_DEV, xuo);
  }
  if (esn_replay) {
    ReplayEsn st;
    st.replay_window = sa.replay_window;
    (sa.dir == Direction::In ? st.seq_hi : st.oseq_hi) = sa.esn ? sa.seq_hi : 0;
    put_replay_esn(req, st, bitmap_words(sa.replay_window), /*with_bitmap=*/false);
  }
  if (options.sa_dir_attr) {
    const uint8_t dir = sa.dir == Direction::In ? kXfrmSaDirIn : kXfrmSaDirOut;
    put_attr(req, kXfrmaSaDir, 1, [&](uint8_t* p) { *p = dir; });
  }
  return req;
}

NetlinkRequest build_delete_sa(const SaId& id) {
  NetlinkRequest req(256);
  start(req, XFRM_MSG_DELSA, NLM_F_REQUEST | NLM_F_ACK);
  put_usersa_id(req, id);
  put_struct(req, XFRMA_SRCADDR, xfrm_addr(id.src));
  return req;
}

NetlinkRequest build_get_sa(const SaId& id) {
  NetlinkRequest req(256);
  start(req, XFRM_MSG_GETSA, NLM_F_REQUEST | NLM_F_ACK);
  put_usersa_id(req, id);
  put_struct(req, XFRMA_SRCADDR, xfrm_addr(id.src));
  return req;
}

namespace {
void put_aevent_id(NetlinkRequest& req, const SaId& id, uint32_t reqid) {
  auto* ae = put_body<xfrm_aevent_id>(req);
  ae->sa_id.daddr = xfrm_addr(id.dst);
  ae->sa_id.spi = htonl(id.spi);
  ae->sa_id.family = static_cast<uint16_t>(af_of(id.family()));
  ae->sa_id.proto = id.proto;
  ae->saddr = xfrm_addr(id.src);
  ae->flags = XFRM_AE_RVAL;
  ae->reqid = reqid;
}
}  // namespace

NetlinkRequest build_get_ae(const SaId& id, uint32_t reqid) {
  NetlinkRequest req(256);
  start(req, XFRM_MSG_GETAE, NLM_F_REQUEST | NLM_F_ACK);
  put_aevent_id(req, id, reqid);
  return req;
}

NetlinkRequest build_new_ae(const SaId& id, uint32_t reqid, const ReplayEsn& state) {
  const uint32_t bmp_len = static_cast<uint32_t>(state.bitmap.size());
  if (bmp_len == 0 || state.replay_window > bmp_len * 32)
    fail(ErrorCode::InvalidArgument, "ESN replay state needs a bitmap covering its replay window");
  NetlinkRequest req(256 + bmp_len * 4);
  start(req, XFRM_MSG_NEWAE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE);
  put_aevent_id(req, id, reqid);
  put_replay_esn(req, state, bmp_len, /*with_bitmap=*/true);
  return req;
}

const char* to_string(XfrmPolicyDir dir) {
  switch (dir) {
    case XfrmPolicyDir::In:
      return "in";
    case XfrmPolicyDir::Out:
      return "out";
    case XfrmPolicyDir::Fwd:
      return "fwd";
  }
  return "?";
}

std::string describe_policy(const XfrmPolicy& p) {
  static constexpr const char* kWords[] = {"inbound", "outbound", "forward"};
  return std::string(kWords[static_cast<int>(p.dir)]) + " policy " + p.src.to_string() + " -> " + p.dst.to_string();
}

std::optional<PortMask> port_mask_of(uint16_t lo, uint16_t hi) {
  if (lo > hi) return std::nullopt;
  const uint32_t size = uint32_t{hi} - lo + 1;
  if (size == 65536) return PortMask{0, 0};
  if ((size & (size - 1)) != 0 || lo % size != 0) return std::nullopt;
  return PortMask{lo, static_cast<uint16_t>(~(size - 1))};
}

namespace {
xfrm_selector policy_selector(const XfrmPolicy& p) {
  xfrm_selector sel;
  std::memset(&sel, 0, sizeof(sel));
  sel.family = static_cast<uint16_t>(af_of(p.dst.addr.family));
  sel.daddr = xfrm_addr(p.dst.addr);
  sel.saddr = xfrm_addr(p.src.addr);
  sel.prefixlen_d = p.dst.len;
  sel.prefixlen_s = p.src.len;
  sel.proto = p.proto;
  sel.sport = htons(p.sport);
  sel.sport_mask = htons(p.sport_mask);
  sel.dport = htons(p.dport);
  sel.dport_mask = htons(p.dport_mask);
  return sel;
}

uint8_t policy_dir(const XfrmPolicy& p) {
  switch (p.dir) {
    case XfrmPolicyDir::In:
      return XFRM_POLICY_IN;
    case XfrmPolicyDir::Out:
      return XFRM_POLICY_OUT;
    case XfrmPolicyDir::Fwd:
      return XFRM_POLICY_FWD;
  }
  return XFRM_POLICY_OUT;
}

NetlinkRequest policy_id_request(const XfrmPolicy& p, uint16_t type) {
  NetlinkRequest req(256);
  start(req, type, NLM_F_REQUEST | NLM_F_ACK);
  auto* id = put_body<xfrm_userpolicy_id>(req);
  id->sel = policy_selector(p);
  id->dir = policy_dir(p);
  return req;
}
}  // namespace

NetlinkRequest build_get_policy(const XfrmPolicy& p) { return policy_id_request(p, XFRM_MSG_GETPOLICY); }
NetlinkRequest build_delete_policy(const XfrmPolicy& p) { return policy_id_request(p, XFRM_MSG_DELPOLICY); }

NetlinkRequest build_dump_policies() {
  NetlinkRequest req(256);
  start(req, XFRM_MSG_GETPOLICY, NLM_F_REQUEST | NLM_F_DUMP);
  put_body<xfrm_userpolicy_info>(req);  // as iproute2 sends it (zeroed)
  return req;
}

NetlinkRequest build_delete_policy_by_index(uint32_t index, XfrmPolicyDir dir) {
  XfrmPolicy p;
  p.dir = dir;
  NetlinkRequest req(256);
  start(req, XFRM_MSG_DELPOLICY, NLM_F_REQUEST | NLM_F_ACK);
  auto* id = put_body<xfrm_userpolicy_id>(req);
  id->index = index;
  id->dir = policy_dir(p);
  return req;
}

uint32_t ov2_policy_index(uint32_t id, XfrmPolicyDir dir) {
  XfrmPolicy p;
  p.dir = dir;
  return kOv2PolicyIndexTag | ((id & 0x01FFFFFFu) << 3) | policy_dir(p);
}

bool is_ov2_policy_index(uint32_t index) { return (index & 0xF0000000u) == kOv2PolicyIndexTag; }

bool same_kernel_key(const XfrmPolicy& a, const XfrmPolicy& b) {
  return a.dir == b.dir && a.src == b.src && a.dst == b.dst && a.proto == b.proto && a.sport == b.sport &&
         a.sport_mask == b.sport_mask && a.dport == b.dport && a.dport_mask == b.dport_mask;
}

NetlinkRequest build_new_policy(const XfrmPolicy& p, bool replace) {
  if (p.src.addr.family != p.dst.addr.family || (p.has_template && (p.tmpl_src.family != p.tmpl_dst.family)))
    fail(ErrorCode::InvalidArgument, "policy selectors or template mix address families");
  if (p.offload_ifindex < 0) fail(ErrorCode::InvalidArgument, "policy offload needs a valid interface index");
  NetlinkRequest req(512);
  start(req, replace ? XFRM_MSG_UPDPOLICY : XFRM_MSG_NEWPOLICY, NLM_F_REQUEST | NLM_F_ACK);
  auto* pol = put_body<xfrm_userpolicy_info>(req);
  pol->index = p.index;
  pol->sel = policy_selector(p);
  pol->lft.soft_byte_limit = XFRM_INF;
  pol->lft.hard_byte_limit = XFRM_INF;
  pol->lft.soft_packet_limit = XFRM_INF;
  pol->lft.hard_packet_limit = XFRM_INF;
  pol->priority = p.priority;
  pol->dir = policy_dir(p);
  pol->action = p.block ? XFRM_POLICY_BLOCK : XFRM_POLICY_ALLOW;

  if (p.has_template) {
    xfrm_user_tmpl tmpl;
    std::memset(&tmpl, 0, sizeof(tmpl));
    tmpl.id.daddr = xfrm_addr(p.tmpl_dst);
    tmpl.id.proto = IPPROTO_ESP;
    tmpl.family = static_cast<uint16_t>(af_of(p.tmpl_dst.family));
    tmpl.saddr = xfrm_addr(p.tmpl_src);
    tmpl.reqid = p.reqid;
    tmpl.mode = p.mode == Mode::Tunnel ? XFRM_MODE_TUNNEL : XFRM_MODE_TRANSPORT;
    tmpl.aalgos = tmpl.ealgos = tmpl.calgos = ~0u;  // any algorithm, as iproute2 and strongSwan
    put_struct(req, XFRMA_TMPL, tmpl);
  }
  if (p.offload_ifindex != 0) {
    xfrm_user_offload xuo;
    std::memset(&xuo, 0, sizeof(xuo));
    xuo.ifindex = p.offload_ifindex;
    xuo.flags = XFRM_OFFLOAD_PACKET;  // the only flag xfrm_dev_policy_add accepts
    put_struct(req, XFRMA_OFFLOAD_DEV, xuo);
  }
  return req;
}

// ---------------------------------------------------------------------------
// Parsing

namespace {

struct AttrTable {
  const nlattr* at[XFRMA_MAX + 1] = {};
};

int collect_attr(const nlattr* attr, void* data) {
  auto* table = static_cast<AttrTable*>(data);
  const uint16_t type = mnl_attr_get_type(attr);
  if (type <= XFRMA_MAX) table->at[type] = attr;
  return MNL_CB_OK;
}

AttrTable parse_attrs(const nlmsghdr* msg, size_t body_len, const char* what) {
  if (msg->nlmsg_len < NLMSG_LENGTH(body_len))
    fail(ErrorCode::Kernel, std::string("the kernel's ") + what + " reply is truncated");
  AttrTable table;
  if (mnl_attr_parse(msg, static_cast<unsigned>(body_len), collect_attr, &table) < 0)
    fail(ErrorCode::Kernel, std::string("the kernel's ") + what + " reply has malformed attributes");
  return table;
}

std::optional<ReplayEsn> read_replay_esn(const nlattr* attr) {
  if (!attr) return std::nullopt;
  const size_t len = mnl_attr_get_payload_len(attr);
  if (len < sizeof(xfrm_replay_state_esn)) fail(ErrorCode::Kernel, "the kernel's ESN replay state is truncated");
  xfrm_replay_state_esn head;
  std::memcpy(&head, mnl_attr_get_payload(attr), sizeof(head));
  ReplayEsn st{head.oseq, head.seq, head.oseq_hi, head.seq_hi, head.replay_window, {}};
  const size_t words = std::min<size_t>(head.bmp_len, (len - sizeof(head)) / sizeof(uint32_t));
  st.bitmap.resize(words);
  if (words)
    std::memcpy(st.bitmap.data(), static_cast<const uint8_t*>(mnl_attr_get_payload(attr)) + sizeof(head),
                words * sizeof(uint32_t));
  return st;
}

}  // namespace

namespace {
void read_offload(const nlattr* off, std::optional<int>& ifindex, uint8_t& flags) {
  if (!off || mnl_attr_get_payload_len(off) < sizeof(xfrm_user_offload)) return;
  xfrm_user_offload xuo;
  std::memcpy(&xuo, mnl_attr_get_payload(off), sizeof(xuo));
  ifindex = xuo.ifindex;
  flags = xuo.flags;
}
}  // namespace

SaReadback parse_sa(const nlmsghdr* msg) {
  if (msg->nlmsg_type != XFRM_MSG_NEWSA && msg->nlmsg_type != XFRM_MSG_UPDSA)
    fail(ErrorCode::Kernel,
         "expected an XFRM state from the kernel, got message type " + std::to_string(msg->nlmsg_type));
  const AttrTable t = parse_attrs(msg, sizeof(xfrm_usersa_info), "SA");
  xfrm_usersa_info si;
  std::memcpy(&si, mnl_nlmsg_get_payload(msg), sizeof(si));
  SaReadback out;
  out.spi = ntohl(si.id.spi);
  out.dst = ip_addr(si.id.daddr, si.family);
  out.src = ip_addr(si.saddr, si.family);
  out.reqid = si.reqid;
  out.mode = si.mode;
  out.flags = si.flags;
  out.bytes = si.curlft.bytes;
  out.packets = si.curlft.packets;
  out.add_time = si.curlft.add_time;
  out.use_time = si.curlft.use_time;
  out.replay_window_failures = si.stats.replay_window;
  out.replay_failures = si.stats.replay;
  out.integrity_failures = si.stats.integrity_failed;
  out.replay_esn = read_replay_esn(t.at[XFRMA_REPLAY_ESN_VAL]);
  if (!out.replay_esn) {
    // Without ESN and with a window of at most 32 the kernel reports the
    // legacy struct xfrm_replay_state (no high bits, one bitmap word).
    if (const nlattr* rv = t.at[XFRMA_REPLAY_VAL]) {
      if (mnl_attr_get_payload_len(rv) < sizeof(xfrm_replay_state))
        fail(ErrorCode::Kernel, "the kernel's replay state is truncated");
      xfrm_replay_state legacy;
      std::memcpy(&legacy, mnl_attr_get_payload(rv), sizeof(legacy));
      out.replay_esn = ReplayEsn{legacy.oseq, legacy.seq, 0, 0, si.replay_window, {legacy.bitmap}};
    }
  }
  read_offload(t.at[XFRMA_OFFLOAD_DEV], out.offload_ifindex, out.offload_flags);
  return out;
}

PolicyReadback parse_policy(const nlmsghdr* msg) {
  if (msg->nlmsg_type != XFRM_MSG_NEWPOLICY && msg->nlmsg_type != XFRM_MSG_UPDPOLICY)
    fail(ErrorCode::Kernel,
         "expected an XFRM policy from the kernel, got message type " + std::to_string(msg->nlmsg_type));
  const AttrTable t = parse_attrs(msg, sizeof(xfrm_userpolicy_info), "policy");
  PolicyReadback out;
  read_offload(t.at[XFRMA_OFFLOAD_DEV], out.offload_ifindex, out.offload_flags);
  xfrm_userpolicy_info pi;
  std::memcpy(&pi, mnl_nlmsg_get_payload(msg), sizeof(pi));
  XfrmPolicy& p = out.policy;
  switch (pi.dir) {
    case XFRM_POLICY_IN:
      p.dir = XfrmPolicyDir::In;
      break;
    case XFRM_POLICY_FWD:
      p.dir = XfrmPolicyDir::Fwd;
      break;
    case XFRM_POLICY_OUT:
      p.dir = XfrmPolicyDir::Out;
      break;
    default:  // socket policies (dir 3..5) are never dumped; keep them apart anyway
      p.dir = XfrmPolicyDir::Out;
      out.main_type = false;
      break;
  }
  const uint16_t af = pi.sel.family == AF_INET6 ? AF_INET6 : AF_INET;
  p.src = IpPrefix{ip_addr(pi.sel.saddr, af), pi.sel.prefixlen_s};
  p.dst = IpPrefix{ip_addr(pi.sel.daddr, af), pi.sel.prefixlen_d};
  p.proto = pi.sel.proto;
  p.sport = ntohs(pi.sel.sport);
  p.sport_mask = ntohs(pi.sel.sport_mask);
  p.dport = ntohs(pi.sel.dport);
  p.dport_mask = ntohs(pi.sel.dport_mask);
  p.priority = pi.priority;
  p.block = pi.action == XFRM_POLICY_BLOCK;
  p.index = pi.index;
  if (const nlattr* tm = t.at[XFRMA_TMPL]; tm && mnl_attr_get_payload_len(tm) >= sizeof(xfrm_user_tmpl)) {
    xfrm_user_tmpl tmpl;
    std::memcpy(&tmpl, mnl_attr_get_payload(tm), sizeof(tmpl));
    p.has_template = true;
    p.tmpl_src = ip_addr(tmpl.saddr, tmpl.family);
    p.tmpl_dst = ip_addr(tmpl.id.daddr, tmpl.family);
    p.reqid = tmpl.reqid;
    p.mode = tmpl.mode == XFRM_MODE_TRANSPORT ? Mode::Transport : Mode::Tunnel;
  }
  if (const nlattr* ty = t.at[XFRMA_POLICY_TYPE]; ty && mnl_attr_get_payload_len(ty) >= sizeof(xfrm_userpolicy_type)) {
    xfrm_userpolicy_type type;
    std::memcpy(&type, mnl_attr_get_payload(ty), sizeof(type));
    if (type.type != XFRM_POLICY_TYPE_MAIN) out.main_type = false;
  }
  return out;
}

AeReadback parse_ae(const nlmsghdr* msg) {
  if (msg->nlmsg_type != XFRM_MSG_NEWAE)
    fail(ErrorCode::Kernel,
         "expected an XFRM async event from the kernel, got message type " + std::to_string(msg->nlmsg_type));
  const AttrTable t = parse_attrs(msg, sizeof(xfrm_aevent_id), "replay-state");
  AeReadback out;
  out.replay_esn = read_replay_esn(t.at[XFRMA_REPLAY_ESN_VAL]);
  if (const nlattr* lt = t.at[XFRMA_LTIME_VAL]; lt && mnl_attr_get_payload_len(lt) >= sizeof(xfrm_lifetime_cur)) {
    xfrm_lifetime_cur cur;
    std::memcpy(&cur, mnl_attr_get_payload(lt), sizeof(cur));
    out.bytes = cur.bytes;
    out.packets = cur.packets;
  }
  return out;
}

namespace {
// Which lifetime ran out, from the SA's counters and limits (the kernel does not say).
std::string expired_limit(const xfrm_usersa_info& si, bool hard) {
  const uint64_t packets = hard ? si.lft.hard_packet_limit : si.lft.soft_packet_limit;
  const uint64_t bytes = hard ? si.lft.hard_byte_limit : si.lft.soft_byte_limit;
  if (packets != XFRM_INF && si.curlft.packets >= packets) return "packets";
  if (bytes != XFRM_INF && si.curlft.bytes >= bytes) return "bytes";
  return "seconds";
}
}  // namespace

std::optional<KernelSaMessage> parse_kernel_sa_event(const nlmsghdr* msg) {
  KernelSaMessage out;
  if (msg->nlmsg_type == XFRM_MSG_EXPIRE) {
    parse_attrs(msg, sizeof(xfrm_user_expire), "SA expire");
    xfrm_user_expire ue;
    std::memcpy(&ue, mnl_nlmsg_get_payload(msg), sizeof(ue));
    const xfrm_usersa_info& si = ue.state;
    out.kind = ue.hard ? KernelSaEventKind::HardExpire : KernelSaEventKind::SoftExpire;
    out.id = SaId{ip_addr(si.id.daddr, si.family), ip_addr(si.saddr, si.family), ntohl(si.id.spi), si.id.proto};
    out.reqid = si.reqid;
    out.packets = si.curlft.packets;
    out.bytes = si.curlft.bytes;
    out.limit = expired_limit(si, ue.hard != 0);
    return out;
  }
  if (msg->nlmsg_type == XFRM_MSG_DELSA) {
    const AttrTable t = parse_attrs(msg, sizeof(xfrm_usersa_id), "SA delete");
    xfrm_usersa_id id;
    std::memcpy(&id, mnl_nlmsg_get_payload(msg), sizeof(id));
    out.kind = KernelSaEventKind::Deleted;
    out.id = SaId{ip_addr(id.daddr, id.family), IpAddr{}, ntohl(id.spi), id.proto};
    out.id.src.family = out.id.dst.family;
    if (const nlattr* sa = t.at[XFRMA_SA]; sa && mnl_attr_get_payload_len(sa) >= sizeof(xfrm_usersa_info)) {
      xfrm_usersa_info si;
      std::memcpy(&si, mnl_attr_get_payload(sa), sizeof(si));
      out.id.src = ip_addr(si.saddr, si.family);
      out.reqid = si.reqid;
      out.packets = si.curlft.packets;
      out.bytes = si.curlft.bytes;
    } else if (const nlattr* src = t.at[XFRMA_SRCADDR]; src && mnl_attr_get_payload_len(src) >= sizeof(xfrm_address_t)) {
      xfrm_address_t a;
      std::memcpy(&a, mnl_attr_get_payload(src), sizeof(a));
      out.id.src = ip_addr(a, id.family);
    }
    return out;
  }
  return std::nullopt;
}

}  // namespace ov2::xfrm
