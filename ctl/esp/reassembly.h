// Reassembly of outer IPv4/IPv6 fragments before ESP processing (RFC 4303
// §3.4.1: "reassembly is performed prior to IPsec processing"; RFC 791,
// RFC 8200 §4.5).  A peer whose path MTU is smaller than its ESP packets
// (Linux XFRM encapsulates first and fragments the outer packet) or a router
// on the way sends ESP in fragments; this kernel has no ESP, so the worker
// reassembles them itself.
//
// One table per worker thread (no locks), bounded in every dimension and
// allocated once at construction (no allocation per packet):
//  - `entries` datagrams in progress at once; a fragment of a new datagram
//    when all are taken is dropped (TableFull), as Linux drops above
//    ipfrag_high_thresh;
//  - `buffer_bytes` per datagram (header + payload; the worker: one UMEM
//    frame), in a buffer of its own;
//  - `large_entries` buffers of 65535 bytes of payload (+ header room),
//    shared by the table: a datagram that outgrows `buffer_bytes` moves into
//    one (its bytes so far copied once) and gives it back when it completes
//    or is dropped.  None free: the datagram is dropped (LargeBusy); none
//    configured: TooBig.  Above 65535 bytes (RFC 791/8200): TooBig;
//  - `max_fragments` fragments per datagram, `large_fragments` once it is in
//    a large buffer (TooManyFragments);
//  - `timeout_ns` from the first fragment (Linux ipfrag_time: 30 s), after
//    which the datagram is dropped (Timeout, from expire()).
// Overlaps: IPv6 drops the whole datagram on any overlap (RFC 5722, RFC 8200
// §4.5); IPv4 drops it when the overlapping bytes differ (what a receiver
// must not guess about) and keeps identical overlaps.  An exact duplicate
// (same offset, length and bytes) is ignored in both (RFC 8200 §4.5; Linux
// IPFRAG_DUP); the same range with other bytes drops the datagram.  An IPv6 atomic fragment
// (offset 0, M clear, RFC 6946) is processed on its own, without the table.
// IPv6: Hop-by-Hop, Routing and Destination Options headers may come before
// the Fragment header (RFC 8200 §4.1, walked as ov2_wire does: at most
// OV2_MAX_IPV6_EXT_HDRS, esp/ipv6_chain.h); that unfragmentable part is kept
// from the first fragment (§4.5).  A chain that runs past the packet, is
// longer than that, or is more than 256 bytes with the fixed header is
// BadHeaderChain.
#pragma once

#include <cstdint>
#include <memory>

namespace ov2::esp {

enum class FragmentDrop : uint8_t {
  Malformed,         // bad lengths/offsets, conflicting last fragments
  Overlap,           // IPv6 overlap, or IPv4 overlap whose bytes differ: the datagram is dropped
  TooBig,            // above 65535 bytes, or the buffers / output room the caller gave
  LargeBusy,         // bigger than buffer_bytes while every large buffer holds another datagram
  TableFull,         // no free entry for a new datagram
  TooManyFragments,  // more than max_fragments for one datagram
  BadHeaderChain,    // IPv6 extension headers before the Fragment header truncated, too many or too long
};

class Reassembly {
 public:
  struct Limits {
    uint32_t entries = 64;
    uint32_t buffer_bytes = 4096;
    uint32_t max_fragments = 64;
    uint64_t timeout_ns = 30'000'000'000ull;
    uint32_t large_entries = 0;      // datagrams bigger than buffer_bytes in progress at once
    uint32_t large_fragments = 256;  // fragments of one such datagram (64 KiB in 256-byte pieces)
  };
  // Payload a large buffer holds: the most RFC 8200 allows (IPv4: 65535
  // with the header, RFC 791, checked separately).
  static constexpr uint32_t kLargePayload = 65535;
  enum class Kind : uint8_t {
    Held,      // kept, the datagram is not complete yet
    Complete,  // the whole datagram was written to `out`
    Dropped,   // see `why`; the fragment (and, for a datagram-level reason, the datagram) is gone
  };
  struct Result {
    Kind kind;
    FragmentDrop why = FragmentDrop::Malformed;
    uint32_t len = 0;    // Complete: bytes written to out (or large_out)
    bool large = false;  // Complete: the datagram did not fit out_room and went to large_out
  };

  explicit Reassembly(const Limits& limits);
  ~Reassembly();
  Reassembly(const Reassembly&) = delete;
  Reassembly& operator=(const Reassembly&) = delete;

  // True if the IP packet at `ip` (`len` bytes, version from the first
  // nibble) is a fragment: IPv4 MF or offset, or IPv6 whose extension header
  // chain leads to a Fragment header -- or cannot be walked (add() drops it
  // as BadHeaderChain).  Nothing is checked beyond that.
  static bool is_fragment(const uint8_t* ip, uint32_t len);

  // Adds the fragment at `ip` (`len` bytes from its IP header; Ethernet
  // padding after the IP length is ignored).  When it completes its datagram,
  // the datagram is written to `out` (room for `out_room` bytes; `out` may be
  // `ip` itself: the fragment is consumed before `out` is written) or, if it
  // does not fit there, to `large_out` (`large_room` bytes; not the
  // fragment's buffer), its header rebuilt (IPv4: total length, no
  // MF/offset, DF kept, checksum; IPv6: the first fragment's unfragmentable
  // part, the fragment header removed, payload length), and its entry freed.
  // Fitting neither: TooBig.
  Result add(const uint8_t* ip, uint32_t len, uint64_t now_ns, uint8_t* out, uint32_t out_room,
             uint8_t* large_out = nullptr, uint32_t large_room = 0);

  // Drops the datagrams older than the timeout; returns how many (Timeout).
  // Cheap when none is due.
  uint32_t expire(uint64_t now_ns);

  uint32_t in_progress() const { return used_; }
  // Large buffers in use (each by a datagram in progress).
  uint32_t large_in_use() const { return limits_.large_entries - large_free_count_; }
  const Limits& limits() const { return limits_; }

 private:
  struct Entry;
  struct Fragment {
    uint32_t start, end;  // payload bytes [start, end)
  };
  Entry* find_or_create(uint8_t family, const uint8_t* src, const uint8_t* dst, uint32_t id, uint8_t proto,
                        uint64_t now_ns, FragmentDrop* why);
  // Moves `e` into a free large buffer; false if there is none.
  bool make_large(Entry& e);
  void release(Entry& e);
  Result drop(Entry& e, FragmentDrop why);

  Limits limits_;
  std::unique_ptr<Entry[]> entries_;
  std::unique_ptr<uint8_t[]> buffers_;
  std::unique_ptr<Fragment[]> fragments_;
  std::unique_ptr<uint8_t[]> large_buffers_;
  std::unique_ptr<Fragment[]> large_fragment_lists_;
  std::unique_ptr<uint32_t[]> large_free_;  // indices of free large buffers (a stack)
  uint32_t large_free_count_ = 0;
  uint32_t used_ = 0;
  uint64_t next_expiry_ns_ = UINT64_MAX;
};

}  // namespace ov2::esp
