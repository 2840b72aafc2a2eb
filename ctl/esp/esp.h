// The ESP engine: turns a plaintext IP packet plus an SA into ESP (RFC 4303)
// and back.  No I/O, no allocation, no locks and no logging per packet, so the
// AF_XDP worker, the benchmarks and the offline pcap tool share it and the
// tests can drive it exhaustively.
//
// Threading: an OutboundSa may be shared by several worker threads: give the
// constructor `crypto_slots` >= the number of threads that encapsulate
// concurrently (sequence number and counters are then claimed with atomic
// read-modify-writes).  With `crypto_slots` 1 it belongs to one thread at a
// time, as an InboundSa always does: the per-packet path then uses no locked
// instruction (about 8 per packet otherwise, a tenth of a small packet's
// time).  Counters can be read, and set_seq_hi() called, from any thread.
//
// Time: `now_ns` is CLOCK_MONOTONIC nanoseconds (monotonic_now_ns()).  Lifetime
// in seconds is measured from the SA's creation time (constructor argument).
// Lifetime bytes count the plaintext IP packet (what the SA protects), in both
// directions.
//
// Lifetimes: outbound, the packet that reaches a hard packet/byte count is the
// last one sent and reports hard_expired_now; a packet that would cross the
// hard byte limit, or comes after the hard time, is refused (LifetimeExpired).
// Sequence exhaustion likewise: the last number is sent (hard_expired_now),
// later packets get SeqExhausted; delete_requested() is set in both cases.
// Inbound packets are never refused for lifetime (Windows semantics): after a
// hard limit every checked packet is still delivered, with sa_delete_req set.
// Soft limits report soft_expired_now once.  With several threads sharing an
// OutboundSa a count limit may be overshot by at most (threads - 1) packets.
//
// Wire-format decisions (see esp.cpp for the code):
//  - AEAD (AES-GCM RFC 4106, ChaCha20-Poly1305 RFC 7634) and GMAC (RFC 4543):
//    the 8-byte explicit IV is the 64-bit sequence number, which never repeats
//    under one key; nonce = salt || IV; AAD = SPI || [seq_hi ||] seq_lo.
//  - AES-CBC (RFC 3602): the IV is 16 fresh bytes from RAND_bytes (OpenSSL's
//    per-thread DRBG) for every packet.  HMAC covers SPI..ciphertext, then
//    seq_hi for ESN (RFC 4303 §2.2.1); compared with CRYPTO_memcmp before
//    anything is decrypted.  HMAC runs on precomputed ipad/opad digest states
//    (esp_crypto.cpp says why: OpenSSL 3.0's EVP_MAC re-init allocates).
//  - Padding 1,2,3,... to the cipher block (16 for CBC) or 4 bytes; the
//    receiver checks every pad byte.
//  - Tunnel: outer TTL/hop limit 64, DSCP copied, ECN per RFC 6040 normal mode
//    (inner CE -> outer ECT(0)), DF copied from an inner IPv4 header (set for
//    inner IPv6), IPv4 ID from a per-SA counter, IPv6 flow label 0.  Decap
//    applies the RFC 6040 table (outer CE over Not-ECT inner: EcnDrop).
//  - Transport: ESP after the IPv4 header (options kept) or after the IPv6
//    hop-by-hop/routing/destination-options headers (next-header chain fixed);
//    fragments are Unsupported.  TFC padding after a tunnel's inner packet is
//    accepted and dropped.
//  - NAT-T (RFC 3948): UDP with the SA's ports; checksum 0 over IPv4 (RFC 3948
//    §2.1), computed over IPv6 (RFC 8200 §8.1; the RFC 6935/6936 zero-checksum
//    exception is for tunnel protocols that opt in, which ESP-in-UDP does
//    not).  Inbound, the UDP checksum is not verified (the ICV protects the
//    payload) and a zero non-ESP marker (IKE) is Unsupported.
//  - ESN inference per RFC 4303 Appendix A2.2 with the SA's replay window
//    (64 when anti-replay is off); no A3 re-try with other high bits.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>

#include "model/sa_spec.h"

