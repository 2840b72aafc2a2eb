// The SA database (SAD): every SA the daemon installed, by handle, with the
// rules of NDIS ADD_SA / DELETE_SA / UPDATE_SA on top of one Engine.
//
// Handles: (sequence << 24) | slot.  The sequence grows with every ADD_SA
// and is never reset while the daemon runs, so a handle is never reused even
// when its slot is; the slot lets the packet path index a per-slot array.
//
// Bundles (transport inside tunnel, NDIS "transport over tunnel"): a
// tunnel-mode SA names with `inner_handle` an existing transport-mode SA of
// the same direction (the inner addresses and family may differ from the
// outer ones).  The inner SA belongs to at most one bundle and cannot use UDP
// encapsulation (UDP-ESP goes on the tunnel SA).  An inner SA cannot be
// deleted while its tunnel SA exists, unless both are deleted in one request;
// deleting the tunnel SA leaves the inner SA as a plain transport SA.
#pragma once

#include <cstdint>
#include <map>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "dataplane/sa_runtime.h"
#include "engine/engine.h"
#include "model/sa_spec.h"

namespace ov2 {

// Handles are (sequence << kHandleSlotBits) | slot: the slot finds the SA in
// O(1) in the workers' per-slot array (SaRuntime), the full handle tells a
// reused slot apart.
inline constexpr unsigned kHandleSlotBits = 24;
inline constexpr uint64_t kHandleSlotMask = (uint64_t{1} << kHandleSlotBits) - 1;
static_assert(kHandleSlotMask == SaRuntime::kSlotMask, "the database and the workers' table agree on handles");
inline uint32_t handle_slot(uint64_t handle) { return static_cast<uint32_t>(handle & kHandleSlotMask); }

struct SaRecord {
  uint64_t handle = 0;
  SaSpec spec;
  uint64_t bundled_in = 0;  // handle of the tunnel SA carrying this one; 0 if none
};

class SaDatabase {
 public:
  // `engine` must outlive the database.  `capacity` bounds the number of SAs.
  SaDatabase(Engine& engine, uint32_t capacity);

  // ADD_SA: validates (validate_sa, duplicates, bundle shape, capacity),
  // installs into the engine, and only then records the SA.  Returns the new
  // non-zero handle.  Throws ov2::Error; on throw nothing changed.
  uint64_t add(SaSpec spec);

  // Throws ov2::Error unless every handle exists and the set may be deleted
  // together (bundle rule above).  Changes nothing.
  void check_removable(const std::vector<uint64_t>& handles) const;

  // DELETE_SA of a list: check_removable, then delete all (tunnel SAs before
  // their inner SAs).  All-or-nothing.
  void remove(const std::vector<uint64_t>& handles);

  // UPDATE_SA: new ESN high-order sequence number.  Unknown handle or an SA
  // without ESN: ov2::Error(InvalidArgument) (NDIS_STATUS_INVALID_PARAMETER).
  void update_seq_hi(uint64_t handle, uint32_t seq_hi);

  // Restart recovery: installs `spec` under the saved `handle` (same checks
  // as add(); the handle's slot must be free) and makes sure later handles
  // use a higher sequence, so no handle is ever reused across restarts.
  // Throws ov2::Error; on throw nothing changed.
  void restore(uint64_t handle, SaSpec spec);
  // Raises the sequence the next add() uses to at least `sequence` (restart
  // recovery: the saved sequence).  Never lowers it.
  void raise_next_sequence(uint64_t sequence);
  // The sequence the next add() uses (saved so handles survive restarts).
  uint64_t next_sequence() const { return next_sequence_; }

  // The record for a handle, or nullptr.  Valid until the next change.
  const SaRecord* find(uint64_t handle) const;
  // All records in handle order.  Pointers valid until the next change.
  std::vector<const SaRecord*> list() const;
  // Calls f(const SaRecord&) for every record in handle order (no vector built).
  template <class F>
  void for_each(F&& f) const {
    for (const auto& entry : records_) f(entry.second);
  }
  size_t size() const { return records_.size(); }
  uint32_t capacity() const { return capacity_; }

 private:
  using LookupKey = std::tuple<uint32_t, IpAddr, Direction>;  // (SPI, dst, dir)
  static LookupKey lookup_key(const SaSpec& sa) { return {sa.spi, sa.dst, sa.dir}; }
  static uint64_t lookup_hash(const SaSpec& sa);  // of lookup_key(sa)
  // The handle of the SA with the lookup key of `sa`, or 0.
  uint64_t find_by_lookup_key(const SaSpec& sa, uint64_t hash) const;
  void check_bundle(const SaSpec& spec) const;
  void check_addable(const SaSpec& spec, uint64_t hash) const;
  uint32_t take_slot();
  // Takes `slot` specifically (restore); false if it is in use.
  bool take_given_slot(uint32_t slot);
  void record(uint64_t handle, SaSpec spec, uint64_t hash);

  Engine& engine_;
  uint32_t capacity_;
  uint64_t next_sequence_ = 1;
  uint32_t next_fresh_slot_ = 0;
  std::vector<uint32_t> free_slots_;
  std::map<uint64_t, SaRecord> records_;
  // The duplicate check's index: lookup_hash -> handle, a collision told
  // apart by the records.  A 32-byte node per SA and its bucket, where a
  // std::map of the whole key took 80 bytes (issue #6).
  struct PrehashedKey {
    size_t operator()(uint64_t hash) const noexcept { return hash; }
  };
  std::unordered_multimap<uint64_t, uint64_t, PrehashedKey> by_lookup_hash_;
};

}  // namespace ov2
