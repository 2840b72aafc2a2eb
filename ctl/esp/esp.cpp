#include "esp/esp.h"

#include <time.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "common/error.h"
#include "esp/esp_crypto.h"
#include "esp/ip_checksum.h"
#include "esp/ipv6_chain.h"
#include "ov2_abi.h"

namespace ov2::esp {

namespace {

using namespace wire;  // NOLINT(google-build-using-namespace): field access and checksums

constexpr uint8_t kProtoIpv4 = 4;
constexpr uint8_t kProtoIpv6 = 41;
constexpr uint8_t kProtoUdp = 17;
constexpr uint8_t kProtoEsp = OV2_IPPROTO_ESP;
constexpr uint8_t kProtoNone = 59;  // RFC 4303 §2.6 dummy packet
constexpr uint8_t kHopByHop = 0, kFragment = 44;
constexpr uint8_t kEcnMask = 0x03, kEct0 = 0x02, kEct1 = 0x01, kCe = 0x03;
constexpr uint8_t kTunnelTtl = 64;

// RFC 8200 §8.1: the UDP checksum over IPv6 is mandatory (RFC 6935/6936
// allow zero only for tunnel protocols that opt in; ESP-in-UDP does not).
void set_udp6_checksum(const uint8_t* ip6, uint8_t* udp, uint32_t udp_len) {
  put16(udp + 6, 0);
  const uint32_t acc = sum16(udp, udp_len, ipv6_pseudo_sum(ip6, udp_len, kProtoUdp));
  uint16_t c = fold(acc);
  put16(udp + 6, c == 0 ? 0xffff : c);
}

uint8_t ip_tos(const uint8_t* ip) {
  return (ip[0] >> 4) == 4 ? ip[1] : uint8_t((ip[0] & 0x0f) << 4 | ip[1] >> 4);
}
void set_ip_tos(uint8_t* ip, uint8_t tos) {
  if ((ip[0] >> 4) == 4) {
    ip[1] = tos;
    set_ipv4_checksum(ip);
  } else {
    ip[0] = uint8_t(0x60 | tos >> 4);
    ip[1] = uint8_t((ip[1] & 0x0f) | (tos & 0x0f) << 4);
  }
}

// A plaintext IP packet as the outbound side sees it.
struct PlainIp {
  uint32_t len = 0;      // IP total length (<= buffer length: link padding is dropped)
  uint32_t hdr_len = 0;  // IP header plus the extension headers ESP goes after (transport)
  uint32_t nh_off = 0;   // offset of the next-header byte that will name ESP/UDP
  uint8_t proto = 0;     // the protocol ESP will protect (transport)
  uint8_t tos = 0;       // DSCP+ECN
  bool v6 = false;
  bool df = false;
  bool fragment = false;
};

// Walks the IPv6 extension headers ESP goes after (RFC 4303 §3.1.1:
// hop-by-hop, routing, destination options).  A fragment header means a
// fragment: Unsupported.
Reason walk_ipv6_ext(const uint8_t* d, uint32_t total, uint32_t& off, uint32_t& nh_off, uint8_t& nh) {
  const Ipv6Chain c = walk_ipv6_chain(d, total, UINT32_MAX);
  off = c.off;
  nh_off = c.nh_off;
  nh = c.next;
  if (c.status != Ipv6Chain::Status::Ok) return Reason::Truncated;  // no limit: only a header past the packet
  if (nh == kFragment) return Reason::Unsupported;
  return Reason::Ok;
}

Reason parse_plain(const uint8_t* d, uint32_t len, bool transport, PlainIp& ip) {
  if (len < 1) return Reason::Truncated;
  const uint8_t version = d[0] >> 4;
  if (version == 4) {
    if (len < 20) return Reason::Truncated;
    const uint32_t ihl = uint32_t(d[0] & 0x0f) * 4;
    const uint32_t tot = be16(d + 2);
    if (ihl < 20 || tot < ihl) return Reason::BadLength;
    if (ihl > len || tot > len) return Reason::Truncated;
    ip.len = tot;
    ip.hdr_len = transport ? ihl : 0;  // tunnel: the whole packet is the payload
    ip.nh_off = 9;
    ip.proto = d[9];
    ip.tos = d[1];
    ip.df = (d[6] & 0x40) != 0;
    ip.fragment = (be16(d + 6) & 0x3fff) != 0;
    return Reason::Ok;
  }
  if (version == 6) {
    if (len < 40) return Reason::Truncated;
    const uint32_t pl = be16(d + 4);
    if (pl == 0 && d[6] == kHopByHop) return Reason::Unsupported;  // jumbogram (RFC 2675)
    if (40 + pl > len) return Reason::Truncated;
    ip.len = 40 + pl;
    ip.v6 = true;
    ip.df = true;
    ip.tos = ip_tos(d);
    if (!transport) return Reason::Ok;
    return walk_ipv6_ext(d, ip.len, ip.hdr_len, ip.nh_off, ip.proto);
  }
  return Reason::Unsupported;
}

struct Layout {
  uint32_t iv_len, icv_len, block_len, outer_len, udp_len;
};

// Padding 1,2,3,... so that payload+2 is a multiple of the block size (>= 4).
// `block` is a power of two (4, 8 or 16): masks, not a division per packet.
uint32_t pad_for(uint32_t payload_len, uint32_t block) {
  return (block - ((payload_len + 2) & (block - 1))) & (block - 1);
}

// RFC 4303 §2.4 padding 1,2,3,... then pad length and next header at `at`,
// which has `room` writable bytes (>= pad + 2).  With 16 bytes of room the
// padding is one fixed-size copy (pad <= 15; the bytes after the trailer are
// tailroom the ICV and the caller overwrite or ignore).
void write_trailer(uint8_t* at, uint32_t pad, uint8_t next_header, uint32_t room) {
  static constexpr uint8_t kPadding[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  if (room >= sizeof kPadding) {
    std::memcpy(at, kPadding, sizeof kPadding);
  } else {
    for (uint32_t i = 0; i < pad; ++i) at[i] = uint8_t(i + 1);
  }
  at[pad] = uint8_t(pad);
  at[pad + 1] = next_header;
}

// RFC 4303 §2.4: the `pad` bytes at `at` are 1, 2, 3, ...  Up to 8 bytes
// (every AEAD packet's padding: 4-byte alignment) in one word compare; the
// 8-byte load stays inside the packet because pad length, next header and
// an ICV of at least 8 bytes follow the padding.
bool padding_ok(const uint8_t* at, uint32_t pad) {
  if (pad <= 8) {
    if (pad == 0) return true;
    uint64_t w;
    std::memcpy(&w, at, 8);
    uint64_t want;
    static constexpr uint8_t kSeq[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    std::memcpy(&want, kSeq, 8);
    const uint64_t mask = std::endian::native == std::endian::little  // the first `pad` bytes in memory
                              ? ~uint64_t(0) >> (64 - 8 * pad)
                              : ~uint64_t(0) << (64 - 8 * pad);
    return ((w ^ want) & mask) == 0;
  }
  for (uint32_t i = 0; i < pad; ++i)
    if (at[i] != uint8_t(i + 1)) return false;
  return true;
}

// RFC 6040 §4.1 normal mode: outer ECN = inner ECN, except CE -> ECT(0).
uint8_t encap_tos(uint8_t inner_tos) {
  const uint8_t ecn = inner_tos & kEcnMask;
  return uint8_t((inner_tos & ~kEcnMask) | (ecn == kCe ? kEct0 : ecn));
}

// RFC 6040 §4.2 decapsulation table.  Returns false for "drop".
bool decap_ecn(uint8_t inner, uint8_t outer, uint8_t& out) {
  out = inner;
  if (inner == 0) return outer != kCe;  // Not-ECT inner: outer CE must be dropped
  if (outer == kCe) out = kCe;
  else if (outer == kEct1 && inner == kEct0) out = kEct1;
  return true;
}

// Adds `n`, returns the new value.  Not shared (one writing thread): a plain
// load and store, no locked instruction; readers still see whole values.
template <typename T>
[[gnu::always_inline]] inline T bump(std::atomic<T>& a, T n, bool shared) {
  if (shared) return T(a.fetch_add(n, std::memory_order_relaxed) + n);
  const T v = T(a.load(std::memory_order_relaxed) + n);
  a.store(v, std::memory_order_relaxed);
  return v;
}

// UPDATE_SA posted by another thread to the SA's own thread:
// kPendingSeqHi | seq_hi, 0 for none.
constexpr uint64_t kPendingSeqHi = uint64_t(1) << 32;

// The posted high half over the low half of `seq`.
uint64_t seq_hi_over(uint64_t pending, uint64_t seq) {
  return (pending & 0xffffffffu) << 32 | (seq & 0xffffffffu);
}

// Takes the posted update once (0: none); a plain load while there is none.
uint64_t take_pending(std::atomic<uint64_t>& pending) {
  return pending.load(std::memory_order_relaxed) ? pending.exchange(0, std::memory_order_acquire) : 0;
}

}  // namespace

// ---------------------------------------------------------------------------

const char* reason_name(Reason r) {
  switch (r) {
    case Reason::Ok: return "ok";
    case Reason::Truncated: return "truncated";
    case Reason::BadLength: return "bad-length";
    case Reason::AuthFailed: return "auth-failed";
    case Reason::BadPadding: return "bad-padding";
    case Reason::BadNextHeader: return "bad-next-header";
    case Reason::Replayed: return "replayed";
    case Reason::InnerMismatch: return "inner-mismatch";
    case Reason::LifetimeExpired: return "lifetime-expired";
    case Reason::SeqExhausted: return "seq-exhausted";
    case Reason::NoSpace: return "no-space";
    case Reason::Unsupported: return "unsupported";
    case Reason::WrongSpi: return "wrong-spi";
    case Reason::DummyPacket: return "dummy-packet";
    case Reason::EcnDrop: return "ecn-drop";
    case Reason::PolicyMismatch: return "policy-mismatch";
    case Reason::Count: break;
  }
  return "unknown";
}

uint32_t crypto_status_for(Reason r, Mode m) {
  switch (r) {
    case Reason::Ok:
    case Reason::DummyPacket: return CRYPTO_SUCCESS;
    case Reason::AuthFailed: return m == Mode::Tunnel ? CRYPTO_TUNNEL_ESP_AUTH_FAILED : CRYPTO_TRANSPORT_ESP_AUTH_FAILED;
    case Reason::Truncated:
    case Reason::BadLength:
    case Reason::BadPadding: return CRYPTO_INVALID_PACKET_SYNTAX;
    case Reason::BadNextHeader:
    case Reason::InnerMismatch: return CRYPTO_INVALID_PROTOCOL;
    default: return CRYPTO_GENERIC_ERROR;
  }
}

bool crypto_done_for(Reason r) { return r != Reason::Unsupported && r != Reason::WrongSpi; }

uint64_t monotonic_now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

uint32_t max_overhead(const SaSpec& spec) {
  const EncAlgInfo& enc = info(spec.enc);
  const AuthAlgInfo& auth = info(spec.auth);
  const uint32_t iv = enc.aead ? enc.iv_len : (spec.enc == EncAlg::Null ? auth.iv_len : enc.iv_len);
  const uint32_t icv = enc.aead ? enc.icv_len : auth.icv_len;
  const uint32_t block = enc.block_len > 4 ? enc.block_len : 4;
  const uint32_t outer = spec.mode == Mode::Tunnel ? (spec.dst.family == Family::V4 ? 20 : 40) : 0;
  return outer + (spec.udp_encap ? 8 : 0) + 8 + iv + (block - 1) + 2 + icv;
}

namespace {
LifetimeThresholds thresholds(uint64_t packets, uint64_t bytes, uint64_t seconds, uint64_t created_ns) {
  constexpr uint64_t kNsPerS = 1000000000ull;
  LifetimeThresholds t;
  if (packets) t.packets = packets;
  if (bytes) t.bytes = bytes;
  if (seconds && seconds <= (UINT64_MAX - created_ns) / kNsPerS) t.deadline_ns = created_ns + seconds * kNsPerS;
  return t;
}
}  // namespace

LifetimeThresholds LifetimeThresholds::soft_of(const SaSpec& s, uint64_t created_ns) {
  return thresholds(s.life_packets.soft, s.life_bytes.soft, s.life_seconds.soft, created_ns);
}
LifetimeThresholds LifetimeThresholds::hard_of(const SaSpec& s, uint64_t created_ns) {
  return thresholds(s.life_packets.hard, s.life_bytes.hard, s.life_seconds.hard, created_ns);
}
LifetimeThresholds LifetimeThresholds::first_of(const LifetimeThresholds& a, const LifetimeThresholds& b) {
  return {std::min(a.packets, b.packets), std::min(a.bytes, b.bytes), std::min(a.deadline_ns, b.deadline_ns)};
}

// ---- Outbound ---------------------------------------------------------------

OutboundSa::OutboundSa(const SaSpec& spec, uint64_t created_ns, unsigned crypto_slots)
    : params_(SaParams::of(spec)),
      soft_(LifetimeThresholds::soft_of(spec, created_ns)),
      hard_(LifetimeThresholds::hard_of(spec, created_ns)),
      quiet_(LifetimeThresholds::first_of(soft_, hard_)),
      shared_(crypto_slots > 1),
      last_seq_(spec.esn ? UINT64_MAX : UINT32_MAX) {
  if (spec.dir != Direction::Out) fail(ErrorCode::InvalidArgument, "OutboundSa needs an outbound SA (dir out)");
  if (spec.mode == Mode::Tunnel && (spec.src.family != spec.dst.family || spec.src.is_any() || spec.dst.is_any()))
    fail(ErrorCode::InvalidArgument, "an outbound tunnel SA needs a source and destination address of one family");
  crypto_ = std::make_unique<CryptoState>(spec, true, crypto_slots);
  next_seq_.store(spec.esn ? (uint64_t(spec.seq_hi) << 32) + 1 : 1);

  tunnel_ = spec.mode == Mode::Tunnel;
  sa_v6_ = spec.dst.family == Family::V6;
  carrier_ = spec.udp_encap ? kProtoUdp : kProtoEsp;
  iv_len_ = crypto_->iv_len();
  icv_len_ = crypto_->icv_len();
  block_mask_ = crypto_->block_len() - 1;
  const uint32_t outer_len = tunnel_ ? (sa_v6_ ? 40 : 20) : 0;
  insert_ = outer_len + (spec.udp_encap ? 8 : 0) + 8 + iv_len_;
  if (!tunnel_) return;
  uint8_t* o = outer_.data();
  if (!sa_v6_) {
    o[0] = 0x45;
    o[8] = kTunnelTtl;
    o[9] = carrier_;
    std::memcpy(o + 12, spec.src.bytes.data(), 4);
    std::memcpy(o + 16, spec.dst.bytes.data(), 4);
    outer_sum_ = sum16(o, 20);
  } else {
    o[0] = 0x60;
    o[6] = carrier_;
    o[7] = kTunnelTtl;
    std::memcpy(o + 8, spec.src.bytes.data(), 16);
    std::memcpy(o + 24, spec.dst.bytes.data(), 16);
  }
}

OutboundSa::~OutboundSa() = default;

bool OutboundSa::set_seq_hi(uint32_t seq_hi) {
  if (!params_.esn) return false;
  if (!shared_) {  // the owning thread applies it (claim_seq)
    pending_seq_hi_.store(kPendingSeqHi | seq_hi, std::memory_order_release);
    return true;
  }
  uint64_t cur = next_seq_.load(std::memory_order_relaxed);
  uint64_t want;
  do {
    want = uint64_t(seq_hi) << 32 | (cur & 0xffffffffu);
    if (want == 0) want = 1;
  } while (!next_seq_.compare_exchange_weak(cur, want, std::memory_order_relaxed));
  return true;
}

namespace {
std::atomic<uint64_t> delete_requests_raised_total{0};
}  // namespace

uint64_t delete_requests_raised() { return delete_requests_raised_total.load(std::memory_order_acquire); }

void OutboundSa::raise_delete_request() {
  // Off the packet path: once per SA (the load keeps later refused packets from writing the line).
  if (delete_requested_.load(std::memory_order_relaxed) || delete_requested_.exchange(true, std::memory_order_relaxed))
    return;
  delete_requests_raised_total.fetch_add(1, std::memory_order_release);  // after the flag: a reader sees both
}

void OutboundSa::fire_hard(LifetimeEvent* ev, bool lifetime_reached) {
  if (lifetime_reached) lifetime_over_.store(true, std::memory_order_relaxed);
  raise_delete_request();
  if (!hard_fired_.exchange(true, std::memory_order_relaxed) && ev) ev->hard_expired_now = true;
}

// An SA of one thread with no soft or hard limit within this packet's reach
// (one more packet, `plain_len` more bytes, `now_ns`): check_hard_lifetime()
// cannot refuse it and account() cannot fire, so both skip their tests.
// Several threads: never quiet (another thread's packet may reach a limit
// between this test and account()).
[[gnu::always_inline]] inline bool OutboundSa::quiet_for(uint32_t plain_len, uint64_t now_ns) const {
  return !shared_ && !lifetime_over_.load(std::memory_order_relaxed) &&
         counters_.packets.load(std::memory_order_relaxed) + 1 < quiet_.packets &&
         counters_.bytes.load(std::memory_order_relaxed) + plain_len < quiet_.bytes && now_ns < quiet_.deadline_ns;
}

[[gnu::always_inline]] inline bool OutboundSa::check_hard_lifetime(uint32_t plain_len, uint64_t now_ns, LifetimeEvent* ev) {
  if (lifetime_over_.load(std::memory_order_relaxed)) return false;
  // The bytes limit refuses the packet that would pass it (the counts limit
  // ends with the packet that reaches it, in account()).
  if (counters_.packets.load(std::memory_order_relaxed) >= hard_.packets ||
      counters_.bytes.load(std::memory_order_relaxed) + plain_len > hard_.bytes || now_ns >= hard_.deadline_ns) {
    fire_hard(ev, true);
    return false;
  }
  return true;
}

[[gnu::always_inline]] inline void OutboundSa::account(uint32_t plain_len, uint64_t now_ns, LifetimeEvent* ev, bool quiet) {
  const uint64_t packets = bump(counters_.packets, uint64_t(1), shared_);
  const uint64_t bytes = bump(counters_.bytes, uint64_t(plain_len), shared_);
  if (quiet) return;
  // Reaching a hard count limit: this packet is the last one sent.
  if (packets >= hard_.packets || bytes >= hard_.bytes) fire_hard(ev, true);
  if (soft_.reached(packets, bytes, now_ns)) {
    if (!soft_fired_.load(std::memory_order_relaxed) && !soft_fired_.exchange(true, std::memory_order_relaxed) && ev)
      ev->soft_expired_now = true;
  }
}

Reason OutboundSa::encapsulate(Packet& p, uint64_t now_ns, LifetimeEvent* ev) {
  if (ev) *ev = {};
  const Reason r = encapsulate_impl(p, now_ns, ev);
  bump(counters_.by_reason[size_t(r)], uint64_t(1), shared_);
  return r;
}

namespace {
uint64_t with_seq_hi(uint64_t pending, uint64_t next) {
  const uint64_t want = seq_hi_over(pending, next);
  return want == 0 ? 1 : want;  // the first number is 1 (RFC 4303 §3.3.3)
}
}  // namespace

uint64_t OutboundSa::next_seq() const {
  const uint64_t pending = pending_seq_hi_.load(std::memory_order_acquire);
  const uint64_t next = next_seq_.load(std::memory_order_relaxed);
  return pending ? with_seq_hi(pending, next) : next;
}

// The sequence number never wraps (RFC 4303 §3.3.3): claim one or stop.
[[gnu::always_inline]] inline bool OutboundSa::claim_seq(uint64_t& seq) {
  const uint64_t last = last_seq_;
  if (!shared_) {
    if (const uint64_t pending = take_pending(pending_seq_hi_))
      next_seq_.store(with_seq_hi(pending, next_seq_.load(std::memory_order_relaxed)), std::memory_order_relaxed);
    seq = next_seq_.load(std::memory_order_relaxed);
    if (seq == 0 || seq > last) return false;
    next_seq_.store(seq + 1, std::memory_order_relaxed);
    return true;
  }
  seq = next_seq_.load(std::memory_order_relaxed);
  do {
    if (seq == 0 || seq > last) return false;
  } while (!next_seq_.compare_exchange_weak(seq, seq + 1, std::memory_order_relaxed));
  return true;
}

uint32_t OutboundSa::max_plaintext(uint32_t mtu) const {
  const uint32_t block = crypto_->block_len();
  const uint32_t outer = params_.mode == Mode::Tunnel ? (sa_v6_ ? 40 : 20) : 0;
  const uint32_t fixed = outer + (params_.udp_encap ? 8 : 0) + 8 + crypto_->iv_len() + crypto_->icv_len();
  if (mtu < fixed + block) return 0;
  const uint32_t room = mtu - fixed;  // for payload + padding + 2, a block multiple
  if (params_.mode == Mode::Tunnel) return room / block * block - 2;
  // Transport: hdr + align_up(len - hdr + 2, block) <= len + block - 1 + 2.
  return room - (block - 1) - 2;
}

[[gnu::always_inline]] inline Reason OutboundSa::encapsulate_impl(Packet& p, uint64_t now_ns, LifetimeEvent* ev) {
  PlainIp ip;
  if (Reason r = parse_plain(p.data, p.len, !tunnel_, ip); r != Reason::Ok) return r;
  if (!tunnel_ && (ip.v6 != sa_v6_ || ip.fragment)) return Reason::Unsupported;

  const uint32_t payload_len = ip.len - ip.hdr_len;  // tunnel: hdr_len 0, the whole packet
  const uint32_t pad = pad_for(payload_len, block_mask_ + 1);
  const uint32_t ct_len = payload_len + pad + 2;
  const uint32_t append = pad + 2 + icv_len_;
  const uint32_t tail_avail = p.tailroom + (p.len - ip.len);
  if (p.headroom < insert_ || tail_avail < append) return Reason::NoSpace;
  // Tunnel: outer header in insert_, hdr_len 0; transport: the IP header slides.
  const uint32_t total = ip.hdr_len + insert_ + ct_len + icv_len_;
  if (total - (sa_v6_ ? 40 : 0) > 0xffff) return Reason::BadLength;  // the IP length field cannot say it

  const bool quiet = quiet_for(ip.len, now_ns);
  if (!quiet && !check_hard_lifetime(ip.len, now_ns, ev)) return Reason::LifetimeExpired;
  uint64_t seq = 0;
  if (!claim_seq(seq)) {
    raise_delete_request();
    return Reason::SeqExhausted;
  }

  uint8_t* const payload = p.data + ip.hdr_len;  // does not move
  uint8_t* const start = p.data - insert_;
  const uint32_t front = tunnel_ ? (sa_v6_ ? 40 : 20) : ip.hdr_len;
  uint8_t* const udp = start + front;
  uint8_t* const esp = payload - 8 - iv_len_;
  uint8_t* const iv = esp + 8;
  const uint8_t esp_nh = tunnel_ ? (ip.v6 ? kProtoIpv6 : kProtoIpv4) : ip.proto;
  if (!tunnel_) std::memmove(start, p.data, ip.hdr_len);  // IP header (+ext) slides left, before the ESP header lands

  put32(esp, params_.spi);
  put32(esp + 4, uint32_t(seq));
  write_trailer(payload + payload_len, pad, esp_nh, tail_avail);

  if (tunnel_) {
    const uint8_t tos = encap_tos(ip.tos);
    if (!sa_v6_) {
      std::memcpy(start, outer_.data(), 20);
      const uint16_t id = uint16_t(bump(ipv4_id_, uint32_t(1), shared_) - 1);
      const uint16_t frag = ip.df ? 0x4000 : 0;
      start[1] = tos;
      put16(start + 2, uint16_t(total));
      put16(start + 4, id);
      put16(start + 6, frag);
      // The fixed fields' sum plus this packet's four (tos is the low byte of the first word).
      put16(start + 10, fold(outer_sum_ + tos + total + id + frag));
    } else {
      std::memcpy(start, outer_.data(), 40);
      start[0] = uint8_t(0x60 | tos >> 4);
      start[1] = uint8_t((tos & 0x0f) << 4);  // flow label 0
      put16(start + 4, uint16_t(total - 40));
    }
  } else {
    start[ip.nh_off] = carrier_;
    if (!ip.v6) {
      put16(start + 2, uint16_t(total));
      set_ipv4_checksum(start);
    } else {
      put16(start + 4, uint16_t(total - 40));
    }
  }

  const EspHeaderFields h{params_.spi, seq, params_.esn};
  if (!crypto_->seal(h, esp, iv, payload, ct_len, payload + ct_len)) return Reason::Unsupported;

  if (params_.udp_encap) {
    const uint32_t ulen = total - front;
    put16(udp, params_.encap_sport);
    put16(udp + 2, params_.encap_dport);
    put16(udp + 4, uint16_t(ulen));
    put16(udp + 6, 0);  // RFC 3948 §2.1: IPv4 checksum zero
    if (sa_v6_) set_udp6_checksum(start, udp, ulen);
  }

  // The last sequence number went out: ask for a rekey.
  if (seq == last_seq_) fire_hard(ev, false);
  account(ip.len, now_ns, ev, quiet);

  p.data = start;
  p.len = total;
  p.headroom -= insert_;
  p.tailroom = tail_avail - append;
  return Reason::Ok;
}

// ---- Inbound ----------------------------------------------------------------

InboundSa::InboundSa(const SaSpec& spec, uint64_t created_ns)
    : params_(SaParams::of(spec)),
      soft_(LifetimeThresholds::soft_of(spec, created_ns)),
      hard_(LifetimeThresholds::hard_of(spec, created_ns)),
      first_(LifetimeThresholds::first_of(soft_, hard_)),
      window_size_(spec.replay_window) {
  if (spec.dir != Direction::In) fail(ErrorCode::InvalidArgument, "InboundSa needs an inbound SA (dir in)");
  crypto_ = std::make_unique<CryptoState>(spec, false, 1);
  tunnel_ = spec.mode == Mode::Tunnel;
  sa_v6_ = spec.dst.family == Family::V6;
  carrier_ = spec.udp_encap ? kProtoUdp : kProtoEsp;
  iv_len_ = crypto_->iv_len();
  icv_len_ = crypto_->icv_len();
  cbc_mask_ = crypto_->suite() == Suite::CbcHmac ? crypto_->block_len() - 1 : 0;
  while (bitmap_bits_ < window_size_) bitmap_bits_ <<= 1;
  bitmap_ = bitmap_bits_ > 64 ? new uint64_t[bitmap_bits_ / 64]() : &inline_bitmap_;
  top_ = spec.esn ? uint64_t(spec.seq_hi) << 32 : 0;
}

InboundSa::~InboundSa() {
  if (bitmap_ != &inline_bitmap_) delete[] bitmap_;
}

bool InboundSa::set_seq_hi(uint32_t seq_hi) {
  if (!params_.esn) return false;
  // The SA's thread moves top_ (decapsulate): it applies this there.
  pending_seq_hi_.store(kPendingSeqHi | seq_hi, std::memory_order_release);
  return true;
}

uint64_t InboundSa::highest_seq() const {
  const uint64_t pending = pending_seq_hi_.load(std::memory_order_acquire);
  return pending ? seq_hi_over(pending, top_) : top_;
}

void InboundSa::set_highest_seq(uint64_t seq) {
  pending_seq_hi_.store(0, std::memory_order_relaxed);
  top_ = seq;
  std::memset(bitmap_, 0, bitmap_bits_ / 8);
}

// RFC 4303 Appendix A2.2: place seq_lo in the window around the top.
[[gnu::always_inline]] inline bool InboundSa::infer_seq(uint32_t seq_lo, uint64_t& seq) const {
  if (!params_.esn) {
    seq = seq_lo;
    return true;
  }
  const uint32_t w = window_size_ ? window_size_ : 64;  // no window: infer as with the default
  const uint32_t tl = uint32_t(top_);
  const uint32_t th = uint32_t(top_ >> 32);
  uint32_t hi;
  if (tl >= w - 1) {  // case A: the window lies within one subspace
    if (seq_lo >= tl - w + 1) {
      hi = th;
    } else {
      if (th == UINT32_MAX) return false;
      hi = th + 1;
    }
  } else {  // case B: the window spans two subspaces
    if (seq_lo >= uint32_t(tl - w + 1)) {
      if (th == 0) return false;  // before the first subspace: never sent
      hi = th - 1;
    } else {
      hi = th;
    }
  }
  seq = uint64_t(hi) << 32 | seq_lo;
  return true;
}

[[gnu::always_inline]] inline bool InboundSa::replay_check(uint64_t seq) const {
  if (seq == 0) return false;  // never sent (RFC 4303 §3.3.3: the first packet is 1)
  if (window_size_ == 0 || seq > top_) return true;
  if (top_ - seq >= window_size_) return false;
  const uint64_t bit = seq & (bitmap_bits_ - 1);
  return (bitmap_[bit / 64] >> (bit % 64) & 1) == 0;
}

[[gnu::always_inline]] inline void InboundSa::replay_update(uint64_t seq) {
  if (seq == top_ + 1 && window_size_ != 0) {  // in order, the usual case: the new top's own bit is the only one to move
    const uint64_t bit = seq & (bitmap_bits_ - 1);
    bitmap_[bit / 64] |= uint64_t(1) << (bit % 64);
    top_ = seq;
    return;
  }
  replay_update_other(seq);
}

void InboundSa::replay_update_other(uint64_t seq) {
  if (window_size_ == 0) {
    if (seq > top_) top_ = seq;
    return;
  }
  if (seq > top_) {
    const uint64_t diff = seq - top_;
    if (diff >= bitmap_bits_) {
      std::memset(bitmap_, 0, bitmap_bits_ / 8);
    } else {
      // Clear the bits of the sequence numbers the window slides over
      // (counted, so that a top near 2^64 cannot wrap the loop).
      uint64_t s = top_ + 1;
      for (uint64_t left = diff; left > 0;) {
        const uint64_t bit = s & (bitmap_bits_ - 1);
        if (bit % 64 == 0 && left >= 64) {  // a whole word at once
          bitmap_[bit / 64] = 0;
          s += 64;
          left -= 64;
        } else {
          bitmap_[bit / 64] &= ~(uint64_t(1) << (bit % 64));
          ++s;
          --left;
        }
      }
    }
    top_ = seq;
  }
  const uint64_t bit = seq & (bitmap_bits_ - 1);
  bitmap_[bit / 64] |= uint64_t(1) << (bit % 64);
}

[[gnu::always_inline]] inline void InboundSa::account(uint32_t plain_len, uint64_t now_ns, LifetimeEvent* ev) {
  life_packets_ += 1;
  life_bytes_ += plain_len;
  bump(counters_.packets, uint64_t(1), false);
  bump(counters_.bytes, uint64_t(plain_len), false);
  if (!first_.reached(life_packets_, life_bytes_, now_ns)) return;
  if (!hard_fired_ && hard_.reached(life_packets_, life_bytes_, now_ns)) {
    hard_fired_ = true;
    if (ev) ev->hard_expired_now = true;
  }
  if (!soft_fired_ && soft_.reached(life_packets_, life_bytes_, now_ns)) {
    soft_fired_ = true;
    if (ev) ev->soft_expired_now = true;
  }
}

void InboundSa::reclassify(Reason r, uint32_t plain_len) {
  bump(counters_.packets, uint64_t(0) - 1, false);
  bump(counters_.bytes, uint64_t(0) - plain_len, false);
  bump(counters_.by_reason[size_t(Reason::Ok)], uint64_t(0) - 1, false);
  bump(counters_.by_reason[size_t(r)], uint64_t(1), false);
}

InboundSa::Result InboundSa::decapsulate(Packet& p, uint64_t now_ns, LifetimeEvent* ev) {
  if (ev) *ev = {};
  Result res;
  res.reason = decapsulate_impl(p, now_ns, ev, res);
  if (res.reason == Reason::Ok) {  // the usual case, without the table lookups
    res.crypto_status = CRYPTO_SUCCESS;
    res.crypto_done = true;
  } else {
    res.crypto_status = crypto_status_for(res.reason, params_.mode);
    res.crypto_done = crypto_done_for(res.reason);
  }
  res.sa_delete_req = hard_fired_ && res.crypto_done;
  bump(counters_.by_reason[size_t(res.reason)], uint64_t(1), false);
  return res;
}

[[gnu::always_inline]] inline Reason InboundSa::decapsulate_impl(Packet& p, uint64_t now_ns, LifetimeEvent* ev, Result& res) {
  if (const uint64_t pending = take_pending(pending_seq_hi_)) top_ = seq_hi_over(pending, top_);
  uint8_t* const d = p.data;
  if (p.len < 1) return Reason::Truncated;
  const uint8_t version = d[0] >> 4;
  if (version != (sa_v6_ ? 6 : 4)) return Reason::Unsupported;

  // Outer IP header, bounds first.
  uint32_t total, hdr, nh_off;
  uint8_t proto;
  if (!sa_v6_) {
    if (p.len < 20) return Reason::Truncated;
    hdr = uint32_t(d[0] & 0x0f) * 4;
    total = be16(d + 2);
    if (hdr < 20 || total < hdr) return Reason::BadLength;
    if (hdr > p.len || total > p.len) return Reason::Truncated;
    if ((be16(d + 6) & 0x3fff) != 0) return Reason::Unsupported;  // fragment: the stack reassembles
    nh_off = 9;
    proto = d[9];
  } else {
    if (p.len < 40) return Reason::Truncated;
    const uint32_t pl = be16(d + 4);
    if (pl == 0 && d[6] == kHopByHop) return Reason::Unsupported;  // jumbogram (RFC 2675)
    total = 40 + pl;
    if (total > p.len) return Reason::Truncated;
    if (Reason r = walk_ipv6_ext(d, total, hdr, nh_off, proto); r != Reason::Ok) return r;
  }
  if (proto != carrier_) return Reason::Unsupported;

  uint32_t off = hdr;
  if (carrier_ == kProtoUdp) {
    if (total - off < 8) return Reason::Truncated;
    if (be16(d + off + 4) != total - off) return Reason::BadLength;
    off += 8;
    if (total - off >= 4 && be32(d + off) == 0) return Reason::Unsupported;  // non-ESP marker: IKE
  }

  // ESP header, SPI, lengths.
  if (total - off < 8) return Reason::Truncated;
  uint8_t* const esp = d + off;
  if (be32(esp) != params_.spi) return Reason::WrongSpi;
  if (total - off < 8 + iv_len_ + icv_len_ + 2) return Reason::Truncated;
  const uint32_t ct_len = total - off - 8 - iv_len_ - icv_len_;
  if ((ct_len & cbc_mask_) != 0) return Reason::BadLength;  // CBC: whole blocks
  uint8_t* const iv = esp + 8;
  uint8_t* const ct = iv + iv_len_;

  // Sequence number and anti-replay: checked now, recorded only after authentication.
  uint64_t seq;
  if (!infer_seq(be32(esp + 4), seq)) return Reason::Replayed;
  res.seq = seq;
  if (!replay_check(seq)) return Reason::Replayed;

  const EspHeaderFields h{params_.spi, seq, params_.esn};
  if (!crypto_->open(h, esp, iv, ct, ct_len, ct + ct_len)) return Reason::AuthFailed;
  replay_update(seq);  // authenticated: this sequence number is spent, whatever the payload holds

  const uint8_t pad = ct[ct_len - 2];
  const uint8_t nh = ct[ct_len - 1];
  res.next_header = nh;
  if (uint32_t(pad) + 2 > ct_len) return Reason::BadPadding;
  const uint32_t payload_len = ct_len - 2 - pad;
  if (!padding_ok(ct + payload_len, pad)) return Reason::BadPadding;
  if (nh == kProtoNone) return Reason::DummyPacket;

  uint8_t* out;
  uint32_t out_len;
  if (tunnel_) {
    if (nh != kProtoIpv4 && nh != kProtoIpv6) return Reason::BadNextHeader;
    // The inner packet: version agrees with the next header, its length fits
    // (TFC padding after it is allowed, RFC 4303 §2.7, and dropped).
    if (nh == kProtoIpv4) {
      if (payload_len < 20 || ct[0] >> 4 != 4) return Reason::InnerMismatch;
      const uint32_t ihl = uint32_t(ct[0] & 0x0f) * 4, tot = be16(ct + 2);
      if (ihl < 20 || tot < ihl || tot > payload_len) return Reason::InnerMismatch;
      out_len = tot;
    } else {
      if (payload_len < 40 || ct[0] >> 4 != 6) return Reason::InnerMismatch;
      const uint32_t pl = be16(ct + 4);
      if (pl == 0 || 40 + pl > payload_len) return Reason::InnerMismatch;
      out_len = 40 + pl;
    }
    // RFC 6040 §4.2: an outer Not-ECT or ECT(0) leaves the inner packet as it is.
    const uint8_t outer_ecn = ip_tos(d) & kEcnMask;
    if (outer_ecn == kEct1 || outer_ecn == kCe) {
      const uint8_t inner_tos = ip_tos(ct);
      uint8_t ecn;
      if (!decap_ecn(inner_tos & kEcnMask, outer_ecn, ecn)) return Reason::EcnDrop;
      if (ecn != (inner_tos & kEcnMask)) set_ip_tos(ct, uint8_t((inner_tos & ~kEcnMask) | ecn));
    }
    out = ct;
  } else {
    if (nh == kProtoIpv4 || nh == kProtoIpv6 || nh == kHopByHop) return Reason::BadNextHeader;
    // Restore the IP header in front of the payload: it slides right over the
    // ESP header and IV.
    out = ct - hdr;
    std::memmove(out, d, hdr);
    out[nh_off] = nh;
    out_len = hdr + payload_len;
    if (!sa_v6_) {
      put16(out + 2, uint16_t(out_len));
      set_ipv4_checksum(out);
    } else {
      put16(out + 4, uint16_t(out_len - 40));
    }
  }

  account(out_len, now_ns, ev);
  const uint32_t room = p.headroom + p.len + p.tailroom;
  p.headroom += uint32_t(out - d);
  p.data = out;
  p.len = out_len;
  p.tailroom = room - p.headroom - out_len;
  return Reason::Ok;
}

// ---- Receive word and bundles -------------------------------------------------

uint32_t rx_info_for(const InboundSa::Result& r) {
  if (!r.crypto_done) return 0;  // not checked: up untouched, no offload information
  return ov2_rx_make(r.sa_delete_req, 1, 0, r.crypto_status);
}

Reason encapsulate_bundle(OutboundSa& transport, OutboundSa& tunnel, Packet& p, uint64_t now_ns) {
  if (Reason r = transport.encapsulate(p, now_ns); r != Reason::Ok) return r;
  return tunnel.encapsulate(p, now_ns);
}

BundleResult decapsulate_bundle(InboundSa& tunnel, InboundSa& transport, Packet& p, uint64_t now_ns) {
  BundleResult b;
  b.transport.reason = Reason::Unsupported;
  b.tunnel = tunnel.decapsulate(p, now_ns);
  if (b.tunnel.reason != Reason::Ok) {
    b.rx_info = rx_info_for(b.tunnel);
    return b;
  }
  b.transport = transport.decapsulate(p, now_ns);
  b.transport_checked = b.transport.crypto_done;
  const bool delete_req = b.tunnel.sa_delete_req || b.transport.sa_delete_req;
  // Tunnel checked; the transport portion either checked (NextCryptoDone, its
  // status names TRANSPORT_*) or not recognisable (no NextCryptoDone, and a
  // generic error: the packet is still ESP and must not pass as decrypted).
  b.rx_info = ov2_rx_make(delete_req, 1, b.transport_checked, b.transport.crypto_status);
  return b;
}

}  // namespace ov2::esp
