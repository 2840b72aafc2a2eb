#include "xfrm/netlink_decoder.h"

#include <arpa/inet.h>
#include <linux/netlink.h>
#include <linux/xfrm.h>

#include <cstdio>
#include <cstring>
#include <sstream>
#include <stdexcept>

namespace ov2::xfrm::test {

namespace {

std::string num(uint64_t v) { return std::to_string(v); }

std::string hex(const uint8_t* p, size_t n) {
  std::string s;
  char b[3];
  for (size_t i = 0; i < n; ++i) {
    std::snprintf(b, sizeof(b), "%02x", p[i]);
    s += b;
  }
  return s;
}

std::string addr(const xfrm_address_t& a) { return hex(reinterpret_cast<const uint8_t*>(&a), sizeof(a)); }

// Key bytes: length and FNV-1a digest, never the bytes themselves.
std::string key_digest(const uint8_t* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  char b[64];
  std::snprintf(b, sizeof(b), "len=%zu fnv=%016llx", n, static_cast<unsigned long long>(h));
  return b;
}

template <typename T>
T load(const uint8_t* p, size_t avail) {
  T v;
  std::memset(&v, 0, sizeof(v));
  std::memcpy(&v, p, std::min(avail, sizeof(T)));
  return v;
}

void selector(std::vector<Field>& f, const std::string& pre, const xfrm_selector& s) {
  f.push_back({pre + "daddr", addr(s.daddr)});
  f.push_back({pre + "saddr", addr(s.saddr)});
  f.push_back({pre + "dport", num(ntohs(s.dport))});
  f.push_back({pre + "dport_mask", num(ntohs(s.dport_mask))});
  f.push_back({pre + "sport", num(ntohs(s.sport))});
  f.push_back({pre + "sport_mask", num(ntohs(s.sport_mask))});
  f.push_back({pre + "family", num(s.family)});
  f.push_back({pre + "prefixlen_d", num(s.prefixlen_d)});
  f.push_back({pre + "prefixlen_s", num(s.prefixlen_s)});
  f.push_back({pre + "proto", num(s.proto)});
  f.push_back({pre + "ifindex", num(static_cast<uint32_t>(s.ifindex))});
  f.push_back({pre + "user", num(s.user)});
}

void lifetime_cfg(std::vector<Field>& f, const xfrm_lifetime_cfg& l) {
  f.push_back({"lft.soft_byte_limit", num(l.soft_byte_limit)});
  f.push_back({"lft.hard_byte_limit", num(l.hard_byte_limit)});
  f.push_back({"lft.soft_packet_limit", num(l.soft_packet_limit)});
  f.push_back({"lft.hard_packet_limit", num(l.hard_packet_limit)});
  f.push_back({"lft.soft_add_expires_seconds", num(l.soft_add_expires_seconds)});
  f.push_back({"lft.hard_add_expires_seconds", num(l.hard_add_expires_seconds)});
  f.push_back({"lft.soft_use_expires_seconds", num(l.soft_use_expires_seconds)});
  f.push_back({"lft.hard_use_expires_seconds", num(l.hard_use_expires_seconds)});
}

void lifetime_cur(std::vector<Field>& f, const xfrm_lifetime_cur& c) {
  f.push_back({"curlft.bytes", num(c.bytes)});
  f.push_back({"curlft.packets", num(c.packets)});
  f.push_back({"curlft.add_time", num(c.add_time)});
  f.push_back({"curlft.use_time", num(c.use_time)});
}

void usersa_id(std::vector<Field>& f, const std::string& pre, const xfrm_usersa_id& id) {
  f.push_back({pre + "daddr", addr(id.daddr)});
  f.push_back({pre + "spi", num(ntohl(id.spi))});
  f.push_back({pre + "family", num(id.family)});
  f.push_back({pre + "proto", num(id.proto)});
}

std::vector<Field> decode_body(uint16_t type, const uint8_t* p, size_t n) {
  std::vector<Field> f;
  switch (type) {
    case XFRM_MSG_NEWSA:
    case XFRM_MSG_UPDSA: {
      const auto s = load<xfrm_usersa_info>(p, n);
      selector(f, "sel.", s.sel);
      f.push_back({"id.daddr", addr(s.id.daddr)});
      f.push_back({"id.spi", num(ntohl(s.id.spi))});
      f.push_back({"id.proto", num(s.id.proto)});
      f.push_back({"saddr", addr(s.saddr)});
      lifetime_cfg(f, s.lft);
      lifetime_cur(f, s.curlft);
      f.push_back({"stats.replay_window", num(s.stats.replay_window)});
      f.push_back({"stats.replay", num(s.stats.replay)});
      f.push_back({"stats.integrity_failed", num(s.stats.integrity_failed)});
      f.push_back({"seq", num(s.seq)});
      f.push_back({"reqid", num(s.reqid)});
      f.push_back({"family", num(s.family)});
      f.push_back({"mode", num(s.mode)});
      f.push_back({"replay_window", num(s.replay_window)});
      f.push_back({"flags", num(s.flags)});
      break;
    }
    case XFRM_MSG_DELSA:
    case XFRM_MSG_GETSA:
      usersa_id(f, "", load<xfrm_usersa_id>(p, n));
      break;
    case XFRM_MSG_NEWAE:
    case XFRM_MSG_GETAE: {
      const auto a = load<xfrm_aevent_id>(p, n);
      usersa_id(f, "sa_id.", a.sa_id);
      f.push_back({"saddr", addr(a.saddr)});
      f.push_back({"flags", num(a.flags)});
      f.push_back({"reqid", num(a.reqid)});
      break;
    }
    case XFRM_MSG_NEWPOLICY:
    case XFRM_MSG_UPDPOLICY: {
      const auto pol = load<xfrm_userpolicy_info>(p, n);
      selector(f, "sel.", pol.sel);
      lifetime_cfg(f, pol.lft);
      lifetime_cur(f, pol.curlft);
      f.push_back({"priority", num(pol.priority)});
      f.push_back({"index", num(pol.index)});
      f.push_back({"dir", num(pol.dir)});
      f.push_back({"action", num(pol.action)});
      f.push_back({"flags", num(pol.flags)});
      f.push_back({"share", num(pol.share)});
      break;
    }
    default:
      f.push_back({"raw", hex(p, n)});
  }
  return f;
}

std::vector<Field> decode_attr(uint16_t type, const uint8_t* p, size_t n) {
  std::vector<Field> f{{"payload_len", num(n)}};
  switch (type) {
    case XFRMA_ALG_AEAD: {
      const auto a = load<xfrm_algo_aead>(p, n);
      f.push_back({"alg_name", std::string(a.alg_name, strnlen(a.alg_name, sizeof(a.alg_name)))});
      f.push_back({"alg_key_len", num(a.alg_key_len)});
      f.push_back({"alg_icv_len", num(a.alg_icv_len)});
      const size_t key = n > sizeof(a) ? n - sizeof(a) : 0;
      f.push_back({"alg_key", key_digest(p + sizeof(a), key)});
      break;
    }
    case XFRMA_ALG_CRYPT:
    case XFRMA_ALG_AUTH: {
      const auto a = load<xfrm_algo>(p, n);
      f.push_back({"alg_name", std::string(a.alg_name, strnlen(a.alg_name, sizeof(a.alg_name)))});
      f.push_back({"alg_key_len", num(a.alg_key_len)});
      const size_t key = n > sizeof(a) ? n - sizeof(a) : 0;
      f.push_back({"alg_key", key_digest(p + sizeof(a), key)});
      break;
    }
    case XFRMA_ALG_AUTH_TRUNC: {
      const auto a = load<xfrm_algo_auth>(p, n);
      f.push_back({"alg_name", std::string(a.alg_name, strnlen(a.alg_name, sizeof(a.alg_name)))});
      f.push_back({"alg_key_len", num(a.alg_key_len)});
      f.push_back({"alg_trunc_len", num(a.alg_trunc_len)});
      const size_t key = n > sizeof(a) ? n - sizeof(a) : 0;
      f.push_back({"alg_key", key_digest(p + sizeof(a), key)});
      break;
    }
    case XFRMA_ENCAP: {
      const auto e = load<xfrm_encap_tmpl>(p, n);
      f.push_back({"encap_type", num(e.encap_type)});
      f.push_back({"encap_sport", num(ntohs(e.encap_sport))});
      f.push_back({"encap_dport", num(ntohs(e.encap_dport))});
      f.push_back({"encap_oa", addr(e.encap_oa)});
      break;
    }
    case XFRMA_OFFLOAD_DEV: {
      const auto o = load<xfrm_user_offload>(p, n);
      f.push_back({"ifindex", num(static_cast<uint32_t>(o.ifindex))});
      f.push_back({"flags", num(o.flags)});
      break;
    }
    case XFRMA_REPLAY_ESN_VAL: {
      const auto r = load<xfrm_replay_state_esn>(p, n);
      f.push_back({"bmp_len", num(r.bmp_len)});
      f.push_back({"oseq", num(r.oseq)});
      f.push_back({"seq", num(r.seq)});
      f.push_back({"oseq_hi", num(r.oseq_hi)});
      f.push_back({"seq_hi", num(r.seq_hi)});
      f.push_back({"replay_window", num(r.replay_window)});
      if (n > sizeof(r)) f.push_back({"bmp", hex(p + sizeof(r), n - sizeof(r))});
      break;
    }
    case XFRMA_REPLAY_VAL: {
      const auto r = load<xfrm_replay_state>(p, n);
      f.push_back({"oseq", num(r.oseq)});
      f.push_back({"seq", num(r.seq)});
      f.push_back({"bitmap", num(r.bitmap)});
      break;
    }
    case XFRMA_SRCADDR:
    case XFRMA_COADDR:
      f.push_back({"addr", addr(load<xfrm_address_t>(p, n))});
      break;
    case XFRMA_TMPL: {
      const auto t = load<xfrm_user_tmpl>(p, n);
      f.push_back({"id.daddr", addr(t.id.daddr)});
      f.push_back({"id.spi", num(ntohl(t.id.spi))});
      f.push_back({"id.proto", num(t.id.proto)});
      f.push_back({"family", num(t.family)});
      f.push_back({"saddr", addr(t.saddr)});
      f.push_back({"reqid", num(t.reqid)});
      f.push_back({"mode", num(t.mode)});
      f.push_back({"share", num(t.share)});
      f.push_back({"optional", num(t.optional)});
      f.push_back({"aalgos", num(t.aalgos)});
      f.push_back({"ealgos", num(t.ealgos)});
      f.push_back({"calgos", num(t.calgos)});
      break;
    }
    default:
      f.push_back({"raw", hex(p, n)});
  }
  return f;
}

}  // namespace

const char* xfrm_attr_name(uint16_t type) {
  switch (type) {
    case XFRMA_ALG_AUTH:
      return "XFRMA_ALG_AUTH";
    case XFRMA_ALG_CRYPT:
      return "XFRMA_ALG_CRYPT";
    case XFRMA_ENCAP:
      return "XFRMA_ENCAP";
    case XFRMA_TMPL:
      return "XFRMA_TMPL";
    case XFRMA_SA:
      return "XFRMA_SA";
    case XFRMA_REPLAY_VAL:
      return "XFRMA_REPLAY_VAL";
    case XFRMA_SRCADDR:
      return "XFRMA_SRCADDR";
    case XFRMA_ALG_AEAD:
      return "XFRMA_ALG_AEAD";
    case XFRMA_ALG_AUTH_TRUNC:
      return "XFRMA_ALG_AUTH_TRUNC";
    case XFRMA_REPLAY_ESN_VAL:
      return "XFRMA_REPLAY_ESN_VAL";
    case XFRMA_OFFLOAD_DEV:
      return "XFRMA_OFFLOAD_DEV";
    case 40:
      return "XFRMA_SA_DIR";
    default:
      return "XFRMA_?";
  }
}

std::string to_string(const DecodedAttr& a) {
  std::ostringstream s;
  s << xfrm_attr_name(a.type) << "(" << a.type << ") {";
  for (const auto& f : a.fields) s << " " << f.name << "=" << f.value;
  s << " }";
  return s.str();
}

DecodedMessage decode_xfrm_message(std::span<const uint8_t> bytes) {
  if (bytes.size() < sizeof(nlmsghdr)) throw std::runtime_error("short netlink message");
  const auto h = load<nlmsghdr>(bytes.data(), bytes.size());
  if (h.nlmsg_len > bytes.size() || h.nlmsg_len < sizeof(nlmsghdr)) throw std::runtime_error("bad nlmsg_len");
  DecodedMessage m;
  m.type = h.nlmsg_type;
  m.flags = h.nlmsg_flags;
  size_t body_len = 0;
  switch (h.nlmsg_type) {
    case XFRM_MSG_NEWSA:
    case XFRM_MSG_UPDSA:
      body_len = sizeof(xfrm_usersa_info);
      break;
    case XFRM_MSG_DELSA:
    case XFRM_MSG_GETSA:
      body_len = sizeof(xfrm_usersa_id);
      break;
    case XFRM_MSG_NEWAE:
    case XFRM_MSG_GETAE:
      body_len = sizeof(xfrm_aevent_id);
      break;
    case XFRM_MSG_NEWPOLICY:
    case XFRM_MSG_UPDPOLICY:
      body_len = sizeof(xfrm_userpolicy_info);
      break;
    default:
      body_len = h.nlmsg_len - NLMSG_HDRLEN;
  }
  const uint8_t* body = bytes.data() + NLMSG_HDRLEN;
  if (NLMSG_HDRLEN + body_len > h.nlmsg_len) throw std::runtime_error("netlink body truncated");
  m.body = decode_body(h.nlmsg_type, body, body_len);
  size_t off = NLMSG_HDRLEN + NLMSG_ALIGN(body_len);
  while (off + sizeof(nlattr) <= h.nlmsg_len) {
    const auto a = load<nlattr>(bytes.data() + off, sizeof(nlattr));
    if (a.nla_len < sizeof(nlattr) || off + a.nla_len > h.nlmsg_len) throw std::runtime_error("bad attribute length");
    m.attrs.push_back({a.nla_type, decode_attr(a.nla_type, bytes.data() + off + NLA_HDRLEN, a.nla_len - NLA_HDRLEN)});
    off += NLA_ALIGN(a.nla_len);
  }
  return m;
}

std::vector<std::vector<uint8_t>> parse_strace_dumps(const std::string& text) {
  std::vector<std::vector<uint8_t>> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(" * ") == 0 && line.find("bytes in buffer") != std::string::npos) {
      out.emplace_back();
      continue;
    }
    // " | 00000  5c 01 00 00 10 00 05 00  b0 00 07 6b 00 00 00 00  \...  |"
    if (line.size() < 11 || line.compare(0, 3, " | ") != 0 || out.empty()) continue;
    const std::string hexarea = line.substr(10, std::min<size_t>(49, line.size() - 10));
    std::istringstream hs(hexarea);
    std::string tok;
    while (hs >> tok) {
      if (tok.size() != 2) break;
      out.back().push_back(static_cast<uint8_t>(std::stoul(tok, nullptr, 16)));
    }
  }
  return out;
}