namespace ov2::esp {

// Why a packet was not (or was) processed.  One counter per value per SA.
enum class Reason : uint8_t {
  Ok,
  Truncated,        // shorter than the headers/IV/ICV it must carry
  BadLength,        // IP/UDP length fields inconsistent with the buffer, or ciphertext not a block multiple
  AuthFailed,       // ICV did not verify
  BadPadding,       // pad bytes are not 1,2,3,... or pad length exceeds the payload
  BadNextHeader,    // next header not allowed for the SA's mode (tunnel: 4/41 only)
  Replayed,         // duplicate, or left of the anti-replay window
  InnerMismatch,    // tunnel: the inner IP header does not parse or its length disagrees
  LifetimeExpired,  // outbound: hard lifetime reached, the SA no longer sends
  SeqExhausted,     // outbound: the sequence number space is used up (never wraps)
  NoSpace,          // not enough headroom/tailroom for the headers/trailer
  Unsupported,      // packet outside what this SA handles (wrong family, IPv4 fragment, not ESP/UDP-ESP)
  WrongSpi,         // inbound: the packet's SPI is not this SA's (a lookup bug upstream)
  DummyPacket,      // inbound: next header 59 (RFC 4303 §2.6): authenticated, to be discarded silently
  EcnDrop,          // inbound tunnel: outer CE over a Not-ECT inner packet (RFC 6040 §4.2: drop)
  PolicyMismatch,   // inbound: opened fine, but the inbound SPD does not allow the inner packet on this SA
                    // (RFC 4301 §5.2; set by the worker's check, InboundSa::reclassify)
  Count
};

// Short stable name ("auth-failed", ...) for counters and logs.
const char* reason_name(Reason r);

// NDIS CryptoStatus (ov2_abi.h enum ov2_crypto_status) for an inbound packet on
// an SA of mode `m`.  The mapping:
//   Ok, DummyPacket                         -> CRYPTO_SUCCESS
//   AuthFailed                              -> CRYPTO_TUNNEL_ESP_AUTH_FAILED (tunnel SA)
//                                              CRYPTO_TRANSPORT_ESP_AUTH_FAILED (transport SA)
//   Truncated, BadLength, BadPadding        -> CRYPTO_INVALID_PACKET_SYNTAX
//   BadNextHeader, InnerMismatch            -> CRYPTO_INVALID_PROTOCOL
//   Replayed, LifetimeExpired, SeqExhausted,
//   NoSpace, Unsupported, WrongSpi, EcnDrop,
//   PolicyMismatch                          -> CRYPTO_GENERIC_ERROR
// Unsupported and WrongSpi are "not checked" (crypto_done_for() is false): per
// NDIS such a packet goes up untouched without offload information.
uint32_t crypto_status_for(Reason r, Mode m);

// True when the engine checked the packet's ESP payload (NDIS CryptoDone).
bool crypto_done_for(Reason r);

// CLOCK_MONOTONIC in nanoseconds (the time base every now_ns argument uses).
uint64_t monotonic_now_ns();

// How many times an OutboundSa of this process has started asking to be
// deleted (OutboundSa::delete_requested() turned true): a reader that sees
// this number change (acquire) sees the SAs' flags, so the daemon looks for
// outbound delete requests only when it changed instead of at every SA on
// every tick.
uint64_t delete_requests_raised();

// A packet in a buffer with room around it.  `data` points at the first byte of
// the IP header.  Encap/decap move `data`/`len` within
// [data-headroom, data+len+tailroom] and adjust headroom/tailroom to match.
// On failure the packet is left unchanged, except that an inbound packet that
// failed after decryption started may have its payload bytes altered.
struct Packet {
  uint8_t* data;
  uint32_t len;
  uint32_t headroom;
  uint32_t tailroom;
};

// Lifetime crossings reported by one call; edge-triggered: each is true for
// exactly one packet of the SA's life.
struct LifetimeEvent {
  bool soft_expired_now = false;
  bool hard_expired_now = false;
};

// One side (soft or hard) of an SA's lifetime as thresholds, computed once at
// creation (UINT64_MAX: no limit): a packet compares three numbers instead of
// testing six limits and dividing its age by 10^9.  The seconds limit becomes
// a deadline on the same clock as `now_ns` (created_ns + seconds * 10^9,
// saturated): the age in whole seconds reaches s exactly when now_ns does.
struct LifetimeThresholds {
  uint64_t packets = UINT64_MAX, bytes = UINT64_MAX, deadline_ns = UINT64_MAX;
  static LifetimeThresholds soft_of(const SaSpec& s, uint64_t created_ns);
  static LifetimeThresholds hard_of(const SaSpec& s, uint64_t created_ns);
  // The earlier of two, limit by limit.
  static LifetimeThresholds first_of(const LifetimeThresholds& a, const LifetimeThresholds& b);
  bool reached(uint64_t packets_done, uint64_t bytes_done, uint64_t now_ns) const {
    return packets_done >= packets || bytes_done >= bytes || now_ns >= deadline_ns;
  }
};

// Per-SA counters.  Relaxed atomics: readable from any thread at any time.
struct SaCounters {
  std::atomic<uint64_t> packets{0};  // packets processed successfully (Reason::Ok)
  std::atomic<uint64_t> bytes{0};    // plaintext IP bytes of those packets
  std::array<std::atomic<uint64_t>, static_cast<size_t>(Reason::Count)> by_reason{};  // every packet, by outcome
  uint64_t count(Reason r) const { return by_reason[static_cast<size_t>(r)].load(std::memory_order_relaxed); }
};

// Bytes ESP adds at most for `spec` (outer headers, ESP header, IV, padding,
// trailer, ICV) -- what headroom+tailroom the caller must leave.
uint32_t max_overhead(const SaSpec& spec);

class CryptoState;  // per-SA prepared OpenSSL contexts (esp_crypto.h)

// What an ESP object keeps of its SaSpec: the fields its packets read and its
// owners ask about.  The rest (addresses, lifetimes, algorithms, keys) is
// turned into the object's layout, thresholds and crypto state at creation;
// the spec itself is the control plane's (a copy per object cost 160 bytes
// of the daemon's memory per SA, issue #6).
struct SaParams {
  uint32_t spi = 0;
  Mode mode = Mode::Tunnel;
  bool esn = false;
  bool udp_encap = false;  // RFC 3948, with these ports
  uint16_t encap_sport = 4500;
  uint16_t encap_dport = 4500;
  static SaParams of(const SaSpec& s) { return {s.spi, s.mode, s.esn, s.udp_encap, s.encap_sport, s.encap_dport}; }
};

class OutboundSa {
 public:
  // Prepares the cipher/MAC contexts (keys scheduled once).  `created_ns` starts
  // the lifetime clock; `crypto_slots` is how many threads may encapsulate at
  // the same time without waiting.  Throws ov2::Error if the spec is not an
  // outbound SA this engine supports or OpenSSL refuses the key.
  explicit OutboundSa(const SaSpec& spec, uint64_t created_ns = monotonic_now_ns(), unsigned crypto_slots = 1);
  ~OutboundSa();  // wipes keys and contexts
  OutboundSa(const OutboundSa&) = delete;
  OutboundSa& operator=(const OutboundSa&) = delete;

