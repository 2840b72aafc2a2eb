#include "dataplane/worker.h"

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/error.h"
#include "esp/esp.h"
#include "esp/ipv6_chain.h"
#include "esp/path_mtu.h"
#include "ov2_abi.h"

namespace ov2 {

const char* worker_counter_name(WorkerCounter c) {
  switch (c) {
    case WorkerCounter::TxPackets:
      return "tx-packets";
    case WorkerCounter::TxEncapsulated:
      return "tx-encapsulated";
    case WorkerCounter::TxBypassed:
      return "tx-bypassed";
    case WorkerCounter::TxUnknownHandle:
      return "tx-unknown-handle";
    case WorkerCounter::TxBadMeta:
      return "tx-bad-meta";
    case WorkerCounter::TxMalformed:
      return "tx-malformed";
    case WorkerCounter::TxEncapFailed:
      return "tx-encap-failed";
    case WorkerCounter::TxNoNeighbour:
      return "tx-no-neighbour";
    case WorkerCounter::TxRingFull:
      return "tx-ring-full";
    case WorkerCounter::TxTooBig:
      return "tx-too-big";
    case WorkerCounter::TxIcmpTooBig:
      return "tx-icmp-too-big";
    case WorkerCounter::TxFragmented:
      return "tx-fragmented";
    case WorkerCounter::RxPackets:
      return "rx-packets";
    case WorkerCounter::RxDecapsulated:
      return "rx-decapsulated";
    case WorkerCounter::RxCryptoFailed:
      return "rx-crypto-failed";
    case WorkerCounter::RxDummy:
      return "rx-dummy";
    case WorkerCounter::RxNotChecked:
      return "rx-not-checked";
    case WorkerCounter::RxNoSa:
      return "rx-no-sa";
    case WorkerCounter::RxForeignQueue:
      return "rx-foreign-queue";
    case WorkerCounter::RxMalformed:
      return "rx-malformed";
    case WorkerCounter::RxRingFull:
      return "rx-ring-full";
    case WorkerCounter::RxHandedOff:
      return "rx-handed-off";
    case WorkerCounter::RxHandoffFull:
      return "rx-handoff-full";
    case WorkerCounter::RxHandoffReceived:
      return "rx-handoff-received";
    case WorkerCounter::RxPolicyMismatch:
      return "rx-policy-mismatch";
    case WorkerCounter::RxFragments:
      return "rx-fragments";
    case WorkerCounter::RxReassembled:
      return "rx-reassembled";
    case WorkerCounter::RxReasmTimeout:
      return "rx-reasm-timeout";
    case WorkerCounter::RxReasmOverlap:
      return "rx-reasm-overlap";
    case WorkerCounter::RxReasmTooBig:
      return "rx-reasm-too-big";
    case WorkerCounter::RxReasmTableFull:
      return "rx-reasm-table-full";
    case WorkerCounter::RxReasmMalformed:
      return "rx-reasm-malformed";
    case WorkerCounter::RxFragmentedForHost:
      return "rx-fragmented-for-host";
    case WorkerCounter::RxReasmPassed:
      return "rx-reasm-passed";
    case WorkerCounter::RxReasmLarge:
      return "rx-reasm-large";
    case WorkerCounter::RxReasmLargeBusy:
      return "rx-reasm-large-busy";
    case WorkerCounter::RxInnerTooBig:
      return "rx-inner-too-big";
    case WorkerCounter::TxHostFragments:
      return "tx-host-fragments";
    case WorkerCounter::TxReassembled:
      return "tx-reassembled";
    case WorkerCounter::TxReasmFailed:
      return "tx-reasm-failed";
    case WorkerCounter::RxReasmBadChain:
      return "rx-reasm-bad-chain";
    case WorkerCounter::Count:
      break;
  }
  return "?";
}

namespace {

// The large buffer: headroom, the Ethernet header (one VLAN tag at most),
// then a datagram of up to 65535 bytes (IPv6: + its 40-byte fixed header).
constexpr uint32_t kLargeHeadroom = 128;  // (both layers of a bundle: at most ~100 bytes in front)
constexpr uint32_t kLargeBytes = 65536 + 256;
static_assert(kLargeHeadroom + ETH_HLEN + 4 + 40 + esp::Reassembly::kLargePayload <= kLargeBytes);
// Where the IP header goes in the frames a packet from the large buffer is
// copied into (the XDP headroom received frames have; the shim frame's
// Ethernet header and shim go in front).
constexpr uint32_t kHostPieceOffset = 256;
static_assert(kHostPieceOffset >= ETH_HLEN + OV2_SHIM_SIZE);

// Each table's datagrams fit one UMEM frame, or with `large` one of its
// large buffers (the receive table always; the transmit table, which
// reassembles what the host cut for ov2's MTU, when transmit_large_ok).
esp::Reassembly::Limits reassembly_limits(const Worker::Config& cfg, bool large) {
  esp::Reassembly::Limits l{cfg.reassembly_entries, cfg.umem.frame_size, cfg.reassembly_fragments,
                            cfg.reassembly_timeout_ns};
  if (large) {
    l.large_entries = cfg.reassembly_large_entries;
    l.large_fragments = cfg.reassembly_large_fragments;
  }
  return l;
}

// Bytes of ov2's MTU a packet for the host may have: ov2's MTU is the wire
// MTU and a veth forwards frames of at most MTU + Ethernet + one VLAN tag,
// of which the shim takes OV2_SHIM_SIZE.
uint32_t host_mtu_of(const Worker::Config& cfg) { return cfg.wire_mtu + 4 - OV2_SHIM_SIZE; }

// IPv4 fragments of at most `mtu` bytes that `bytes` of datagram become at
// most (a 60-byte header in every fragment).
uint32_t fragments_at_most(uint32_t bytes, uint32_t mtu) {
  const uint32_t per = mtu > 60 + 8 ? (mtu - 60) & ~7u : 8;
  return (bytes + per - 1) / per;
}

// The transmit table gets large buffers (a transport SA's datagram up to
// 65535 bytes, protected in the large buffer, then in fragments into frames)
// when those fragments fit a frame after kHostPieceOffset and one transmit
// batch can hold them all.
bool transmit_large_ok(const Worker::Config& cfg) {
  return cfg.wire_mtu + kHostPieceOffset <= cfg.umem.frame_size &&
         fragments_at_most(65535, cfg.wire_mtu) <= std::min(cfg.batch, cfg.rings.tx_size);
}

}  // namespace

Worker::Worker(const Config& cfg, SaRuntime& sas, NeighbourCache& neighbours)
    : cfg_(cfg),
      sas_(sas),
      neighbours_(neighbours),
      icmp_limit_(cfg.icmp_per_second, cfg.icmp_burst),
      rx_reassembly_{
          esp::Reassembly(reassembly_limits(cfg, true)),
          {WorkerCounter::RxFragments, WorkerCounter::RxReassembled, WorkerCounter::RxReasmTimeout,
           WorkerCounter::RxReasmOverlap, WorkerCounter::RxReasmTooBig, WorkerCounter::RxReasmTableFull,
           WorkerCounter::RxReasmMalformed, WorkerCounter::RxReasmBadChain, WorkerCounter::RxReasmLargeBusy}},
      tx_reassembly_{esp::Reassembly(reassembly_limits(cfg, transmit_large_ok(cfg))),
                     {WorkerCounter::TxHostFragments, WorkerCounter::TxReassembled, WorkerCounter::TxReasmFailed,
                      WorkerCounter::TxReasmFailed, WorkerCounter::TxReasmFailed, WorkerCounter::TxReasmFailed,
                      WorkerCounter::TxReasmFailed, WorkerCounter::TxReasmFailed, WorkerCounter::TxReasmFailed}} {
  if (cfg.id >= EpochDomain::kMaxReaders) fail(ErrorCode::InvalidArgument, "too many workers");
  if (cfg.batch == 0 || cfg.batch > 1024) fail(ErrorCode::InvalidArgument, "worker batch must be 1..1024");
  if (cfg.workers == 0 || cfg.workers > OV2_MAX_QUEUES || cfg.id >= cfg.workers)
    fail(ErrorCode::InvalidArgument,
         "worker id must be below the worker count (1.." + std::to_string(OV2_MAX_QUEUES) + ")");
  // A fragment may complete a datagram whose inner packet goes up in
  // fragments: enough ov2-nic slots and frames for the largest one (47 at a
  // 1500-byte wire MTU), within what the rings and the UMEM can ever offer.
  host_pieces_max_ =
      std::max(kMaxHostPieces,
               std::min({fragments_at_most(65535, std::min(host_mtu_of(cfg), cfg.umem.frame_size - kHostPieceOffset)),
                         cfg.rings.tx_size / 2, cfg.umem.frames / 4}));
  host_desc_ = std::make_unique<xdp_desc[]>(host_pieces_max_);
  if (rx_reassembly_.table.limits().large_entries > 0 || tx_reassembly_.table.limits().large_entries > 0)
    large_.reset(new uint8_t[kLargeBytes]);
  if (cfg.workers > 1) {
    // One ring per other worker, allocated now, never on the packet path.  A
    // slot holds the largest frame the wire delivers (MTU + Ethernet + two
    // VLAN tags), not a whole UMEM frame: the headroom is not copied.  A
    // reassembled datagram takes several consecutive slots.
    const uint32_t slot_bytes = std::min(cfg.umem.frame_size, cfg.wire_mtu + ETH_HLEN + 8);
    incoming_.resize(cfg.workers);
    for (uint32_t i = 0; i < cfg.workers; ++i)
      if (i != cfg.id) incoming_[i] = std::make_unique<HandoffRing>(cfg.handoff_slots, slot_bytes);
    wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd_ < 0)
      fail(ErrorCode::Kernel, std::string("cannot create the worker's wake-up eventfd: ") + strerror(errno));
    // Frames the fill rings may not take, so that handed-off packets always find one.
    handoff_reserve_ = std::min(cfg.umem.frames / 4, cfg.batch * 2);
  }
  // And the frames a big inner packet's pieces need (a fragment waits in the
  // wire RX ring until they are free: the fill rings must not hold them all).
  handoff_reserve_ += host_pieces_max_;
  umem_ = std::make_unique<Umem>(cfg.umem);
  wire_ = std::make_unique<XskPort>(*umem_, cfg.wire_ifname, cfg.queue, cfg.rings);
  nic_ = std::make_unique<XskPort>(*umem_, cfg.nic_ifname, cfg.queue, cfg.rings);
  // Give the fill rings their frames before the programs can redirect to us.
  refill(*wire_);
  refill(*nic_);
  wire_->register_in(cfg.wire_xsks_map_fd);
  nic_->register_in(cfg.tx_xsks_map_fd);
}

