// Keeps the control plane's state in the state directory
// (control/state_store.h) and brings it back at start: a ControlPlane
// listener that journals every change (made durable by commit(), which the
// control server calls before it sends the answers), plus the outbound
// sequence-number marks and the handle/policy-id reservations (see
// state_store.h for why).
#pragma once

#include <map>
#include <string>

#include "control/control_plane.h"
#include "control/state_store.h"
#include "dataplane/dataplane.h"

namespace ov2 {

class ServiceState : public ControlPlane::Listener {
 public:
  // `store` (null: nothing is kept), `plane` and `dataplane` (null: no wire)
  // must outlive this object.
  ServiceState(StateStore* store, ControlPlane& plane, Dataplane* dataplane);

  // Restores the saved SAs (same handles, outbound sequence numbers continued
  // past the saved mark) and policies (same ids).  A bad file, or one that
  // cannot be applied, is logged with its name and the problem, moved aside
  // to state.json.bad-<time>, and the control plane stays empty.  Never throws
  // for the file's sake.
  void restore();

  // Writes the current state as a new snapshot (compaction).  Logs (does not
  // throw) when the file cannot be written.
  void save();

  // Makes the journaled changes durable (one write, one fdatasync) and
  // compacts when the journal has grown enough.  Call before answering the
  // requests that made the changes.  Logs (does not throw) on failure, after
  // trying a full save() instead.
  void commit();

  // Journals a new mark for every outbound SA whose next sequence number
  // reached its saved mark, and commits.
  void save_if_sequence_passed_mark();

  void on_change(const ChangeEvent& event) override;

 private:
  DaemonState snapshot();
  uint64_t next_seq_of(uint64_t handle) const;
  // Strictly above what `handle` sent, rounded so marks are not journaled per packet.
  uint64_t mark_for(uint64_t handle) const;
  // Journals a new reservation when a sequence passed the journaled one.
  void reserve_sequences();

  StateStore* store_;
  ControlPlane& plane_;
  Dataplane* dataplane_;
  std::map<uint64_t, uint64_t> seq_marks_;  // outbound handle -> saved mark
  uint64_t reserved_sa_sequence_ = 0;       // as journaled / in the snapshot
  uint32_t reserved_policy_id_ = 0;
};

}  // namespace ov2