  // Turns the plaintext IP packet in `p` into ESP (tunnel: new outer header;
  // transport: ESP after the IP header and its extension headers; UDP
  // encapsulation if the SA has it).  Returns Ok or why it did not; counts.
  Reason encapsulate(Packet& p, uint64_t now_ns, LifetimeEvent* ev = nullptr);

  // Path MTU (RFC 4301 §8): the largest plaintext IP packet whose ESP --
  // outer header (tunnel), UDP (NAT-T), ESP header, IV, padding to this SA's
  // alignment, pad length/next header, ICV -- is at most `mtu` bytes; 0 if
  // none is.  Tunnel mode: exact (one byte more does not fit).  Transport
  // mode: the packet's own header length shifts the padding, so this assumes
  // the worst alignment (at most block-1 bytes below the exact value).
  uint32_t max_plaintext(uint32_t mtu) const;

  // The SA asks to be deleted (hard lifetime reached or sequence space
  // exhausted): the worker raises SaDeleteReq for it.
  bool delete_requested() const { return delete_requested_.load(std::memory_order_relaxed); }

  // Sequence number the next packet will carry (64-bit; high half = ESN high bits).
  uint64_t next_seq() const;
  // UPDATE_SA: sets the ESN high-order 32 bits, keeping the low 32 bits.  Only
  // for ESN SAs (returns false otherwise, nothing changed).  Any thread: an
  // SA of one thread takes the change before its next packet.
  bool set_seq_hi(uint32_t seq_hi);
  // Test/restore hook: the next sequence number to send (>= 1).
  void set_next_seq(uint64_t seq) {
    pending_seq_hi_.store(0, std::memory_order_relaxed);
    next_seq_.store(seq, std::memory_order_relaxed);
  }

  const SaCounters& counters() const { return counters_; }
  const SaParams& params() const { return params_; }