Worker::~Worker() {
  stop();
  // The sockets leave the xsks maps when they close (the kernel removes them).
  nic_.reset();
  wire_.reset();
  umem_.reset();
  if (wake_fd_ >= 0) close(wake_fd_);
}

void Worker::connect(const std::vector<Worker*>& peers) {
  if (cfg_.workers > 1 && peers.size() != cfg_.workers)
    fail(ErrorCode::InvalidArgument, "worker " + std::to_string(cfg_.id) + " needs all " +
                                         std::to_string(cfg_.workers) + " workers as handoff peers");
  peers_ = peers;
}

void Worker::start() {
  if (thread_.joinable()) return;
  if (cfg_.workers > 1 && peers_.size() != cfg_.workers)
    fail(ErrorCode::InvalidArgument, "worker " + std::to_string(cfg_.id) + " started before connect()");
  stop_.store(false);
  thread_ = std::thread([this] { run(); });
  if (cfg_.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cfg_.cpu, &set);
    int err = pthread_setaffinity_np(thread_.native_handle(), sizeof(set), &set);
    if (err) {
      stop();
      fail(ErrorCode::InvalidArgument, "cannot pin worker " + std::to_string(cfg_.id) + " to CPU " +
                                           std::to_string(cfg_.cpu) + ": " + strerror(err));
    }
  }
}

void Worker::stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

WorkerCounterArray Worker::counters() const {
  WorkerCounterArray out{};
  for (size_t i = 0; i < out.size(); ++i) out[i] = counters_[i].load(std::memory_order_relaxed);
  return out;
}

void Worker::run() {
  // Named for top/perf (15 characters at most).
  pthread_setname_np(pthread_self(), ("ov2-worker" + std::to_string(cfg_.id)).c_str());
  pollfd fds[3] = {{wire_->fd(), POLLIN, 0}, {nic_->fd(), POLLIN, 0}, {wake_fd_, POLLIN, 0}};
  const bool handoff = cfg_.workers > 1;  // one worker: no rings, no eventfd, the loop as before
  EpochDomain& epochs = sas_.epochs();
  while (!stop_.load(std::memory_order_relaxed)) {
    epochs.enter(cfg_.id);
    uint64_t now = esp::monotonic_now_ns();
    for (Reassembler* r : {&rx_reassembly_, &tx_reassembly_})
      if (const uint32_t expired = r->table.expire(now)) count(r->counters.timeout, expired);
    unsigned work = recycle(*wire_) + recycle(*nic_);
    refill(*wire_);
    refill(*nic_);
    work += transmit_path(now);
    work += receive_path(now);
    if (handoff) work += handoff_path(now);
    if (wire_tx_outstanding_) kick(*wire_);
    if (nic_tx_outstanding_) kick(*nic_);
    if (work == 0) {
      epochs.leave(cfg_.id);
      // Copy mode completes TX during the kick; wait briefly if some is still in flight.
      int timeout = (wire_tx_outstanding_ || nic_tx_outstanding_) ? 1 : 50;
      if (!handoff) {
        poll(fds, 2, timeout);
        continue;
      }
      // Announce the sleep, then look at the rings once more: with the
      // producers' fence (wake_handoff_targets) either we see their frame here
      // or they see sleeping_ and signal the eventfd -- no lost wake-up.
      sleeping_.store(true, std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_seq_cst);
      const bool woken = !incoming_pending() && poll(fds, 3, timeout) > 0 && (fds[2].revents & POLLIN);
      sleeping_.store(false, std::memory_order_relaxed);
      if (woken) {
        uint64_t signals;  // reset the eventfd; the frames themselves are in the rings
        if (read(wake_fd_, &signals, sizeof(signals)) < 0) {
          // EAGAIN: nothing left to reset.
        }
      }
    }
  }
  epochs.leave(cfg_.id);
}