bool or_offload_flags(std::vector<uint8_t>& msg, uint8_t flags) {
  const auto h = load<nlmsghdr>(msg.data(), msg.size());
  size_t body_len = h.nlmsg_type == XFRM_MSG_NEWSA ? sizeof(xfrm_usersa_info) : sizeof(xfrm_userpolicy_info);
  size_t off = NLMSG_HDRLEN + NLMSG_ALIGN(body_len);
  while (off + sizeof(nlattr) <= h.nlmsg_len) {
    const auto a = load<nlattr>(msg.data() + off, sizeof(nlattr));
    if (a.nla_len < sizeof(nlattr)) return false;
    if (a.nla_type == XFRMA_OFFLOAD_DEV) {
      msg[off + NLA_HDRLEN + offsetof(xfrm_user_offload, flags)] |= flags;
      return true;
    }
    off += NLA_ALIGN(a.nla_len);
  }
  return false;
}

void append_attr(std::vector<uint8_t>& msg, uint16_t type, std::span<const uint8_t> payload) {
  auto h = load<nlmsghdr>(msg.data(), msg.size());
  msg.resize(NLMSG_ALIGN(h.nlmsg_len));
  nlattr a{static_cast<uint16_t>(NLA_HDRLEN + payload.size()), type};
  const auto* ap = reinterpret_cast<const uint8_t*>(&a);
  msg.insert(msg.end(), ap, ap + sizeof(a));
  msg.insert(msg.end(), payload.begin(), payload.end());
  msg.resize(NLMSG_ALIGN(msg.size()), 0);
  h.nlmsg_len = static_cast<uint32_t>(msg.size());
  std::memcpy(msg.data(), &h, sizeof(h));
}

}  // namespace ov2::xfrm::test