 private:
  // The private helpers of the packet path are inlined into encapsulate()
  // and decapsulate() (esp.cpp): a call each cost a tenth of the engine's
  // own work on a small packet.
  Reason encapsulate_impl(Packet& p, uint64_t now_ns, LifetimeEvent* ev);
  bool quiet_for(uint32_t plain_len, uint64_t now_ns) const;
  bool check_hard_lifetime(uint32_t plain_len, uint64_t now_ns, LifetimeEvent* ev);
  void account(uint32_t plain_len, uint64_t now_ns, LifetimeEvent* ev, bool quiet);
  void fire_hard(LifetimeEvent* ev, bool lifetime_reached);
  void raise_delete_request();  // sets delete_requested_; the first time, counts it (delete_requests_raised)
  bool claim_seq(uint64_t& seq);  // false: the sequence space is used up

  SaParams params_;
  LifetimeThresholds soft_, hard_;
  LifetimeThresholds quiet_;  // the earlier of the two, limit by limit (quiet_for)
  const bool shared_;  // crypto_slots > 1: several threads encapsulate at once
  std::unique_ptr<CryptoState> crypto_;
  // The SA's packet layout, fixed at creation so that a packet does not
  // derive it again from spec_ and crypto_.
  bool tunnel_ = false, sa_v6_ = false;
  uint8_t carrier_ = 0;    // protocol after the IP header(s): ESP, or UDP (NAT-T)
  uint32_t iv_len_ = 0, icv_len_ = 0;
  uint32_t block_mask_ = 3;  // padding alignment - 1
  uint32_t insert_ = 0;      // outer header (tunnel), UDP, ESP header and IV: bytes in front of the payload
  // Tunnel: the outer IP header with its per-packet fields (TOS/traffic
  // class, length, IPv4 ID, DF, checksum) zero, and for IPv4 the checksum
  // sum of the rest, to which a packet adds its four fields.
  std::array<uint8_t, 40> outer_{};
  uint32_t outer_sum_ = 0;
  std::atomic<uint64_t> next_seq_{1};
  // set_seq_hi() for an SA of one thread: kPendingSeqHi | seq_hi, applied by
  // that thread (a concurrent read-modify-write of next_seq_ would race).
  std::atomic<uint64_t> pending_seq_hi_{0};
  std::atomic<uint32_t> ipv4_id_{0};
  uint64_t last_seq_ = UINT32_MAX;  // the last sequence number the SA may send (UINT64_MAX with ESN)
  // Lifetime packets and bytes are counters_.packets and .bytes (every
  // packet sent counts, and only those).
  std::atomic<bool> soft_fired_{false};
  std::atomic<bool> hard_fired_{false};        // the hard event was reported (once)
  std::atomic<bool> lifetime_over_{false};     // a hard lifetime limit was reached: stop sending
  std::atomic<bool> delete_requested_{false};
  SaCounters counters_;
};

class InboundSa {
 public:
  struct Result {
    Reason reason = Reason::Ok;
    uint32_t crypto_status = 0;  // NDIS CryptoStatus (crypto_status_for(reason, mode))
    bool crypto_done = false;    // NDIS CryptoDone: the ESP payload was checked
    bool sa_delete_req = false;  // NDIS SaDeleteReq: hard lifetime reached; delete this SA and its outbound twin
    uint8_t next_header = 0;     // ESP trailer next header (valid once authenticated)
    uint64_t seq = 0;            // full (ESN-inferred) sequence number (valid once parsed)
  };

  // Prepares contexts; `created_ns` starts the lifetime clock.  Throws
  // ov2::Error if the spec is not an inbound SA this engine supports.
  explicit InboundSa(const SaSpec& spec, uint64_t created_ns = monotonic_now_ns());
  ~InboundSa();
  InboundSa(const InboundSa&) = delete;
  InboundSa& operator=(const InboundSa&) = delete;

  // Checks and opens ESP: the input starts at the outer IP header (IP|ESP, or
  // IP|UDP|ESP when the SA has udp_encap).  Order: parse and bound-check,
  // SPI, replay check (no state change), authenticate+decrypt, padding and
  // next header, inner packet, then replay window update and lifetimes.
  // On Ok/DummyPacket the packet is the inner IP packet (tunnel) or the
  // restored IP header + payload (transport).  After hard expiry packets are
  // still checked and delivered, with sa_delete_req set.
  Result decapsulate(Packet& p, uint64_t now_ns, LifetimeEvent* ev = nullptr);