unsigned Worker::recycle(XskPort& port) {
  uint32_t idx;
  uint32_t n = xsk_ring_cons__peek(&port.comp, cfg_.batch * 4, &idx);
  for (uint32_t i = 0; i < n; ++i) umem_->release(*xsk_ring_cons__comp_addr(&port.comp, idx + i));
  if (n) xsk_ring_cons__release(&port.comp, n);
  uint32_t& outstanding = (&port == wire_.get()) ? wire_tx_outstanding_ : nic_tx_outstanding_;
  outstanding -= std::min(outstanding, n);
  return n;
}

void Worker::refill(XskPort& port) {
  // Keep half the frames for each fill ring at most; TX reuses received frames.
  // With handoff, leave a reserve for the frames other workers hand us.
  const uint32_t free_frames = umem_->free_frames();
  if (free_frames <= handoff_reserve_) return;
  uint32_t want = std::min<uint32_t>(xsk_prod_nb_free(&port.fill, cfg_.batch * 4), free_frames - handoff_reserve_);
  want = std::min(want, cfg_.batch * 4);
  if (want == 0) return;
  uint32_t idx;
  uint32_t n = xsk_ring_prod__reserve(&port.fill, want, &idx);
  for (uint32_t i = 0; i < n; ++i) {
    uint64_t addr = 0;
    umem_->alloc(&addr);  // cannot fail: want <= free_frames()
    *xsk_ring_prod__fill_addr(&port.fill, idx + i) = addr;
  }
  xsk_ring_prod__submit(&port.fill, n);
}

void Worker::kick(XskPort& port) {
  // Copy mode sends at most the socket's TX budget per sendto (the whole ring
  // on Linux 6.17+, else 32: XskPort), so kick until the kernel has taken what
  // we queued, a few times at most.
  for (int i = 0; i < 8; ++i) {
    const uint32_t queued = *port.tx.producer - __atomic_load_n(port.tx.consumer, __ATOMIC_ACQUIRE);
    if (queued == 0 || !xsk_ring_prod__needs_wakeup(&port.tx)) return;
    if (sendto(port.fd(), nullptr, 0, MSG_DONTWAIT, nullptr, 0) < 0 && errno != EAGAIN && errno != EBUSY &&
        errno != ENOBUFS)
      return;  // a real error shows up in the socket's statistics; the next loop retries
  }
}

int Worker::owner_of(const SaRuntimeEntry& sa) const {
  // Deterministic: slot % workers, fixed by the first worker that looks (any
  // worker computes the same value; the CAS only matters for a bundle's
  // transport SA, which the tunnel SA's owner may already have claimed).
  int owner = sa.rx_owner.load(std::memory_order_acquire);
  if (owner >= 0) return owner;
  const int preferred = static_cast<int>((sa.handle & SaRuntime::kSlotMask) % cfg_.workers);
  if (sa.rx_owner.compare_exchange_strong(owner, preferred, std::memory_order_acq_rel)) return preferred;
  return owner;
}

bool Worker::hand_off(int owner, const uint8_t* data, uint32_t len, uint32_t offset) {
  if (static_cast<uint32_t>(owner) >= peers_.size()) {  // cannot happen: owner_of gives slot % workers
    count(WorkerCounter::RxForeignQueue);
    return false;
  }
  if (!peers_[owner]->incoming_[cfg_.id]->push(data, len, offset)) {
    count(WorkerCounter::RxHandoffFull);
    return false;
  }
  wake_targets_ |= uint64_t{1} << owner;
  count(WorkerCounter::RxHandedOff);
  return true;
}

void Worker::wake_handoff_targets() {
  // Pairs with the fence in run(): our tail stores before the sleeping_ loads.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  uint64_t targets = wake_targets_;
  wake_targets_ = 0;
  while (targets) {
    const int i = __builtin_ctzll(targets);
    targets &= targets - 1;
    Worker& peer = *peers_[i];
    if (!peer.sleeping_.load(std::memory_order_relaxed)) continue;  // busy: it drains without a signal
    const uint64_t one = 1;
    if (write(peer.wake_fd_, &one, sizeof(one)) < 0) {
      // EAGAIN only at a counter of 2^64-2: the peer is signalled already.
    }
  }
}

bool Worker::incoming_pending() const {
  for (const auto& ring : incoming_)
    if (ring && !ring->empty()) return true;
  return false;
}

// ---------------------------------------------------------------------------
// Transmit: ov2-nic -> ESP -> wire

unsigned Worker::transmit_path(uint64_t now_ns) {
  // Take only as many as the wire TX ring has room for: the rest waits in the
  // RX ring (backpressure) instead of being dropped here.  Fragments take
  // more than one slot each: a packet whose fragments do not fit what is
  // left waits for the next round.
  const uint32_t room = xsk_prod_nb_free(&wire_->tx, cfg_.batch);
  uint32_t idx_rx;
  uint32_t n = xsk_ring_cons__peek(&nic_->rx, std::min(cfg_.batch, room), &idx_rx);
  if (n == 0) {
    if (room == 0) count(WorkerCounter::TxRingFull);
    return 0;
  }
  TxSlots slots;
  slots.cap = std::min(room, cfg_.batch);
  xsk_ring_prod__reserve(&wire_->tx, slots.cap, &slots.idx);  // cannot fail: cap <= room
  uint32_t taken = 0;
  for (; taken < n && slots.used < slots.cap; ++taken) {
    const xdp_desc* d = xsk_ring_cons__rx_desc(&nic_->rx, idx_rx + taken);
    uint8_t* data = static_cast<uint8_t*>(xsk_umem__get_data(umem_->area(), d->addr));
    const TxResult r = encapsulate_one(data, d->addr, d->len, now_ns, slots);
    if (r == TxResult::Later) break;
    if (r == TxResult::Dropped) umem_->release(d->addr);
  }
  // Frames not taken stay in the RX ring (their descriptors are not released).
  xsk_ring_cons__cancel(&nic_->rx, n - taken);
  xsk_ring_cons__release(&nic_->rx, taken);
  if (taken) count(WorkerCounter::TxPackets, taken);
  // Give back the TX slots we reserved but did not fill (descriptors are dense).
  wire_->tx.cached_prod -= (slots.cap - slots.used);
  if (slots.used) {
    xsk_ring_prod__submit(&wire_->tx, slots.used);
    wire_tx_outstanding_ += slots.used;
  }
  return taken;
}

