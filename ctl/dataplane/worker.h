// One AF_XDP crypto worker: one thread, one queue, one UMEM shared by two
// sockets -- on the wire and on the worker end of the offload device (ov2-nic).
//
//   transmit: ov2-nic RX -> struct ov2_meta before the frame -> outbound SA by
//             handle -> ESP encapsulation in place -> Ethernet to the next hop
//             -> wire TX (same frame, no copy).  Handle 0 (BYPASS): in clear.
//             Too big for the wire after ESP (esp/path_mtu.h): IPv4 without
//             DF through a tunnel SA is fragmented first (more frames from
//             the UMEM, each fragment its own ESP packet); anything else is
//             answered with an ICMP/ICMPv6 "too big" error, built in the
//             frame and sent back up through ov2-nic TX as a plain packet
//             (shim with SA handle 0 and no CryptoDone: ov2_verdict lets it
//             in as the device's own), rate limited by a token bucket.
//   receive:  wire RX -> inbound SA by (SPI, dst) -> decapsulation in place ->
//             Ethernet|ov2_shim|inner IP -> ov2-nic TX -> ov2_deliver/ov2_verdict
//             on the host end take the verdict.  Outer fragments of ESP are
//             copied into the reassembly table (esp/reassembly.h) and their
//             frames recycled; the fragment that completes a datagram gets
//             the whole datagram written into its frame, which then goes the
//             same way as any ESP packet (replay, ICV, policy, CryptoDone).
//             A datagram bigger than a frame (up to 65535 bytes) is written
//             into the worker's large buffer instead, opened there, and its
//             inner packet copied into frames for ov2-nic (in IPv4 fragments
//             when it is bigger than ov2 takes).
//   handoff:  several queues: an inbound SA's anti-replay window belongs to one
//             worker (owner_of); another worker that receives its ESP copies
//             the frame into the owner's HandoffRing for it and recycles its
//             own frame; the owner drains its rings like its wire RX ring.
//             A reassembled datagram takes as many consecutive slots as it
//             needs; one bigger than a frame goes into the owner's large buffer.
//
// The packet path never allocates, locks, logs or throws; counters are this
// thread's own relaxed atomics, summed by whoever reads them.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/failure_notes.h"
#include "dataplane/handoff_ring.h"
#include "dataplane/inbound_policy.h"
#include "dataplane/neighbour.h"
#include "dataplane/sa_runtime.h"
#include "dataplane/token_bucket.h"
#include "dataplane/umem.h"
#include "dataplane/xsk_port.h"
#include "esp/reassembly.h"

