#include "daemon/service_state.h"

#include "common/error.h"
#include "common/stopwatch.h"
#include "control/log.h"
#include "model/sa_json.h"

namespace ov2 {

ServiceState::ServiceState(StateStore* store, ControlPlane& plane, Dataplane* dataplane)
    : store_(store), plane_(plane), dataplane_(dataplane) {}

uint64_t ServiceState::next_seq_of(uint64_t handle) const {
  if (dataplane_ == nullptr) return 0;
  try {
    return dataplane_->sa_counters(handle).next_seq;
  } catch (const Error&) {
    return 0;
  }
}

uint64_t ServiceState::mark_for(uint64_t handle) const {
  const uint64_t next = next_seq_of(handle);
  uint64_t mark = next == 0 ? 0 : (next / kSeqMarkStep + 1) * kSeqMarkStep;
  if (auto it = seq_marks_.find(handle); it != seq_marks_.end()) mark = std::max(mark, it->second);
  return mark;
}

DaemonState ServiceState::snapshot() {
  DaemonState s;
  s.next_sa_sequence = plane_.sas().next_sequence();
  s.next_policy_id = plane_.spd().next_id();
  std::map<uint64_t, uint64_t> marks;
  const std::vector<const SaRecord*> records = plane_.sas().list();
  s.sas.reserve(records.size());  // no reallocation moves of 200 000 specs (page faults and munmaps)
  for (const SaRecord* r : records) {
    SavedSa sa{r->handle, r->spec, 0};
    if (r->spec.dir == Direction::Out) {
      const uint64_t mark = mark_for(r->handle);
      sa.seq_mark = mark;
      marks[r->handle] = mark;
    }
    s.sas.push_back(std::move(sa));
  }
  seq_marks_ = std::move(marks);
  for (const PolicyRecord* p : plane_.spd().list()) s.policies.push_back(*p);
  return s;
}

std::string ServiceState::try_save() {
  try {
    DaemonState s = snapshot();
    const uint64_t next_sa = s.next_sa_sequence;
    const uint32_t next_policy = s.next_policy_id;
    store_->save(std::move(s));
    reserved_sa_sequence_ = next_sa;
    reserved_policy_id_ = next_policy;
    unsaved_ = false;
    return {};
  } catch (const Error& e) {
    // The journal may now continue a snapshot that is not there (or be stale): no appending until a save works.
    unsaved_ = true;
    return e.what();
  }
}

void ServiceState::compact() {
  try {
    const auto t0 = std::chrono::steady_clock::now();
    DaemonState s = snapshot();  // a copy, on this thread (cheap); serialized and written in the background
    const uint64_t next_sa = s.next_sa_sequence;
    const uint32_t next_policy = s.next_policy_id;
    const size_t count = s.sas.size();
    store_->start_compaction(std::move(s));
    const auto us =
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
    log(LogLevel::Debug, "compaction: " + std::to_string(count) + " SAs copied in " + std::to_string(us / 1000) +
                             " ms on the control thread; the snapshot is written in the background");
    reserved_sa_sequence_ = next_sa;
    reserved_policy_id_ = next_policy;
  } catch (const Error& e) {
    unsaved_ = true;
    log(LogLevel::Error,
        std::string("cannot compact the state journal: ") + e.what() + "; the next change writes a full snapshot");
  }
}

void ServiceState::save_at_start() {
  if (store_ == nullptr) return;
  const Stopwatch watch;
  try {
    DaemonState s = snapshot();  // a copy, on this thread; serialized and written in the background
    const uint64_t next_sa = s.next_sa_sequence;
    const uint32_t next_policy = s.next_policy_id;
    const size_t count = s.sas.size();
    std::vector<std::pair<uint64_t, uint64_t>> marks;
    for (const SavedSa& sa : s.sas)
      if (sa.spec.dir == Direction::Out && sa.seq_mark != 0) marks.emplace_back(sa.handle, sa.seq_mark);
    const bool background = store_->compact_after_load(std::move(s));
    reserved_sa_sequence_ = next_sa;
    reserved_policy_id_ = next_policy;
    unsaved_ = false;
    if (!background) {
      log(LogLevel::Debug, "state saved (" + std::to_string(count) + " SAs) in " + watch.text());
      return;
    }
    // Until the new snapshot is in place, a crash restores the loaded files plus the new journal
    // generation: the marks past this run's first sequence numbers must be in it before any packet goes.
    for (const auto& [handle, mark] : marks) store_->append_seq_mark(handle, mark);
    store_->commit();
    log(LogLevel::Debug, "start-up snapshot of " + std::to_string(count) + " SAs is written in the background; " +
                             std::to_string(marks.size()) + " sequence marks journaled; " + watch.text() +
                             " on the control thread");
  } catch (const Error& e) {
    unsaved_ = true;
    log(LogLevel::Error, std::string("cannot save the state (SAs and policies will not survive a restart): ") +
                             e.what() + "; the next change writes a full snapshot");
  }
}

std::string ServiceState::commit() {
  if (store_ == nullptr) return {};
  try {
    store_->finish_compaction(false);  // a background snapshot that is done (cheap otherwise); also when idle
  } catch (const Error& e) {
    log(LogLevel::Error, std::string(e.what()) + "; the next compaction writes a full snapshot");
  }
  if (!store_->has_pending() && (!unsaved_ || std::chrono::steady_clock::now() < next_retry_)) return {};
  std::string journal_error;
  if (!unsaved_) {
    try {
      store_->commit();
      // The changes are durable now; a failed compaction only makes the next commit a full snapshot.
      if (store_->needs_compaction()) compact();
      return {};
    } catch (const Error& e) {
      journal_error = e.what();
      log(LogLevel::Error, journal_error + "; writing a full snapshot instead");
    }
  }
  const std::string save_error = try_save();
  if (save_error.empty()) {
    if (journal_error.empty()) log(LogLevel::Info, "the state is saved again (" + store_->path() + ")");
    return {};
  }
  next_retry_ = std::chrono::steady_clock::now() + std::chrono::seconds(5);  // without new changes
  std::string why =
      (journal_error.empty() ? "" : journal_error + "; then ") + save_error +
      ": the change is in effect in the running daemon but NOT saved: a restart would lose it (" + store_->path() +
      " and " + store_->journal_path() +
      " hold what was acknowledged before); every further change retries a full snapshot and is answered "
      "'not-saved' until one succeeds: free space in the state directory";
  log(LogLevel::Error, "state not saved: " + why);
  return why;
}

void ServiceState::journal_passed_marks() {
  for (auto& [handle, mark] : seq_marks_) {
    const uint64_t next = next_seq_of(handle);
    if (next != 0 && next >= mark) {
      mark = mark_for(handle);
      store_->append_seq_mark(handle, mark);
    }
  }
}

void ServiceState::journal_stop() {
  journal_passed_marks();
  store_->append_stop(plane_.sas().next_sequence(), plane_.spd().next_id());
  store_->commit();
}

void ServiceState::save_if_sequence_passed_mark() {
  if (store_ == nullptr) return;
  journal_passed_marks();
  commit();
}

void ServiceState::compact_when_idle() {
  if (store_ == nullptr) return;
  const bool idle = changes_ == changes_at_last_idle_check_;
  changes_at_last_idle_check_ = changes_;
  if (!idle || unsaved_ || store_->compaction_running() || store_->has_pending() ||
      !store_->journal_too_large_for_a_stop())
    return;
  log(LogLevel::Debug, "idle with " + std::to_string(store_->journal_bytes()) +
                           " bytes of journal: compacting in the background, so that a stop need not");
  compact();
}

void ServiceState::save_at_stop() {
  if (store_ == nullptr) return;
  const Stopwatch watch;
  if (!unsaved_) {
    try {
      // A background snapshot still being written (the start-up one, typically) is cancelled rather
      // than waited for when the journals are small enough to end a stop with: the old snapshot, its
      // journal and the new generation are durable and hold everything (StateStore::cancel_compaction).
      if (store_->cancel_compaction()) {
        journal_stop();
        std::string folded = "folded into one journal";
        try {
          store_->fold_next_journal();
        } catch (const Error& e) {
          folded = std::string("not folded (") + e.what() + "): the next start replays both and saves synchronously";
        }
        log(LogLevel::Info, "state kept in " + store_->path() +
                                " and its journals (no snapshot needed at stop: "
                                "the background snapshot was cancelled, its journal generation " +
                                folded + ") in " + watch.text());
        return;
      }
      store_->finish_compaction(true);  // a background snapshot still being written, too large a journal to cancel it
      if (store_->journal_can_end_a_stop()) {
        journal_stop();
        log(LogLevel::Info, "state kept in " + store_->path() + " and " + store_->journal_path() + " (" +
                                std::to_string(store_->journal_bytes()) +
                                " bytes of journal, no snapshot needed at stop) in " + watch.text());
        return;
      }
    } catch (const Error& e) {
      log(LogLevel::Warn, std::string(e.what()) + "; writing a full snapshot at stop instead");
    }
  }
  const std::string error = try_save();
  if (!error.empty())
    log(LogLevel::Error, "cannot save the state (SAs and policies will not survive a restart): " + error);
  else
    log(LogLevel::Info, "state saved to " + store_->path() + " at stop (snapshot) in " + watch.text());
}

void ServiceState::reserve_sequences() {
  const uint64_t next_sa = plane_.sas().next_sequence();
  const uint32_t next_policy = plane_.spd().next_id();
  if (next_sa <= reserved_sa_sequence_ && next_policy <= reserved_policy_id_) return;
  if (next_sa > reserved_sa_sequence_) reserved_sa_sequence_ = next_sa + kSequenceReserve;
  if (next_policy > reserved_policy_id_)
    reserved_policy_id_ =
        static_cast<uint32_t>(std::min<uint64_t>(uint64_t{next_policy} + kSequenceReserve, UINT32_MAX));
  store_->append_sequences(reserved_sa_sequence_, reserved_policy_id_);
}

void ServiceState::on_change(const ChangeEvent& event) {
  ++changes_;
  if (store_ == nullptr) return;
  // The reservation goes first: a journal cut after the SA record still restores a consistent state.
  reserve_sequences();
  switch (event.kind) {
    case ChangeKind::SaAdded:
    case ChangeKind::SaUpdated: {
      const SaRecord* r = plane_.sas().find(event.sa_handle);
      if (r == nullptr) return;
      SavedSa sa{r->handle, r->spec, 0};
      if (r->spec.dir == Direction::Out) {
        sa.seq_mark = mark_for(r->handle);
        seq_marks_[r->handle] = sa.seq_mark;
      }
      store_->append_sa(sa);
      break;
    }
    case ChangeKind::SaDeleted:
      seq_marks_.erase(event.sa_handle);
      store_->append_sa_deleted(event.sa_handle);
      break;
    case ChangeKind::PolicyAdded:
    case ChangeKind::PolicyUpdated:
      if (const PolicyRecord* p = plane_.spd().find(event.policy_id)) store_->append_policy(*p);
      break;
    case ChangeKind::PolicyDeleted:
      store_->append_policy_deleted(event.policy_id);
      break;
  }
}

void ServiceState::restore() {
  if (store_ == nullptr) return;
  std::optional<DaemonState> saved;
  StateStore::LoadReport report;
  try {
    saved = store_->load(&report);
  } catch (const Error& e) {
    std::string aside;
    try {
      aside = "; moved aside to " + store_->move_aside();
    } catch (const Error& m) {
      aside = std::string("; ") + m.what();
    }
    log(LogLevel::Error, std::string("refusing the saved state: ") + e.what() + aside + "; starting empty");
    return;
  }
  if (!report.warning.empty()) log(LogLevel::Warn, report.warning);
  if (!saved) {
    log(LogLevel::Info, "no saved state in " + store_->path() + "; starting empty");
    return;
  }
  const Stopwatch install_watch;
  const size_t sa_count = saved->sas.size();
  std::vector<SaRecord> sas;
  sas.reserve(sa_count);
  std::map<uint64_t, uint64_t> seqs;
  for (SavedSa& sa : saved->sas) {
    if (sa.spec.dir == Direction::Out && sa.seq_mark != 0)
      seqs.emplace_hint(seqs.end(), sa.handle, sa.seq_mark + kSeqRestoreMargin);
    sas.push_back(SaRecord{sa.handle, std::move(sa.spec), 0});  // the keys move, never copied
  }
  saved->sas.clear();
  try {
    plane_.restore(std::move(sas), saved->policies, saved->next_sa_sequence, saved->next_policy_id, [&] {
      // Before any policy can steer a packet to these SAs: never reuse a sequence number (= GCM IV).
      for (const auto& [handle, seq] : seqs)
        if (dataplane_ != nullptr && !dataplane_->set_outbound_next_seq(handle, seq))
          fail(ErrorCode::Internal, "SA " + handle_to_string(handle) + " is not in the data plane after restore");
    });
  } catch (const Error& e) {
    std::string aside;
    try {
      aside = "; moved aside to " + store_->move_aside();
    } catch (const Error& m) {
      aside = std::string("; ") + m.what();
    }
    log(LogLevel::Error, "refusing the saved state: " + store_->path() + ": cannot be applied: " + e.what() +
                             " (rolled back)" + aside + "; starting empty");
    return;
  }
  seq_marks_ = std::move(seqs);
  log(LogLevel::Info, "restored " + std::to_string(sa_count) + " SAs and " + std::to_string(saved->policies.size()) +
                          " policies from " + store_->path() + " and " + std::to_string(report.journal_records) +
                          " journal records of " + store_->journal_path() + ": snapshot read, parsed and checked in " +
                          report.snapshot_time + (report.fast_path ? "" : " by the general JSON parser") +
                          ", journal " + report.journal_time + ", installed in " + install_watch.text());
}

}  // namespace ov2