Worker::TxResult Worker::encapsulate_one(uint8_t* data, uint64_t addr, uint32_t len, uint64_t now_ns, TxSlots& slots) {
  const uint32_t fs = umem_->frame_size();
  const uint32_t offset = static_cast<uint32_t>(addr & (fs - 1));
  if (offset < OV2_META_SIZE) {
    count(WorkerCounter::TxBadMeta);
    return TxResult::Dropped;
  }
  ov2_meta meta;
  std::memcpy(&meta, data - OV2_META_SIZE, sizeof(meta));
  if (meta.magic != OV2_META_MAGIC || meta.version != OV2_META_VERSION || meta.dir != OV2_META_DIR_TX) {
    count(WorkerCounter::TxBadMeta);
    return TxResult::Dropped;
  }
  if (len < ETH_HLEN + 20 || offset + len > fs) {
    count(WorkerCounter::TxMalformed);
    return TxResult::Dropped;
  }
  esp::Packet p{data + ETH_HLEN, len - ETH_HLEN, offset + ETH_HLEN, fs - offset - len};
  // The Ethernet header we prepend again must fit in front of the result.
  p.headroom -= ETH_HLEN;
  const uint64_t handle = meta.nbl.tx.offload_handle;
  if (handle == 0) return send_on_wire(p, nullptr, nullptr, now_ns, slots) ? TxResult::Sent : TxResult::Dropped;
  esp::OutboundSa* sa = sas_.outbound(handle);
  esp::OutboundSa* tunnel = meta.tunnel_handle ? sas_.outbound(meta.tunnel_handle) : nullptr;
  if (!sa || (meta.tunnel_handle && !tunnel)) {
    count(WorkerCounter::TxUnknownHandle);
    return TxResult::Dropped;
  }
  if (sa->params().mode == Mode::Transport && (p.data[0] >> 4) == 4 && esp::Reassembly::is_fragment(p.data, p.len)) {
    // Transport SAs (alone, or inside a tunnel SA in a bundle) carry whole
    // datagrams (RFC 4301 §7); the host cut this one for ov2's MTU.  Whole again, it is protected and, if too big for
    // the wire, fragmented after ESP.  The slots it may need are checked
    // first: once reassembled, it cannot wait in the RX ring.
    if (slots.cap - slots.used < outer_fragments_at_most()) return TxResult::Later;
    uint8_t* large = tx_reassembly_.table.limits().large_entries > 0 ? large_.get() + kLargeHeadroom : nullptr;
    const esp::Reassembly::Result whole = reassemble(tx_reassembly_, p.data, p.len, p.len + p.tailroom, now_ns, large,
                                                     large ? kLargeBytes - kLargeHeadroom : 0);
    if (whole.kind != esp::Reassembly::Kind::Complete)
      return TxResult::Dropped;  // held (copied) or dropped, counted: the frame is free again
    if (whole.large) {
      // Bigger than the frame: protected in the large buffer, then in
      // fragments into frames, the first into this one (without DF: the
      // host fragmented it; with DF, which no host fragment has, dropped).
      esp::Packet big{large, whole.len, kLargeHeadroom, kLargeBytes - kLargeHeadroom - whole.len};
      if (big.data[6] & 0x40) {
        count(WorkerCounter::TxTooBig);
        return TxResult::Dropped;
      }
      return fragment_after_esp(big, *sa, tunnel, now_ns, slots, &addr);
    }
    p.tailroom = p.len + p.tailroom - whole.len;
    p.len = whole.len;
  }
  // The largest plaintext packet whose ESP fits the wire (a bundle: the
  // transport SA's packet must fit what the tunnel SA can carry).
  const uint32_t fits =
      tunnel ? sa->max_plaintext(tunnel->max_plaintext(cfg_.wire_mtu)) : sa->max_plaintext(cfg_.wire_mtu);
  if (p.len > fits) return too_big(p, *sa, tunnel, fits, now_ns, slots);
  return send_on_wire(p, sa, tunnel, now_ns, slots) ? TxResult::Sent : TxResult::Dropped;
}

bool Worker::send_on_wire(esp::Packet& p, esp::OutboundSa* sa, esp::OutboundSa* tunnel, uint64_t now_ns,
                          TxSlots& slots) {
  if (sa) {
    esp::Reason r = tunnel ? esp::encapsulate_bundle(*sa, *tunnel, p, now_ns) : sa->encapsulate(p, now_ns);
    if (r != esp::Reason::Ok) {
      count(WorkerCounter::TxEncapFailed);
      return false;
    }
  }
  return put_on_wire(p, sa ? WorkerCounter::TxEncapsulated : WorkerCounter::TxBypassed, slots);
}

bool Worker::put_on_wire(esp::Packet& p, WorkerCounter sent, TxSlots& slots) {
  if (p.len > cfg_.wire_mtu) {  // bypass traffic larger than the wire
    count(WorkerCounter::TxTooBig);
    return false;
  }
  const uint8_t version = p.data[0] >> 4;
  uint8_t family;
  const uint8_t* dst;
  if (version == 4 && p.len >= 20) {
    family = 4;
    dst = p.data + 16;
  } else if (version == 6 && p.len >= 40) {
    family = 6;
    dst = p.data + 24;
  } else {
    count(WorkerCounter::TxMalformed);
    return false;
  }
  uint8_t* eth = p.data - ETH_HLEN;
  if (!neighbours_.lookup(family, dst, eth)) {
    neighbours_.request(family, dst);
    count(WorkerCounter::TxNoNeighbour);
    return false;
  }
  std::memcpy(eth + 6, cfg_.wire_mac, 6);
  const uint16_t type = htons(family == 4 ? ETH_P_IP : ETH_P_IPV6);
  std::memcpy(eth + 12, &type, 2);
  xdp_desc* out = xsk_ring_prod__tx_desc(&wire_->tx, slots.idx + slots.used++);
  out->addr = static_cast<uint64_t>(eth - umem_->area());
  out->len = p.len + ETH_HLEN;
  out->options = 0;
  count(sent);
  return true;
}

Worker::TxResult Worker::too_big(esp::Packet& p, esp::OutboundSa& sa, esp::OutboundSa* tunnel, uint32_t fits,
                                 uint64_t now_ns, TxSlots& slots) {
  const uint8_t version = p.data[0] >> 4;
  if (version == 4 && p.len >= 20 && !(p.data[6] & 0x40)) {
    // No DF: fragment, when each fragment can be its own ESP packet (a
    // tunnel SA; transport-mode ESP carries whole datagrams only).
    if (!tunnel && sa.params().mode == Mode::Tunnel) return fragment(p, sa, fits, now_ns, slots);
    // Transport, alone or inside a tunnel SA: the whole datagram is
    // ESP-protected (both layers), then the ESP packet is fragmented (what
    // Linux XFRM does for IPv4 without DF; the peer reassembles before ESP).
    return fragment_after_esp(p, sa, tunnel, now_ns, slots);
  }
  uint32_t mtu = fits;
  if (version == 6 && fits < esp::kIpv6MinMtu) {
    // RFC 8201 §4: a Packet Too Big below 1280 is discarded by the sender;
    // the tunnel cannot carry 1280-byte packets here (it would need outer
    // fragmentation): packets up to 1280 are dropped, bigger ones learn 1280.
    if (p.len <= esp::kIpv6MinMtu) {
      count(WorkerCounter::TxTooBig);
      return TxResult::Dropped;
    }
    mtu = esp::kIpv6MinMtu;
  }
  if (!send_icmp_error(p.data, p.len, std::min<uint32_t>(mtu, 0xffff), now_ns)) {
    count(WorkerCounter::TxTooBig);
    return TxResult::Dropped;
  }
  return TxResult::Sent;
}

