#include "esp/reassembly.h"

#include <algorithm>
#include <cstring>

#include "esp/ip_checksum.h"
#include "esp/ipv6_chain.h"

namespace ov2::esp {

using wire::be16;
using wire::be32;
using wire::put16;

namespace {

// Room kept in front of a datagram's payload in its buffer for the header of
// the first fragment: IPv4 with 40 bytes of options (60), or IPv6's
// unfragmentable part (the fixed header and the extension headers before the
// Fragment header, RFC 8200 §4.5).  A longer IPv6 one is BadHeaderChain.
constexpr uint32_t kHeaderRoom = 256;
constexpr uint8_t kIpv6Fragment = 44;
constexpr uint32_t kMaxDatagram = 65535;
constexpr uint32_t kLargeBytes = kHeaderRoom + Reassembly::kLargePayload;
constexpr uint32_t kNoLarge = UINT32_MAX;

// What add() needs of one fragment, whichever the family.
struct FragmentView {
  uint8_t family;  // 4 or 6
  uint8_t proto;   // IPv4 protocol / IPv6 fragment header's next header
  uint32_t id;
  const uint8_t* src;
  const uint8_t* dst;
  const uint8_t* header;  // the IP header (IPv6: the unfragmentable part)
  uint32_t header_len;
  uint32_t nh_off;  // IPv6: the Next Header byte in `header` that named the Fragment header
  const uint8_t* payload;
  uint32_t offset, len;  // payload bytes [offset, offset + len) of the datagram
  bool more;
};

// False if `ip` is no fragment add() can take; `why` says why.
bool parse(const uint8_t* ip, uint32_t len, FragmentView* f, FragmentDrop* why) {
  *why = FragmentDrop::Malformed;
  if (len < 1) return false;
  if ((ip[0] >> 4) == 4) {
    if (len < 20) return false;
    const uint32_t ihl = (ip[0] & 0x0fu) * 4;
    const uint32_t total = be16(ip + 2);
    if (ihl < 20 || total < ihl || total > len) return false;
    const uint16_t fo = be16(ip + 6);
    *f = {4, ip[9],    be16(ip + 4),        ip + 12,     ip + 16,           ip, ihl,
          0, ip + ihl, (fo & 0x1fffu) * 8u, total - ihl, (fo & 0x2000) != 0};
    return true;
  }
  if ((ip[0] >> 4) == 6) {
    if (len < 40) return false;
    const uint32_t total = 40u + be16(ip + 4);
    if (total > len) return false;
    const Ipv6Chain chain = walk_ipv6_chain(ip, total);
    if (chain.status != Ipv6Chain::Status::Ok || chain.off > kHeaderRoom) {
      *why = FragmentDrop::BadHeaderChain;
      return false;
    }
    if (chain.next != kIpv6Fragment || chain.off + 8 > total) return false;
    const uint8_t* fh = ip + chain.off;
    const uint16_t fo = be16(fh + 2);
    *f = {6,      fh[0],        be32(fh + 4),          ip + 8,       ip + 24, ip, chain.off, chain.nh_off,
          fh + 8, fo & 0xfff8u, total - chain.off - 8, (fo & 1) != 0};
    return true;
  }
  return false;
}

}  // namespace

struct Reassembly::Entry {
  bool used = false;
  bool have_first = false;
  bool have_last = false;
  uint8_t family = 0;
  uint8_t proto = 0;
  uint32_t id = 0;
  uint8_t src[16]{};
  uint8_t dst[16]{};
  uint64_t deadline_ns = 0;
  uint32_t header_len = 0;
  uint32_t total = 0;  // payload bytes, once the last fragment is in
  uint32_t fragments = 0;
  uint8_t* buffer = nullptr;      // kHeaderRoom, then the payload: own_buffer or a large buffer
  Fragment* held = nullptr;       // sorted by start: own_held or the large buffer's list
  uint8_t* own_buffer = nullptr;  // kHeaderRoom + limits.buffer_bytes
  Fragment* own_held = nullptr;   // limits.max_fragments
  uint32_t large = kNoLarge;      // the large buffer it holds, if any
};

Reassembly::Reassembly(const Limits& limits) : limits_(limits) {
  limits_.entries = std::max(limits_.entries, 1u);
  limits_.max_fragments = std::max(limits_.max_fragments, 2u);
  limits_.buffer_bytes = std::max(limits_.buffer_bytes, 68u);
  const size_t buffer = kHeaderRoom + size_t(limits_.buffer_bytes);
  entries_ = std::make_unique<Entry[]>(limits_.entries);
  buffers_ = std::make_unique<uint8_t[]>(size_t(limits_.entries) * buffer);
  fragments_ = std::make_unique<Fragment[]>(size_t(limits_.entries) * limits_.max_fragments);
  for (uint32_t i = 0; i < limits_.entries; ++i) {
    Entry& e = entries_[i];
    e.buffer = e.own_buffer = buffers_.get() + size_t(i) * buffer;
    e.held = e.own_held = fragments_.get() + size_t(i) * limits_.max_fragments;
  }
  if (limits_.large_entries > 0) {
    limits_.large_fragments = std::max(limits_.large_fragments, limits_.max_fragments);
    // Not zeroed: only the pages a big datagram touches become resident.
    large_buffers_.reset(new uint8_t[size_t(limits_.large_entries) * kLargeBytes]);
    large_fragment_lists_ = std::make_unique<Fragment[]>(size_t(limits_.large_entries) * limits_.large_fragments);
    large_free_ = std::make_unique<uint32_t[]>(limits_.large_entries);
    for (uint32_t i = 0; i < limits_.large_entries; ++i) large_free_[i] = limits_.large_entries - 1 - i;
    large_free_count_ = limits_.large_entries;
  }
}

Reassembly::~Reassembly() = default;

bool Reassembly::is_fragment(const uint8_t* ip, uint32_t len) {
  if (len >= 20 && (ip[0] >> 4) == 4) return (be16(ip + 6) & 0x3fff) != 0;
  if (len < 40 || (ip[0] >> 4) != 6) return false;
  const Ipv6Chain chain = walk_ipv6_chain(ip, std::min(len, 40u + be16(ip + 4)));
  return chain.status != Ipv6Chain::Status::Ok || chain.next == kIpv6Fragment;
}

Reassembly::Entry* Reassembly::find_or_create(uint8_t family, const uint8_t* src, const uint8_t* dst, uint32_t id,
                                              uint8_t proto, uint64_t now_ns, FragmentDrop* why) {
  const size_t alen = family == 4 ? 4 : 16;
  Entry* free_entry = nullptr;
  for (uint32_t i = 0; i < limits_.entries; ++i) {
    Entry& e = entries_[i];
    if (!e.used) {
      if (!free_entry) free_entry = &e;
      continue;
    }
    // RFC 791: (src, dst, protocol, id); RFC 8200: (src, dst, id).
    if (e.id == id && e.family == family && (family == 6 || e.proto == proto) && std::memcmp(e.src, src, alen) == 0 &&
        std::memcmp(e.dst, dst, alen) == 0)
      return &e;
  }
  if (!free_entry) {
    *why = FragmentDrop::TableFull;
    return nullptr;
  }
  Entry& e = *free_entry;
  e.used = true;
  e.have_first = e.have_last = false;
  e.family = family;
  e.proto = proto;
  e.id = id;
  std::memcpy(e.src, src, alen);
  std::memcpy(e.dst, dst, alen);
  e.deadline_ns = now_ns + limits_.timeout_ns;
  e.header_len = e.total = e.fragments = 0;
  next_expiry_ns_ = std::min(next_expiry_ns_, e.deadline_ns);
  ++used_;
  return &e;
}

bool Reassembly::make_large(Entry& e) {
  if (large_free_count_ == 0) return false;
  const uint32_t i = large_free_[--large_free_count_];
  uint8_t* buffer = large_buffers_.get() + size_t(i) * kLargeBytes;
  Fragment* held = large_fragment_lists_.get() + size_t(i) * limits_.large_fragments;
  uint32_t reach = 0;
  for (uint32_t k = 0; k < e.fragments; ++k) reach = std::max(reach, e.held[k].end);
  std::memcpy(buffer, e.buffer, kHeaderRoom + reach);  // the first fragment's header and the payload so far
  std::copy(e.held, e.held + e.fragments, held);
  e.buffer = buffer;
  e.held = held;
  e.large = i;
  return true;
}

void Reassembly::release(Entry& e) {
  if (e.large != kNoLarge) {
    large_free_[large_free_count_++] = e.large;
    e.large = kNoLarge;
    e.buffer = e.own_buffer;
    e.held = e.own_held;
  }
  e.used = false;
  --used_;
}

Reassembly::Result Reassembly::drop(Entry& e, FragmentDrop why) {
  release(e);
  return {Kind::Dropped, why};
}

Reassembly::Result Reassembly::add(const uint8_t* ip, uint32_t len, uint64_t now_ns, uint8_t* out, uint32_t out_room,
                                   uint8_t* large_out, uint32_t large_room) {
  FragmentView f;
  FragmentDrop bad;
  if (!parse(ip, len, &f, &bad)) return {Kind::Dropped, bad};
  if (f.family == 4 && f.offset == 0 && !f.more) return {Kind::Dropped, FragmentDrop::Malformed};  // not a fragment
  // Every fragment but the last carries a multiple of 8 bytes (RFC 791, RFC 8200 §4.5).
  if (f.more && (f.len == 0 || f.len % 8 != 0)) return {Kind::Dropped, FragmentDrop::Malformed};
  const uint32_t end = f.offset + f.len;
  if (f.family == 6 && f.offset == 0 && !f.more) {
    // RFC 6946 atomic fragment: the packet alone, without its fragment header.
    const uint32_t n = f.header_len + f.len;
    if (n > out_room) return {Kind::Dropped, FragmentDrop::TooBig};
    const uint8_t next = f.proto;
    std::memmove(out, ip, f.header_len);
    std::memmove(out + f.header_len, f.payload, f.len);
    out[f.nh_off] = next;
    put16(out + 4, static_cast<uint16_t>(n - 40));
    return {Kind::Complete, FragmentDrop::Malformed, n};
  }

  FragmentDrop why = FragmentDrop::Malformed;
  Entry* e = find_or_create(f.family, f.src, f.dst, f.id, f.proto, now_ns, &why);
  if (!e) return {Kind::Dropped, why};
  // RFC 791: 65535 bytes with the header; RFC 8200: a payload length of 65535.
  if (end + (f.family == 4 ? f.header_len : 0) > kMaxDatagram) return drop(*e, FragmentDrop::TooBig);
  if (e->large == kNoLarge && f.header_len + end > limits_.buffer_bytes) {
    if (limits_.large_entries == 0) return drop(*e, FragmentDrop::TooBig);
    if (!make_large(*e)) return drop(*e, FragmentDrop::LargeBusy);
  }
  if (!f.more) {
    bool beyond = false;
    for (uint32_t i = 0; i < e->fragments; ++i) beyond |= e->held[i].end > end;
    if ((e->have_last && e->total != end) || beyond)
      return drop(*e, FragmentDrop::Malformed);  // two different ends, or data beyond this one
  } else if (e->have_last && end > e->total) {
    return drop(*e, FragmentDrop::Malformed);
  }
  uint8_t* payload = e->buffer + kHeaderRoom;
  uint32_t at = 0;  // insertion point: held[] stays sorted by start
  for (uint32_t i = 0; i < e->fragments; ++i) {
    const Fragment& h = e->held[i];
    if (h.start < f.offset || (h.start == f.offset && h.end <= end)) at = i + 1;
    if (h.start == f.offset && h.end == end && f.len == 0) return {Kind::Held};  // empty last fragment again
    if (h.start >= end || f.offset >= h.end) continue;
    const bool same_range = h.start == f.offset && h.end == end;
    if (f.family == 6 && !same_range) return drop(*e, FragmentDrop::Overlap);  // RFC 5722
    const uint32_t lo = std::max(h.start, f.offset), hi = std::min(h.end, end);
    if (std::memcmp(payload + lo, f.payload + (lo - f.offset), hi - lo) != 0) return drop(*e, FragmentDrop::Overlap);
    if (same_range) return {Kind::Held};  // an exact duplicate (same place, same bytes): ignored
  }
  if (e->fragments == (e->large == kNoLarge ? limits_.max_fragments : limits_.large_fragments))
    return drop(*e, FragmentDrop::TooManyFragments);
  std::memcpy(payload + f.offset, f.payload, f.len);
  std::memmove(e->held + at + 1, e->held + at, (e->fragments - at) * sizeof(Fragment));
  e->held[at] = {f.offset, end};
  ++e->fragments;
  if (f.offset == 0) {
    // The first fragment's header becomes the datagram's (RFC 791; RFC 8200
    // §4.5: its unfragmentable part, the last Next Header of which names what
    // the Fragment header named).
    std::memcpy(payload - f.header_len, f.header, f.header_len);
    e->header_len = f.header_len;
    e->have_first = true;
    if (f.family == 6) (payload - f.header_len)[f.nh_off] = f.proto;
  }
  if (!f.more) {
    e->have_last = true;
    e->total = end;
  }
  if (!e->have_first || !e->have_last) return {Kind::Held};
  uint32_t reach = 0;
  for (uint32_t i = 0; i < e->fragments && e->held[i].start <= reach; ++i) reach = std::max(reach, e->held[i].end);
  if (reach < e->total) return {Kind::Held};

  const uint32_t n = e->header_len + e->total;
  const bool large = n > out_room;
  if (large) out = large_out;
  if ((large && (large_out == nullptr || n > large_room)) || n - (f.family == 6 ? 40 : 0) > kMaxDatagram)
    return drop(*e, FragmentDrop::TooBig);
  std::memcpy(out, payload - e->header_len, n);
  if (f.family == 4) {
    put16(out + 2, static_cast<uint16_t>(n));
    put16(out + 6, be16(out + 6) & 0x4000);  // DF stays; no MF, no offset
    wire::set_ipv4_checksum(out);
  } else {
    put16(out + 4, static_cast<uint16_t>(n - 40));
  }
  release(*e);
  return {Kind::Complete, FragmentDrop::Malformed, n, large};
}

uint32_t Reassembly::expire(uint64_t now_ns) {
  if (now_ns < next_expiry_ns_) return 0;
  uint32_t dropped = 0;
  uint64_t next = UINT64_MAX;
  for (uint32_t i = 0; i < limits_.entries; ++i) {
    Entry& e = entries_[i];
    if (!e.used) continue;
    if (e.deadline_ns <= now_ns) {
      release(e);
      ++dropped;
    } else {
      next = std::min(next, e.deadline_ns);
    }
  }
  next_expiry_ns_ = next;
  return dropped;
}

}  // namespace ov2::esp