namespace ov2 {

enum class WorkerCounter : uint32_t {
  TxPackets,          // frames received from ov2-nic
  TxEncapsulated,     // sent on the wire as ESP (counted once handed to the wire TX ring)
  TxBypassed,         // handle 0: sent on the wire in clear
  TxUnknownHandle,    // handle not installed (NDIS: the send fails)
  TxBadMeta,          // no valid ov2_meta in front of the frame
  TxMalformed,        // too short / not IP
  TxEncapFailed,      // the ESP engine refused (lifetime, sequence space, room...)
  TxNoNeighbour,      // next-hop MAC not resolved yet: dropped, resolution asked
  TxRingFull,         // loops that found the wire TX ring full (backpressure; nothing dropped here)
  TxTooBig,           // larger than the wire MTU after ESP and neither fragmented nor answered with an
                      // ICMP error (rate limit, no room, transport mode without DF, ...): dropped
  TxIcmpTooBig,       // ICMP fragmentation needed / ICMPv6 Packet Too Big sent to the host for a
                      // packet that would not fit the wire after ESP (esp/path_mtu.h)
  TxFragmented,       // IPv4 packets without DF fragmented: before ESP through a tunnel SA, after
                      // ESP through a transport SA (each fragment counted in tx-encapsulated)
  RxPackets,          // frames received from the wire
  RxDecapsulated,     // authenticated and opened: delivered with CryptoDone+SUCCESS
  RxCryptoFailed,     // checked and failed: delivered with CryptoDone+status (host drops)
  RxDummy,            // next header 59: authenticated, discarded
  RxNotChecked,       // the engine could not check it (unsupported): dropped
  RxNoSa,             // (SPI, dst) not in the worker's table (raced a delete)
  RxForeignQueue,     // the SA belongs to another worker and cannot be handed to it (a bundle whose
                      // transport SA another worker owns, or a handed-off frame whose SA changed owner): dropped
  RxMalformed,        // too short / not IP / no room for the shim
  RxRingFull,         // loops that found the ov2-nic TX ring full, or a fragment waiting for the slots
                      // and frames its datagram's inner packet may need (backpressure)
  RxHandedOff,        // copied into the owning worker's handoff ring (counted on the receiving worker)
  RxHandoffFull,      // the owner's handoff ring was full (or the datagram longer than half of it): dropped
  RxHandoffReceived,  // taken from this worker's handoff rings and processed like wire RX
  RxPolicyMismatch,   // opened fine, but the inbound SPD does not allow the inner packet on its SA
                      // (inbound_policy.h): delivered with CryptoDone+GENERIC_ERROR (host drops)
  // Outer fragments of ESP (esp/reassembly.h), reassembled before ESP:
  RxFragments,          // fragments received from the wire (each also in rx-packets)
  RxReassembled,        // datagrams completed and passed on to ESP processing
  RxReasmTimeout,       // datagrams dropped incomplete after the timeout
  RxReasmOverlap,       // datagrams dropped for overlapping fragments (IPv6 any, IPv4 differing bytes)
  RxReasmTooBig,        // above 65535 bytes, or no frames/ov2-nic slots left for an inner packet's pieces
  RxReasmTableFull,     // fragments of a new datagram dropped: all entries in use
  RxReasmMalformed,     // bad offsets/lengths, conflicting ends, too many fragments
  RxFragmentedForHost,  // reassembled IPv4 whose inner packet exceeds what ov2 takes: sent up in fragments
  RxReasmPassed,        // reassembled UDP that is not NAT-T ESP with an SA (IKE...): to the wire's ingress
  RxReasmLarge,         // datagrams reassembled bigger than a UMEM frame, into the large buffer (each also
                        // in rx-reassembled)
  RxReasmLargeBusy,     // datagrams bigger than a UMEM frame dropped: every large reassembly buffer was
                        // holding another one (reassembly_large_entries)
  RxInnerTooBig,        // packets to the host bigger than ov2 takes that may not be fragmented (IPv6, IPv4
                        // with DF), after reassembly: dropped
  // Transport SAs carry whole datagrams: IPv4 fragments from the host are reassembled first.
  TxHostFragments,  // fragments from the host for a transport SA
  TxReassembled,    // datagrams reassembled from them (then encapsulated, fragmented after ESP if big)
  TxReasmFailed,    // host datagrams dropped: timeout, overlap, too big, table full, malformed
  // IPv6 fragments whose extension headers before the Fragment header run past
  // the packet, number more than OV2_MAX_IPV6_EXT_HDRS or exceed 256 bytes.
  RxReasmBadChain,
  Count
};

// Stable short name ("tx-encapsulated", ...) for counter listings.
const char* worker_counter_name(WorkerCounter c);

using WorkerCounterArray = std::array<uint64_t, static_cast<size_t>(WorkerCounter::Count)>;

class Worker {
 public:
  struct Config {
    unsigned id = 0;      // EpochDomain reader id (unique per worker, < OV2_MAX_QUEUES)
    uint32_t queue = 0;   // queue index on both interfaces (= xsks map key)
    int cpu = -1;         // pin the thread to this CPU; -1: no pinning
    uint32_t batch = 64;  // descriptors per ring operation
    std::string wire_ifname;
    std::string nic_ifname;
    uint8_t wire_mac[6]{};     // source MAC of everything we send on the wire
    uint8_t host_mac[6]{};     // ov2 (destination of shim frames)
    uint8_t nic_mac[6]{};      // ov2-nic (source of shim frames)
    uint64_t cookie = 0;       // BpfPrograms::cookie()
    uint32_t wire_mtu = 1500;  // IP bytes the wire takes per packet
    Umem::Config umem;
    XskPort::Config rings;
    int wire_xsks_map_fd = -1;
    int tx_xsks_map_fd = -1;
    uint32_t workers = 1;           // workers in the data plane (ids 0..workers-1); 1: no handoff at all
    uint32_t handoff_slots = 2048;  // entries of each incoming handoff ring (power of two)
    // The inbound SPD decrypted packets are checked against (RFC 4301 §5.2);
    // nullptr: no check.  Read under the SaRuntime's epochs; must outlive the worker.
    const InboundPolicies* inbound_policies = nullptr;
    // ICMP too-big errors this worker sends at most: a token bucket of
    // icmp_per_second with icmp_burst saved up (Linux's global ICMP limit
    // defaults, net.ipv4.icmp_msgs_per_sec/icmp_msgs_burst: 1000 and 50).
    uint32_t icmp_per_second = 1000;
    uint32_t icmp_burst = 50;
    // Outer fragment reassembly (esp/reassembly.h): datagrams in progress at
    // once, fragments per datagram, and how long an incomplete one is kept
    // (Linux ipfrag_time: 30 s).  Of those, reassembly_large_entries may be
    // bigger than a UMEM frame (64 KiB buffers, allocated at start; pages
    // become resident as big datagrams use them), with up to
    // reassembly_large_fragments fragments.  The same for the host's
    // fragments of transport SA datagrams (a second table).
    uint32_t reassembly_entries = 64;
    uint32_t reassembly_fragments = 64;
    uint64_t reassembly_timeout_ns = 30'000'000'000ull;
    uint32_t reassembly_large_entries = 8;
    uint32_t reassembly_large_fragments = 256;
  };