Worker::TxResult Worker::fragment(esp::Packet& p, esp::OutboundSa& sa, uint32_t fits, uint64_t now_ns, TxSlots& slots) {
  const uint32_t k = esp::ipv4_fragment_count(p.data, p.len, fits);
  if (k == 0 || k > cfg_.batch || umem_->free_frames() < k - 1) {
    count(WorkerCounter::TxTooBig);
    return TxResult::Dropped;
  }
  if (slots.cap - slots.used < k) return TxResult::Later;
  send_fragments(p, k, fits, &sa, now_ns, slots);
  return send_on_wire(p, &sa, nullptr, now_ns, slots) ? TxResult::Sent : TxResult::Dropped;
}

uint32_t Worker::outer_fragments_at_most() const {
  // The largest datagram the transmit table completes (a frame, ESP overhead
  // included, or 65535 bytes with large buffers) in fragments of the
  // smallest payload a 60-byte IPv4 header leaves.
  if (cfg_.wire_mtu < 60 + 8) return UINT32_MAX;
  const bool large = tx_reassembly_.table.limits().large_entries > 0;
  // (A frame's packet grows by at most 256 bytes: both layers of a bundle.)
  return fragments_at_most(large ? 65535 : umem_->frame_size() + 256, cfg_.wire_mtu);
}

Worker::TxResult Worker::fragment_after_esp(esp::Packet& p, esp::OutboundSa& sa, esp::OutboundSa* tunnel,
                                            uint64_t now_ns, TxSlots& slots, const uint64_t* copy_into) {
  const uint32_t k_max = outer_fragments_at_most();
  if (k_max > cfg_.batch || umem_->free_frames() < k_max) {
    count(WorkerCounter::TxTooBig);
    return TxResult::Dropped;
  }
  if (slots.cap - slots.used < k_max) return TxResult::Later;
  const esp::Reason r = tunnel ? esp::encapsulate_bundle(sa, *tunnel, p, now_ns) : sa.encapsulate(p, now_ns);
  if (r != esp::Reason::Ok) {
    count(WorkerCounter::TxEncapFailed);
    return TxResult::Dropped;
  }
  const uint32_t k = esp::ipv4_fragment_count(p.data, p.len, cfg_.wire_mtu);
  if (k == 0 || k > k_max) {
    count(WorkerCounter::TxTooBig);
    return TxResult::Dropped;
  }
  send_fragments(p, k, cfg_.wire_mtu, nullptr, now_ns, slots, copy_into);
  return put_on_wire(p, WorkerCounter::TxEncapsulated, slots) ? TxResult::Sent : TxResult::Dropped;
}

void Worker::send_fragments(esp::Packet& p, uint32_t k, uint32_t mtu, esp::OutboundSa* sa, uint64_t now_ns,
                            TxSlots& slots, const uint64_t* copy_into) {
  // Fragments 1..k-1 in frames of their own, at the offset the packet has
  // (out of the large buffer: kHostPieceOffset); fragment 0 last, in place
  // (it overwrites the header the others copy) or into *copy_into's frame.
  const uint32_t fs = umem_->frame_size();
  const uint32_t ip_offset = copy_into ? kHostPieceOffset : static_cast<uint32_t>(p.data - umem_->area()) & (fs - 1);
  for (uint32_t i = 1; i < k; ++i) {
    uint64_t frame = 0;
    umem_->alloc(&frame);  // cannot fail: the caller checked free_frames()
    uint8_t* ip = static_cast<uint8_t*>(xsk_umem__get_data(umem_->area(), frame + ip_offset));
    const uint32_t len = esp::ipv4_fragment(p.data, mtu, i, ip);
    esp::Packet f{ip, len, ip_offset - ETH_HLEN, fs - ip_offset - len};
    const bool sent =
        sa ? send_on_wire(f, sa, nullptr, now_ns, slots) : put_on_wire(f, WorkerCounter::TxEncapsulated, slots);
    if (!sent) umem_->release(frame);
  }
  if (copy_into) {
    uint8_t* first = static_cast<uint8_t*>(
        xsk_umem__get_data(umem_->area(), (*copy_into & ~static_cast<uint64_t>(fs - 1)) + ip_offset));
    const uint32_t len = esp::ipv4_fragment(p.data, mtu, 0, first);
    p = esp::Packet{first, len, ip_offset - ETH_HLEN, fs - ip_offset - len};
  } else {
    const uint32_t len = esp::ipv4_fragment(p.data, mtu, 0, p.data);
    p.tailroom += p.len - len;
    p.len = len;
  }
  count(WorkerCounter::TxFragmented);
}

bool Worker::send_icmp_error(uint8_t* ip, uint32_t len, uint32_t mtu, uint64_t now_ns) {
  const bool v6 = (ip[0] >> 4) == 6;
  const uint32_t fs = umem_->frame_size();
  const uint32_t ip_offset = static_cast<uint32_t>(ip - umem_->area()) & (fs - 1);
  const uint32_t prefix = v6 ? esp::kIcmp6ErrorPrefix : esp::kIcmp4ErrorPrefix;
  if (ip_offset < prefix + OV2_SHIM_SIZE + ETH_HLEN) return false;
  const esp::IcmpError e =
      v6 ? esp::icmp6_packet_too_big(ip, len, mtu) : esp::icmp4_frag_needed(ip, len, static_cast<uint16_t>(mtu));
  if (!e || !icmp_limit_.take(now_ns) || xsk_prod_nb_free(&nic_->tx, 1) == 0) return false;
  uint32_t idx = 0;
  xsk_ring_prod__reserve(&nic_->tx, 1, &idx);  // cannot fail: one is free
  // A plain packet from the device itself: SA handle 0, no CryptoDone.
  frame_for_host(e.data, e.len, 0, 0, xsk_ring_prod__tx_desc(&nic_->tx, idx));
  xsk_ring_prod__submit(&nic_->tx, 1);
  ++nic_tx_outstanding_;
  count(WorkerCounter::TxIcmpTooBig);
  return true;
}

