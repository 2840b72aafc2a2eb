// Keeps the control plane's state in the state directory
// (control/state_store.h) and brings it back at start: a ControlPlane
// listener that journals every change (made durable by commit(), which the
// control server calls before it sends the answers), plus the outbound
// sequence-number marks and the handle/policy-id reservations (see
// state_store.h for why).
#pragma once

#include <chrono>
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

  // At a clean stop (after the last change): a background snapshot still
  // being written is cancelled when the journals are small enough to end the
  // stop with (StateStore::cancel_compaction; the stop record goes to the new
  // generation, which is then folded into state.journal), else waited for;
  // then, when the journal is not larger than
  // the snapshot (StateStore::journal_can_end_a_stop), journals the sequence
  // marks that traffic passed and a "stop" record with the exact handle and
  // policy-id sequences and makes them durable -- no snapshot is written, the
  // next start replays the journal (and writes its start-up snapshot in the
  // background).  Otherwise, or when the journal cannot be trusted or
  // written, a synchronous save().  Logs (does not throw) on failure.
  void save_at_stop();

  // The start-up snapshot (after restore()): when the loaded files can be
  // continued (StateStore::compact_after_load) it is written in the
  // background -- start-up does not wait for it -- and the outbound SAs' new
  // sequence marks are journaled and made durable at once (before any packet
  // can use a sequence number above the loaded marks); otherwise a
  // synchronous save().  Logs (does not throw) on failure.
  void save_at_start();

  // Makes the journaled changes durable (one write, one fdatasync) and
  // compacts when the journal has grown enough.  Call before answering the
  // requests that made the changes.  Returns "" when they are durable.
  //
  // When the journal cannot be written (disk full, I/O error), it tries a
  // full snapshot instead; when that fails too, nothing of those changes is
  // on disk: it logs an error and returns why (naming the file and the
  // error), and the caller must not answer {"ok":true} for them.  The
  // changes stay in effect in the running daemon; the journal on disk still
  // ends at the last durable change (so a restart restores exactly what was
  // acknowledged), and from then on every commit tries a full snapshot
  // (appending to the journal would leave a gap) and fails the same way until
  // one succeeds -- then everything in memory is durable again.
  std::string commit();

  // Changes seen so far (the control server compares it around a request).
  uint64_t change_count() const { return changes_; }

  // Journals a new mark for every outbound SA whose next sequence number
  // reached its saved mark, and commits.
  void save_if_sequence_passed_mark();

  // Call once a second: when no change came since the last call and the
  // journal is larger than a clean stop may end with, starts a background
  // compaction, so that a later stop does not write a snapshot.
  void compact_when_idle();

  void on_change(const ChangeEvent& event) override;

 private:
  DaemonState snapshot();
  uint64_t next_seq_of(uint64_t handle) const;
  // Strictly above what `handle` sent, rounded so marks are not journaled per packet.
  uint64_t mark_for(uint64_t handle) const;
  // Journals a new mark for every outbound SA whose next sequence number reached its saved mark.
  void journal_passed_marks();
  // The end of a stop without a snapshot: the passed marks and a "stop"
  // record with the exact handle and policy-id sequences, made durable.
  void journal_stop();
  // Journals a new reservation when a sequence passed the journaled one.
  void reserve_sequences();
  // Starts a background compaction (StateStore::start_compaction).
  void compact();
  // save(), returning the error text ("" when it worked).
  std::string try_save();

  StateStore* store_;
  ControlPlane& plane_;
  Dataplane* dataplane_;
  std::map<uint64_t, uint64_t> seq_marks_;  // outbound handle -> saved mark
  uint64_t reserved_sa_sequence_ = 0;       // as journaled / in the snapshot
  uint32_t reserved_policy_id_ = 0;
  uint64_t changes_ = 0;
  uint64_t changes_at_last_idle_check_ = 0;
  bool unsaved_ = false;
  std::chrono::steady_clock::time_point
      next_retry_{};  // changes in memory are not on disk: the next commit must be a full snapshot
};

}  // namespace ov2