  // ESN: highest authenticated sequence number (64-bit), 0 before the first.
  uint64_t highest_seq() const;
  // UPDATE_SA: sets the ESN high-order 32 bits of the window top (keeping the
  // low half and the bitmap).  Only for ESN SAs (returns false otherwise).
  // Any thread: the SA's thread takes the change before its next packet.
  bool set_seq_hi(uint32_t seq_hi);
  // Test/restore hook: sets the window top (everything below it counts unseen).
  void set_highest_seq(uint64_t seq);
  uint32_t replay_window() const { return window_size_; }

  const SaCounters& counters() const { return counters_; }
  const SaParams& params() const { return params_; }

  // A packet decapsulate() returned Ok for (plaintext `plain_len` bytes) was
  // refused afterwards for `r` (PolicyMismatch): moves it from the Ok
  // counters to `r`.  The replay window and lifetimes keep it (the ESP
  // processing did happen).  Same single-thread rule as decapsulate().
  void reclassify(Reason r, uint32_t plain_len);

 private:
  Reason decapsulate_impl(Packet& p, uint64_t now_ns, LifetimeEvent* ev, Result& res);
  bool infer_seq(uint32_t seq_lo, uint64_t& seq) const;
  bool replay_check(uint64_t seq) const;
  void replay_update(uint64_t seq);
  void replay_update_other(uint64_t seq);  // replay_update() off the in-order path
  void account(uint32_t plain_len, uint64_t now_ns, LifetimeEvent* ev);

  SaParams params_;
  LifetimeThresholds soft_, hard_, first_;  // first_: the earlier of the two, limit by limit
  std::unique_ptr<CryptoState> crypto_;
  // The SA's packet layout, fixed at creation (see OutboundSa).
  bool tunnel_ = false, sa_v6_ = false;
  uint8_t carrier_ = 0;       // protocol after the outer IP header(s): ESP, or UDP (NAT-T)
  uint32_t iv_len_ = 0, icv_len_ = 0;
  uint32_t cbc_mask_ = 0;     // AES-CBC: block - 1 (the ciphertext is whole blocks); 0 otherwise
  uint32_t window_size_;            // bits; 0 = anti-replay disabled
  uint64_t top_ = 0;                // highest authenticated seq (64-bit)
  std::atomic<uint64_t> pending_seq_hi_{0};  // set_seq_hi() from another thread (OutboundSa's)
  uint64_t bitmap_bits_ = 64;       // power of two >= window_size_
  // Ring: bit (seq & (bitmap_bits_-1)) = seen.  For a window of up to 64
  // (the default) the word inline_bitmap_ (a heap block of one word cost 32
  // bytes per SA), else an array new[]ed here and deleted by the destructor.
  uint64_t* bitmap_ = nullptr;
  uint64_t inline_bitmap_ = 0;
  uint64_t life_packets_ = 0;
  uint64_t life_bytes_ = 0;
  bool soft_fired_ = false;
  bool hard_fired_ = false;
  SaCounters counters_;
};

// ---- Receive word (DESIGN.md §1) and bundles ------------------------------

// The NDIS receive word for a packet that went through one SA.
uint32_t rx_info_for(const InboundSa::Result& r);

// Transport SA inside a tunnel SA (SaSpec::inner_handle).  Outbound: transport
// encapsulation, then tunnel encapsulation.  Returns the first failure.  On a
// tunnel failure the packet is left transport-encapsulated (the transport
// sequence number is spent).
Reason encapsulate_bundle(OutboundSa& transport, OutboundSa& tunnel, Packet& p, uint64_t now_ns);

struct BundleResult {
  InboundSa::Result tunnel;     // outer layer
  InboundSa::Result transport;  // inner layer (reason Unsupported if not reached)
  bool transport_checked = false;
  uint32_t rx_info = 0;  // CryptoDone if a layer was checked, NextCryptoDone if both,
                         // CryptoStatus of the failing layer (TUNNEL_* / TRANSPORT_*),
                         // SaDeleteReq if either SA asks for it
  bool ok() const { return tunnel.reason == Reason::Ok && transport.reason == Reason::Ok; }
};

// Inbound bundle: tunnel decapsulation, then (if that succeeded) transport
// decapsulation of the inner packet.  On success `p` is the transport payload
// with its restored IP header.
BundleResult decapsulate_bundle(InboundSa& tunnel, InboundSa& transport, Packet& p, uint64_t now_ns);

}  // namespace ov2::esp