void Worker::frame_for_host(uint8_t* ip, uint32_t len, uint64_t sa_handle, uint32_t rx_info, xdp_desc* out,
                            const WireOrigin* wire) const {
  ov2_shim shim{};
  shim.cookie = cfg_.cookie;
  shim.sa_handle = sa_handle;
  shim.rx_info = rx_info;
  shim.inner_proto_be = htons((ip[0] >> 4) == 6 ? ETH_P_IPV6 : ETH_P_IP);
  shim.wire_vlan_tci = wire != nullptr ? wire->vlan_tci : 0;
  std::memcpy(ip - OV2_SHIM_SIZE, &shim, sizeof(shim));
  uint8_t* eth = ip - OV2_SHIM_SIZE - ETH_HLEN;
  if (wire != nullptr) {
    std::memcpy(eth, wire->macs, 12);
  } else {
    std::memcpy(eth, cfg_.host_mac, 6);
    std::memcpy(eth + 6, cfg_.nic_mac, 6);
  }
  const uint16_t shim_type = htons(OV2_SHIM_ETHERTYPE);
  std::memcpy(eth + 12, &shim_type, 2);
  out->addr = static_cast<uint64_t>(eth - umem_->area());
  out->len = len + OV2_SHIM_SIZE + ETH_HLEN;
  out->options = 0;
}

// ---------------------------------------------------------------------------
// Receive: wire -> ESP check -> shim -> ov2-nic

unsigned Worker::receive_path(uint64_t now_ns) {
  // A packet becomes at most kMaxHostPieces frames for ov2-nic (one, unless
  // a reassembled inner packet is fragmented for the host): take packets only
  // while that many slots are left; the rest waits in the RX ring.  A
  // fragment waits for host_pieces_max_ (decapsulate_one: kLater).
  const uint32_t room = xsk_prod_nb_free(&nic_->tx, cfg_.batch);
  uint32_t idx_rx;
  uint32_t n = room < kMaxHostPieces ? 0 : xsk_ring_cons__peek(&wire_->rx, std::min(cfg_.batch, room), &idx_rx);
  if (n == 0) {
    if (room < kMaxHostPieces && xsk_cons_nb_avail(&wire_->rx, 1)) count(WorkerCounter::RxRingFull);
    return 0;
  }
  uint32_t idx_tx = 0;
  xsk_ring_prod__reserve(&nic_->tx, room, &idx_tx);  // cannot fail: room is free
  uint32_t out = 0, taken = 0;
  for (; taken < n && room - out >= kMaxHostPieces; ++taken) {
    const xdp_desc* d = xsk_ring_cons__rx_desc(&wire_->rx, idx_rx + taken);
    uint8_t* data = static_cast<uint8_t*>(xsk_umem__get_data(umem_->area(), d->addr));
    const uint32_t k = decapsulate_one(data, d->addr, d->len, now_ns, host_desc_.get(), room - out, RxSource::Wire);
    if (k == kLater) {
      count(WorkerCounter::RxRingFull);
      break;
    }
    for (uint32_t j = 0; j < k; ++j) *xsk_ring_prod__tx_desc(&nic_->tx, idx_tx + out++) = host_desc_[j];
    if (k == 0) umem_->release(d->addr);  // also a handed-off frame: its bytes are in the owner's ring
  }
  xsk_ring_cons__cancel(&wire_->rx, n - taken);
  xsk_ring_cons__release(&wire_->rx, taken);
  count(WorkerCounter::RxPackets, taken);
  nic_->tx.cached_prod -= (room - out);
  if (out) {
    xsk_ring_prod__submit(&nic_->tx, out);
    nic_tx_outstanding_ += out;
  }
  if (wake_targets_) wake_handoff_targets();
  return taken;
}

unsigned Worker::handoff_path(uint64_t now_ns) {
  // Frames other workers received for SAs we own: into a frame of our UMEM at
  // the offset they had, then exactly the wire RX processing.  A reassembled
  // datagram bigger than a frame goes into the large buffer instead.
  const uint32_t room = xsk_prod_nb_free(&nic_->tx, cfg_.batch);
  if (room < kMaxHostPieces) return 0;  // the frames wait in the rings (backpressure)
  uint32_t idx_tx = 0;
  xsk_ring_prod__reserve(&nic_->tx, room, &idx_tx);  // cannot fail: room is free
  uint32_t taken = 0, out = 0;
  const uint32_t fs = umem_->frame_size();
  const uint32_t rings = static_cast<uint32_t>(incoming_.size());
  for (uint32_t k = 0; k < rings && room - out >= kMaxHostPieces; ++k) {
    HandoffRing* ring = incoming_[(next_incoming_ + k) % rings].get();
    if (!ring) continue;
    while (room - out >= kMaxHostPieces) {
      const HandoffRing::Slot* s = ring->front();
      if (!s) break;
      // Its inner packet may go up in as many pieces as the largest one.
      const bool large = s->offset + s->len > fs;
      if (large && (room - out < host_pieces_max_ || umem_->free_frames() < host_pieces_max_)) {
        k = rings;  // it waits in the ring for ov2-nic slots and frames
        break;
      }
      uint64_t frame;
      if (!umem_->alloc(&frame)) {
        k = rings;  // no free frame until TX completes: the rest waits in the ring
        break;
      }
      uint32_t pieces = 0;
      if (large && large_) {
        // The frame is where the first piece for the host goes.
        const uint32_t len = std::min(s->len, kLargeBytes - kLargeHeadroom);
        std::memcpy(large_.get() + kLargeHeadroom, s->data(), len);
        ring->pop();
        pieces = decapsulate_one(large_.get() + kLargeHeadroom, frame, len, now_ns, host_desc_.get(), room - out,
                                 RxSource::HandoffLarge);
      } else if (large) {  // cannot happen: every worker has the same configuration
        ring->pop();
        count(WorkerCounter::RxMalformed);
      } else {
        // decapsulate_one checks offset + len against the frame.
        const uint32_t offset = s->offset & (fs - 1);
        const uint32_t len = std::min(s->len, fs - offset);
        uint8_t* data = static_cast<uint8_t*>(xsk_umem__get_data(umem_->area(), frame + offset));
        std::memcpy(data, s->data(), len);
        ring->pop();
        pieces = decapsulate_one(data, frame + offset, len, now_ns, host_desc_.get(), room - out, RxSource::Handoff);
      }
      ++taken;
      for (uint32_t j = 0; j < pieces; ++j) *xsk_ring_prod__tx_desc(&nic_->tx, idx_tx + out++) = host_desc_[j];
      if (pieces == 0) umem_->release(frame);
    }
  }
  next_incoming_ = (next_incoming_ + 1) % rings;
  nic_->tx.cached_prod -= (room - out);
  if (out) {
    xsk_ring_prod__submit(&nic_->tx, out);
    nic_tx_outstanding_ += out;
  }
  if (taken) count(WorkerCounter::RxHandoffReceived, taken);
  return taken;
}

esp::Reassembly::Result Worker::reassemble(Reassembler& r, uint8_t* ip, uint32_t len, uint32_t room, uint64_t now_ns,
                                           uint8_t* large, uint32_t large_room) {
  count(r.counters.fragments);
  const esp::Reassembly::Result res = r.table.add(ip, len, now_ns, ip, room, large, large_room);
  if (res.kind == esp::Reassembly::Kind::Complete) {
    count(r.counters.reassembled);
    return res;
  }
  if (res.kind == esp::Reassembly::Kind::Dropped) {
    switch (res.why) {
      case esp::FragmentDrop::Overlap:
        count(r.counters.overlap);
        break;
      case esp::FragmentDrop::TooBig:
        count(r.counters.too_big);
        break;
      case esp::FragmentDrop::LargeBusy:
        count(r.counters.large_busy);
        break;
      case esp::FragmentDrop::TableFull:
        count(r.counters.table_full);
        break;
      case esp::FragmentDrop::Malformed:
      case esp::FragmentDrop::TooManyFragments:
        count(r.counters.malformed);
        break;
      case esp::FragmentDrop::BadHeaderChain:
        count(r.counters.bad_chain);
        break;
    }
  }
  return res;
}