  // Creates the UMEM and both sockets and registers them in the xsks maps (no
  // thread yet).  Throws ov2::Error.  `sas` and `neighbours` must outlive it.
  Worker(const Config& cfg, SaRuntime& sas, NeighbourCache& neighbours);
  ~Worker();  // stops the thread, closes the sockets
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Several workers: gives this worker every worker (indexed by id, itself
  // included) so that it can hand frames to their rings.  Call on all workers
  // before any start(); the peers must outlive this worker's thread.
  void connect(const std::vector<Worker*>& peers);

  void start();
  void stop();

  // This worker's counters (any thread; relaxed reads).
  WorkerCounterArray counters() const;
  // SAs that counted a failed inbound packet (any reason but Ok/DummyPacket,
  // policy mismatches included) since the last call: FailureNotes::take.
  // The daemon thread only.
  bool take_failed_sas(std::vector<uint64_t>& out) { return failure_notes_.take(out); }
  // The kernel's counters of the two sockets (any thread).
  XskPort::Stats wire_socket_stats() const { return wire_->stats(); }
  XskPort::Stats nic_socket_stats() const { return nic_->stats(); }

 private:
  void run();
  unsigned recycle(XskPort& port);
  void refill(XskPort& port);
  unsigned transmit_path(uint64_t now_ns);
  unsigned receive_path(uint64_t now_ns);
  unsigned handoff_path(uint64_t now_ns);
  // Wire TX descriptors reserved for one transmit batch.
  struct TxSlots {
    uint32_t idx = 0;   // first reserved slot
    uint32_t used = 0;  // descriptors written
    uint32_t cap = 0;   // slots reserved
  };
  enum class TxResult {
    Sent,     // the frame belongs to a TX ring now (wire, or ov2-nic for an ICMP error)
    Dropped,  // counted; the caller releases the frame
    Later,    // not enough wire TX slots for its fragments: leave it in the RX ring
  };
  TxResult encapsulate_one(uint8_t* data, uint64_t addr, uint32_t len, uint64_t now_ns, TxSlots& slots);
  // Encapsulates `p` (IP header at p.data, frame offset headroom + Ethernet),
  // adds the Ethernet header and writes the next wire TX descriptor.
  bool send_on_wire(esp::Packet& p, esp::OutboundSa* sa, esp::OutboundSa* tunnel, uint64_t now_ns, TxSlots& slots);
  TxResult too_big(esp::Packet& p, esp::OutboundSa& sa, esp::OutboundSa* tunnel, uint32_t fits, uint64_t now_ns,
                   TxSlots& slots);
  TxResult fragment(esp::Packet& p, esp::OutboundSa& sa, uint32_t fits, uint64_t now_ns, TxSlots& slots);
  // Transport SA (inside `tunnel` if a bundle), IPv4 without DF: ESP over the
  // whole datagram, then the ESP packet in fragments of at most the wire MTU.
  // `copy_into`: p is in the large buffer; fragment 0 goes into the frame at
  // *copy_into.
  TxResult fragment_after_esp(esp::Packet& p, esp::OutboundSa& sa, esp::OutboundSa* tunnel, uint64_t now_ns,
                              TxSlots& slots, const uint64_t* copy_into = nullptr);
  // Fragments 1..k-1 of `p` (at most `mtu` bytes each) to the wire in frames
  // from the free list, each ESP-encapsulated with `sa` first if it is given;
  // `p` becomes fragment 0 (in place, or in *copy_into's frame), for the
  // caller to send.  Counts tx-fragmented.
  void send_fragments(esp::Packet& p, uint32_t k, uint32_t mtu, esp::OutboundSa* sa, uint64_t now_ns, TxSlots& slots,
                      const uint64_t* copy_into = nullptr);
  // Wire TX slots (and free frames) a transport packet's outer fragments may need.
  uint32_t outer_fragments_at_most() const;
  // Ethernet header to the next hop and the next wire TX descriptor; counts `sent`.
  bool put_on_wire(esp::Packet& p, WorkerCounter sent, TxSlots& slots);
  bool send_icmp_error(uint8_t* ip, uint32_t len, uint32_t mtu, uint64_t now_ns);
  // What a datagram sent back to the wire's ingress (OV2_RX_DELIVER_WIRE)
  // keeps of the wire frame it came in.
  struct WireOrigin {
    uint8_t macs[12];       // destination, source
    uint16_t vlan_tci = 0;  // its 802.1Q tag's TCI, with OV2_RX_WIRE_VLAN in the receive word
  };
  // Ethernet | ov2_shim in front of the IP packet at `ip` (the caller checked
  // the room): the frame ov2_deliver expects on the host end.  `wire`, when
  // set, gives the MACs (in place of host/nic MACs) and the shim's wire_vlan_tci.
  void frame_for_host(uint8_t* ip, uint32_t len, uint64_t sa_handle, uint32_t rx_info, xdp_desc* out,
                      const WireOrigin* wire = nullptr) const;
  // Frames for ov2-nic an unfragmented received packet may become (see
  // decapsulate_one); a fragment needs host_pieces_max_.
  static constexpr uint32_t kMaxHostPieces = 8;
  // decapsulate_one: a fragment that must wait in its ring (fewer than
  // host_pieces_max_ ov2-nic slots or free frames left for what it may complete).
  static constexpr uint32_t kLater = UINT32_MAX;
  // Where decapsulate_one's packet comes from.
  enum class RxSource : uint8_t {
    Wire,          // a frame from the wire RX ring (fragments are reassembled)
    Handoff,       // a frame another worker handed over, copied into a frame of ours
    HandoffLarge,  // one bigger than a frame, copied into large_ (`addr`: a free frame of ours)
  };
  // Opens one received frame; writes the frames for ov2-nic into out[0..n)
  // (n <= out_room; more than one only for a reassembled inner IPv4 packet
  // too big for ov2, sent up in fragments) and returns n; 0: the frame at
  // `addr` is the caller's to release (dropped, held for reassembly or handed
  // off); kLater: nothing was done, the frame stays in its ring.
  uint32_t decapsulate_one(uint8_t* data, uint64_t addr, uint32_t len, uint64_t now_ns, xdp_desc* out,
                           uint32_t out_room, RxSource source);
  // The IP packet `p` to the host end: shim frames into out[0..n), in
  // fragments if it is IPv4 too big for ov2 (n <= out_room); returns n, 0 if
  // it cannot go.  `wire`: see frame_for_host.  `copy_into`: p is not in the
  // UMEM (the large buffer); every piece is copied into a frame, the first
  // into the frame at *copy_into.
  uint32_t to_host(esp::Packet& p, uint64_t sa_handle, uint32_t rx_info, xdp_desc* out, uint32_t out_room,
                   const WireOrigin* wire, const uint64_t* copy_into);
  // A reassembly table and the counters it feeds.
  struct Reassembler {
    esp::Reassembly table;
    struct {
      WorkerCounter fragments, reassembled, timeout, overlap, too_big, table_full, malformed, bad_chain, large_busy;
    } counters;
  };
  // The fragment at `ip` (its frame ends `room` bytes later) into `r`'s
  // table.  When this fragment completes its datagram, the datagram is at
  // `ip` in the same frame, or at `large` (room for `large_room` bytes) if
  // it does not fit the frame (res.large).  Held or dropped: counted, and the
  // frame is free again either way.
  esp::Reassembly::Result reassemble(Reassembler& r, uint8_t* ip, uint32_t len, uint32_t room, uint64_t now_ns,
                                     uint8_t* large = nullptr, uint32_t large_room = 0);
  bool inbound_policy_allows(uint64_t sa_handle, const esp::Packet& p) const;
  void kick(XskPort& port);
  int owner_of(const SaRuntimeEntry& sa) const;
  // `data` (`len` bytes, `offset` bytes into its buffer) into the owner's ring.
  bool hand_off(int owner, const uint8_t* data, uint32_t len, uint32_t offset);
  void wake_handoff_targets();
  bool incoming_pending() const;
  void count(WorkerCounter c, uint64_t n = 1) {
    auto& a = counters_[static_cast<size_t>(c)];
    a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }

  Config cfg_;
  SaRuntime& sas_;
  NeighbourCache& neighbours_;
  std::unique_ptr<Umem> umem_;
  std::unique_ptr<XskPort> wire_;
  std::unique_ptr<XskPort> nic_;
  uint32_t wire_tx_outstanding_ = 0;
  uint32_t nic_tx_outstanding_ = 0;
  std::array<std::atomic<uint64_t>, static_cast<size_t>(WorkerCounter::Count)> counters_{};
  FailureNotes failure_notes_;  // written on the failure path only
  std::atomic<bool> stop_{false};
  std::thread thread_;
  TokenBucket icmp_limit_;
  Reassembler rx_reassembly_;  // outer fragments of ESP from the wire
  Reassembler tx_reassembly_;  // the host's IPv4 fragments for transport SAs
  // A datagram bigger than a frame: reassembled (or copied from a handoff
  // ring) into large_ at kLargeHeadroom with its Ethernet header, opened
  // there, then copied into frames.  One packet at a time, synchronously.
  std::unique_ptr<uint8_t[]> large_;
  // ov2-nic frames the largest inner packet (65535 bytes) becomes, capped by
  // the rings and the UMEM; and the per-packet descriptor scratch that big.
  uint32_t host_pieces_max_ = kMaxHostPieces;
  std::unique_ptr<xdp_desc[]> host_desc_;

  // Handoff (workers > 1 only).  incoming_[i]: the ring worker i pushes into
  // (nullptr for i == id).  peers_[i]: worker i, whose incoming_[id] we push
  // into.  wake_fd_: signalled by a producer only if this worker sleeps in poll.
  std::vector<std::unique_ptr<HandoffRing>> incoming_;
  std::vector<Worker*> peers_;
  int wake_fd_ = -1;
  alignas(64) std::atomic<bool> sleeping_{false};
  uint64_t wake_targets_ = 0;     // bit i: pushed to worker i in this batch (OV2_MAX_QUEUES <= 64)
  uint32_t next_incoming_ = 0;    // round robin over incoming rings
  uint32_t handoff_reserve_ = 0;  // frames refill() leaves for handed-off packets and big inner packets
};

}  // namespace ov2
