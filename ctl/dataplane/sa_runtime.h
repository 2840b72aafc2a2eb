// The SA table the AF_XDP workers read: outbound and inbound ESP engine objects
// by offload handle, and inbound lookup by (SPI, family, destination) -- the same
// key ov2_wire uses, because an XSK RX descriptor carries no metadata.
//
// Concurrency: the control thread (the daemon, under its own lock) installs and
// removes; workers read without locks.  Slots are atomic pointers; the inbound
// index (inbound_index.h) is a hash of atomic words changed in place, O(1)
// amortized per install/remove.  Removed objects are retired and freed only once every worker
// has passed a quiescent point (EpochDomain) -- then the ESP objects' destructors
// wipe the keys.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "dataplane/epoch_domain.h"
#include "dataplane/inbound_index.h"
#include "esp/esp.h"
#include "model/sa_spec.h"
#include "ov2_abi.h"

namespace ov2 {

// One installed SA: exactly one of `outbound` / `inbound` is set.
struct SaRuntimeEntry {
  uint64_t handle = 0;
  Direction dir = Direction::Out;
  uint64_t inner_handle = 0;  // bundle: the transport SA carried inside this tunnel SA
  ov2_sa_key key{};           // inbound: (SPI, family, dst) as ov2_wire looks it up
  std::unique_ptr<esp::OutboundSa> outbound;
  std::unique_ptr<esp::InboundSa> inbound;
  // Inbound: the worker that owns the anti-replay window (-1 = not decided
  // yet; the workers set it on first sight, see Worker::owner_of).  An
  // InboundSa is single-threaded and taking a lock per packet is not allowed,
  // so other workers hand its packets to the owner (handoff_ring.h).
  mutable std::atomic<int> rx_owner{-1};
};

// Per-SA counters as seen from the control plane.
struct SaRuntimeCounters {
  uint64_t packets = 0;
  uint64_t bytes = 0;
  std::array<uint64_t, static_cast<size_t>(esp::Reason::Count)> by_reason{};
  uint64_t next_seq = 0;     // outbound: next sequence number to send
  uint64_t highest_seq = 0;  // inbound: top of the replay window
};

// The ov2_wire map key for an inbound SA spec.
ov2_sa_key inbound_key_for(const SaSpec& spec);

class SaRuntime {
 public:
  // `capacity` slots (handle low 24 bits must be below it); `crypto_slots` is the
  // number of worker threads that may encapsulate concurrently on one SA.
  explicit SaRuntime(uint32_t capacity = OV2_MAX_SAS, unsigned crypto_slots = 1);
  ~SaRuntime();
  SaRuntime(const SaRuntime&) = delete;
  SaRuntime& operator=(const SaRuntime&) = delete;

  // --- control side (any thread; serialized internally) ---------------------
  // Builds the ESP object for `spec` (keys scheduled) and publishes it under
  // `handle`.  Throws ov2::Error: InvalidArgument for handle 0 or a slot beyond
  // the capacity, Exists if the slot or the inbound (SPI, dst) is taken, or
  // whatever the ESP engine refuses.
  void install(uint64_t handle, const SaSpec& spec);
  // Unpublishes `handle`; its object is freed (keys wiped) once no worker can
  // use it.  Throws ov2::Error(NotFound).
  void remove(uint64_t handle);
  // UPDATE_SA: new ESN high-order bits.  Throws NotFound / InvalidArgument (not ESN).
  void update_seq_hi(uint64_t handle, uint32_t seq_hi);
  // Counters of one SA.  Throws NotFound.
  SaRuntimeCounters counters(uint64_t handle) const;
  // Outbound handles whose SA asks to be deleted (sequence space or hard
  // lifetime exhausted): the daemon deletes them and their inbound twins.
  std::vector<uint64_t> outbound_delete_requests() const;
  // The (SPI, family, dst) key of inbound SA `handle`; false if it is not an installed inbound SA.
  bool inbound_key_of(uint64_t handle, ov2_sa_key* key) const;
  // Frees retired objects no worker can still see; returns how many remain
  // (and, with `freed`, how many SAs were freed by this call).
  size_t reclaim(size_t* freed = nullptr);
  size_t size() const;
  // True if an SA is installed under `handle`.
  bool contains(uint64_t handle) const;

  // --- packet path (workers; call only between epochs().enter/leave) --------
  // The SA under `handle` if it is installed in that direction, else nullptr.
  esp::OutboundSa* outbound(uint64_t handle) const {
    const SaRuntimeEntry* e = entry(handle);
    return e ? e->outbound.get() : nullptr;
  }
  const SaRuntimeEntry* entry(uint64_t handle) const {
    uint64_t slot = handle & kSlotMask;
    if (slot >= capacity_) return nullptr;
    const SaRuntimeEntry* e = slots_[slot].load(std::memory_order_acquire);
    return (e && e->handle == handle) ? e : nullptr;
  }
  // The inbound SA for (SPI, family, dst), or nullptr.
  const SaRuntimeEntry* find_inbound(const ov2_sa_key& key) const;

  EpochDomain& epochs() { return epochs_; }

  static constexpr uint64_t kSlotMask = 0xffffff;  // handles are (sequence << 24) | slot

 private:
  struct Retired;
  const ov2_sa_key& key_of_slot_locked(uint32_t slot) const;

  const uint32_t capacity_;
  const unsigned crypto_slots_;
  std::unique_ptr<std::atomic<SaRuntimeEntry*>[]> slots_;
  InboundIndex index_;  // written under mu_
  EpochDomain epochs_;

  // The installed entry of `handle`, or nullptr (control side, under mu_).
  SaRuntimeEntry* installed_locked(uint64_t handle) const;

  mutable std::mutex mu_;  // control side only
  // The slots own the installed entries (no map beside them: 48 bytes per
  // SA, issue #6); slots at and above used_slots_ were never used.
  uint32_t used_slots_ = 0;
  size_t installed_count_ = 0;
  std::vector<Retired> retired_;
};

}  // namespace ov2