uint32_t Worker::decapsulate_one(uint8_t* data, uint64_t addr, uint32_t len, uint64_t now_ns, xdp_desc* out,
                                 uint32_t out_room, RxSource source) {
  // The buffer the packet is in: its UMEM frame, or the large buffer (then
  // `addr` is the frame its first piece for the host goes into).
  const uint32_t fs = umem_->frame_size();
  bool large = source == RxSource::HandoffLarge;
  uint32_t headroom = large ? kLargeHeadroom : static_cast<uint32_t>(addr & (fs - 1));
  uint32_t capacity = large ? kLargeBytes - kLargeHeadroom : fs - headroom;  // from data to the buffer's end
  if (len < ETH_HLEN || len > capacity) {
    count(WorkerCounter::RxMalformed);
    return 0;
  }
  uint32_t l2 = ETH_HLEN;
  uint16_t type;
  std::memcpy(&type, data + 12, 2);
  if (type == htons(ETH_P_8021Q) && len >= ETH_HLEN + 4) {
    std::memcpy(&type, data + 16, 2);
    l2 += 4;
  }
  uint8_t* ip = data + l2;
  uint32_t ip_len = len - l2;
  const bool reassembled = source == RxSource::Wire && esp::Reassembly::is_fragment(ip, ip_len) &&
                           (type == htons(ETH_P_IP) || type == htons(ETH_P_IPV6));
  if (reassembled) {
    // Whatever it completes finds its ov2-nic slots and frames.
    if (out_room < host_pieces_max_ || umem_->free_frames() < host_pieces_max_) return kLater;
    uint8_t* large_data = large_ ? large_.get() + kLargeHeadroom : nullptr;
    const esp::Reassembly::Result res =
        reassemble(rx_reassembly_, ip, ip_len, capacity - l2, now_ns, large_data ? large_data + l2 : nullptr,
                   large_data ? kLargeBytes - kLargeHeadroom - l2 : 0);
    if (res.kind != esp::Reassembly::Kind::Complete) return 0;  // held (copied) or dropped: the frame is free again
    if (res.large) {
      // Bigger than the frame: in the large buffer, behind a copy of the
      // Ethernet header (a handoff carries the frame from there).
      std::memcpy(large_data, data, l2);
      data = large_data;
      ip = data + l2;
      headroom = kLargeHeadroom;
      capacity = kLargeBytes - kLargeHeadroom;
      large = true;
      count(WorkerCounter::RxReasmLarge);
    }
    ip_len = res.len;
    len = l2 + ip_len;
  }
  // Pieces for the host are copied out of the large buffer, the first into our frame.
  const uint64_t* copy_into = large ? &addr : nullptr;
  ov2_sa_key key{};
  const uint8_t* l4;
  uint8_t proto;
  if (type == htons(ETH_P_IP) && ip_len >= 20) {
    const uint32_t ihl = (ip[0] & 0xf) * 4u;
    if (ihl < 20 || ip_len < ihl + 8) {
      count(WorkerCounter::RxMalformed);
      return 0;
    }
    key.family = OV2_AF_INET;
    std::memcpy(key.daddr, ip + 16, 4);
    proto = ip[9];
    l4 = ip + ihl;
  } else if (type == htons(ETH_P_IPV6) && ip_len >= 48) {
    // ESP behind the extension headers ov2_wire walked (a reassembled
    // datagram keeps the first fragment's unfragmentable part).
    const esp::Ipv6Chain chain = esp::walk_ipv6_chain(ip, std::min(ip_len, 40u + (ip[4] << 8 | ip[5])));
    if (chain.status != esp::Ipv6Chain::Status::Ok || chain.off + 8 > ip_len) {
      count(WorkerCounter::RxMalformed);
      return 0;
    }
    key.family = OV2_AF_INET6;
    std::memcpy(key.daddr, ip + 24, 16);
    proto = chain.next;
    l4 = ip + chain.off;
  } else {
    count(WorkerCounter::RxMalformed);
    return 0;
  }
  if (proto == IPPROTO_UDP) {  // RFC 3948: UDP header, then the SPI
    if (l4 + 12 > ip + ip_len) {
      count(WorkerCounter::RxMalformed);
      return 0;
    }
    std::memcpy(&key.spi_be, l4 + 8, 4);
  } else {
    std::memcpy(&key.spi_be, l4, 4);
  }
  const SaRuntimeEntry* sa = sas_.find_inbound(key);
  const bool not_natt = proto == IPPROTO_UDP && (l4[2] << 8 | l4[3]) != OV2_NATT_PORT;
  if (reassembled && proto == IPPROTO_UDP && (!sa || not_natt)) {
    // A UDP datagram ov2_wire sent for its fragments (inbound_dests) that is
    // not NAT-T ESP with an SA (IKE, say): SA handle 0 and receive word
    // OV2_RX_DELIVER_WIRE; ov2_verdict sends it to the wire's ingress, so it
    // is received as on the wire (through ov2, which has no address, the
    // reverse-path filter would drop it).  The wire frame's MACs go with it
    // (the wire's own MAC as destination makes it PACKET_HOST there), and its
    // 802.1Q tag, which ov2_verdict puts back: the datagram then arrives on
    // the VLAN device its fragments were for.  Copied first: the frame's
    // Ethernet header is overwritten by the shim frame's.
    WireOrigin wire;
    std::memcpy(wire.macs, data, sizeof(wire.macs));
    uint32_t rx_info = OV2_RX_DELIVER_WIRE;
    if (l2 > ETH_HLEN) {
      wire.vlan_tci = static_cast<uint16_t>(data[14] << 8 | data[15]);
      rx_info |= OV2_RX_WIRE_VLAN;
    }
    esp::Packet plain{ip, ip_len, headroom + l2, capacity - len};
    const uint32_t pieces = to_host(plain, 0, rx_info, out, out_room, &wire, copy_into);
    if (pieces) count(WorkerCounter::RxReasmPassed);
    return pieces;
  }
  if (!sa) {
    count(WorkerCounter::RxNoSa);
    return 0;
  }
  const SaRuntimeEntry* inner = nullptr;
  if (sa->inner_handle) {
    inner = sas_.entry(sa->inner_handle);
    if (!inner || !inner->inbound) {
      count(WorkerCounter::RxNoSa);
      return 0;
    }
  }
  if (cfg_.workers > 1) {
    // The replay window is single-threaded: only its owner opens the packet.
    const int me = static_cast<int>(cfg_.id);
    const int owner = owner_of(*sa);
    if (owner != me) {
      // A handed-off frame whose SA changed owner (removed and reinstalled) is
      // not handed on again: no ping-pong between rings.
      if (source != RxSource::Wire) {
        count(WorkerCounter::RxForeignQueue);
        return 0;
      }
      hand_off(owner, data, len, headroom);
      return 0;  // our frame goes back to our UMEM either way
    }
    if (inner) {
      // The tunnel SA's owner opens the transport SA too: it claims it.
      int inner_owner = inner->rx_owner.load(std::memory_order_acquire);
      if (inner_owner < 0 && inner->rx_owner.compare_exchange_strong(inner_owner, me, std::memory_order_acq_rel))
        inner_owner = me;
      if (inner_owner != me) {
        count(WorkerCounter::RxForeignQueue);
        return 0;
      }
    }
  }
  esp::Packet p{ip, ip_len, headroom + l2, capacity - len};
  uint32_t rx_info;
  bool success;
  if (inner) {
    esp::BundleResult r = esp::decapsulate_bundle(*sa->inbound, *inner->inbound, p, now_ns);
    if (!r.ok()) [[unlikely]] {
      // Noted for the layer whose SA counted the failure (a Dummy layer is none).
      auto failed = [](esp::Reason x) { return x != esp::Reason::Ok && x != esp::Reason::DummyPacket; };
      if (failed(r.tunnel.reason)) failure_notes_.note(sa->handle);
      if (r.transport_checked && failed(r.transport.reason)) failure_notes_.note(inner->handle);
    }
    if (!r.tunnel.crypto_done) {
      count(WorkerCounter::RxNotChecked);
      return 0;
    }
    if (r.tunnel.reason == esp::Reason::DummyPacket ||
        (r.transport_checked && r.transport.reason == esp::Reason::DummyPacket)) {
      count(WorkerCounter::RxDummy);
      return 0;
    }
    rx_info = r.rx_info;
    success = r.ok();
  } else {
    esp::InboundSa::Result r = sa->inbound->decapsulate(p, now_ns);
    if (r.reason != esp::Reason::Ok && r.reason != esp::Reason::DummyPacket) [[unlikely]]
      failure_notes_.note(sa->handle);
    if (!r.crypto_done) {
      count(WorkerCounter::RxNotChecked);
      return 0;
    }
    if (r.reason == esp::Reason::DummyPacket) {
      count(WorkerCounter::RxDummy);
      return 0;
    }
    rx_info = esp::rx_info_for(r);
    success = r.reason == esp::Reason::Ok;
  }
  bool policy_mismatch = false;
  if (success && !inbound_policy_allows(sa->handle, p)) {
    // RFC 4301 §5.2: the SA opened it, but the inbound SPD does not allow it
    // on this SA.  Counted on the SA the policies name (a bundle's tunnel SA)
    // and delivered like any other failure after decryption: with CryptoDone
    // and a status, so that ov2_verdict drops it and reports the failure.
    policy_mismatch = true;
    sa->inbound->reclassify(esp::Reason::PolicyMismatch, p.len);
    failure_notes_.note(sa->handle);
    rx_info = ov2_rx_make(ov2_rx_sa_delete_req(rx_info), 1, ov2_rx_next_crypto_done(rx_info),
                          esp::crypto_status_for(esp::Reason::PolicyMismatch, sa->inbound->params().mode));
  }
  const uint32_t pieces = to_host(p, sa->handle, rx_info, out, out_room, nullptr, copy_into);
  if (pieces == 0) return 0;
  count(policy_mismatch ? WorkerCounter::RxPolicyMismatch
        : success       ? WorkerCounter::RxDecapsulated
                        : WorkerCounter::RxCryptoFailed);
  return pieces;
}

