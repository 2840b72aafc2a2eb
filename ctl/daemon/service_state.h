// Keeps the control plane's state in the state file (control/state_store.h)
// and brings it back at start: a ControlPlane listener that saves after every
// change, plus the outbound sequence-number marks (see state_store.h for why).
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

  // Writes the current state.  Logs (does not throw) when the file cannot be written.
  void save();

  // Saves if any outbound SA's next sequence number reached its saved mark.
  void save_if_sequence_passed_mark();

  void on_change(const ChangeEvent& event) override;

 private:
  DaemonState snapshot();
  uint64_t next_seq_of(uint64_t handle) const;

  StateStore* store_;
  ControlPlane& plane_;
  Dataplane* dataplane_;
  std::map<uint64_t, uint64_t> seq_marks_;  // outbound handle -> saved mark
};

}  // namespace ov2