uint32_t Worker::to_host(esp::Packet& p, uint64_t sa_handle, uint32_t rx_info, xdp_desc* out, uint32_t out_room,
                         const WireOrigin* wire, const uint64_t* copy_into) {
  constexpr uint32_t kShimFrame = ETH_HLEN + OV2_SHIM_SIZE;
  if ((copy_into == nullptr && p.headroom < kShimFrame) || p.len == 0) {
    count(WorkerCounter::RxMalformed);
    return 0;
  }
  // An unfragmented ESP packet's inner packet always fits ov2 with the shim
  // (host_mtu_of), a reassembled one's may not.  IPv4 without DF goes up in
  // fragments (the host reassembles, each piece carries the same receive
  // word); anything else that big cannot reach the host.  Pieces copied out
  // of the large buffer must also fit a frame at kHostPieceOffset.
  const uint32_t fs = umem_->frame_size();
  const uint32_t mtu = copy_into ? std::min(host_mtu_of(cfg_), fs - kHostPieceOffset) : host_mtu_of(cfg_);
  uint32_t pieces = 1;
  if (p.len > mtu) {
    if ((p.data[0] >> 4) != 4 || (p.data[6] & 0x40)) {  // IPv6, or DF: a router would say "too big" (see README)
      count(WorkerCounter::RxInnerTooBig);
      return 0;
    }
    pieces = esp::ipv4_fragment_count(p.data, p.len, mtu);
    if (pieces == 0 || pieces > std::min(host_pieces_max_, out_room) || umem_->free_frames() < pieces - 1) {
      count(WorkerCounter::RxReasmTooBig);
      return 0;
    }
  }
  const uint32_t ip_offset = copy_into ? kHostPieceOffset : static_cast<uint32_t>(p.data - umem_->area()) & (fs - 1);
  for (uint32_t i = 1; i < pieces; ++i) {
    uint64_t frame = 0;
    umem_->alloc(&frame);  // cannot fail: checked free_frames() above
    uint8_t* ip = static_cast<uint8_t*>(xsk_umem__get_data(umem_->area(), frame + ip_offset));
    frame_for_host(ip, esp::ipv4_fragment(p.data, mtu, i, ip), sa_handle, rx_info, &out[i], wire);
  }
  uint8_t* first = p.data;
  if (copy_into)
    first = static_cast<uint8_t*>(
        xsk_umem__get_data(umem_->area(), (*copy_into & ~static_cast<uint64_t>(fs - 1)) + kHostPieceOffset));
  uint32_t first_len = p.len;
  if (pieces > 1) {
    first_len = esp::ipv4_fragment(p.data, mtu, 0, first);  // last: in place, it overwrites the header
    count(WorkerCounter::RxFragmentedForHost);
  } else if (copy_into) {
    std::memcpy(first, p.data, p.len);
  }
  frame_for_host(first, first_len, sa_handle, rx_info, out, wire);
  return pieces;
}

bool Worker::inbound_policy_allows(uint64_t sa_handle, const esp::Packet& p) const {
  if (cfg_.inbound_policies == nullptr) return true;
  const InboundPolicyTable* t = cfg_.inbound_policies->current();
  if (t == nullptr || !t->names(sa_handle)) return true;  // no inbound policy names the SA: unchecked
  PacketSelector sel;
  return packet_selector_of(p.data, p.len, &sel) && t->check(sa_handle, sel) == InboundVerdict::Accept;
}

}  // namespace ov2
