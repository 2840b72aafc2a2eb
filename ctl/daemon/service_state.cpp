#include "daemon/service_state.h"

#include "common/error.h"
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

DaemonState ServiceState::snapshot() {
  DaemonState s;
  s.next_sa_sequence = plane_.sas().next_sequence();
  s.next_policy_id = plane_.spd().next_id();
  std::map<uint64_t, uint64_t> marks;
  for (const SaRecord* r : plane_.sas().list()) {
    SavedSa sa{r->handle, r->spec, 0};
    if (r->spec.dir == Direction::Out) {
      // Strictly above what was sent, rounded so the file is not rewritten per packet.
      const uint64_t next = next_seq_of(r->handle);
      uint64_t mark = next == 0 ? 0 : (next / kSeqMarkStep + 1) * kSeqMarkStep;
      if (auto it = seq_marks_.find(r->handle); it != seq_marks_.end()) mark = std::max(mark, it->second);
      sa.seq_mark = mark;
      marks[r->handle] = mark;
    }
    s.sas.push_back(std::move(sa));
  }
  seq_marks_ = std::move(marks);
  for (const PolicyRecord* p : plane_.spd().list()) s.policies.push_back(*p);
  return s;
}

void ServiceState::save() {
  if (store_ == nullptr) return;
  try {
    store_->save(snapshot());
  } catch (const Error& e) {
    log(LogLevel::Error, std::string("cannot save the state (SAs and policies will not survive a restart): ") +
                             e.what());
  }
}

void ServiceState::save_if_sequence_passed_mark() {
  if (store_ == nullptr) return;
  for (const auto& [handle, mark] : seq_marks_)
    if (next_seq_of(handle) >= mark) {
      save();
      return;
    }
}

void ServiceState::on_change(const ChangeEvent&) { save(); }

void ServiceState::restore() {
  if (store_ == nullptr) return;
  std::optional<DaemonState> saved;
  try {
    saved = store_->load();
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
  if (!saved) {
    log(LogLevel::Info, "no saved state in " + store_->path() + "; starting empty");
    return;
  }
  std::vector<SaRecord> sas;
  std::map<uint64_t, uint64_t> seqs;
  for (const SavedSa& sa : saved->sas) {
    sas.push_back(SaRecord{sa.handle, sa.spec, 0});
    if (sa.spec.dir == Direction::Out && sa.seq_mark != 0) seqs[sa.handle] = sa.seq_mark + kSeqRestoreMargin;
  }
  try {
    plane_.restore(sas, saved->policies, saved->next_sa_sequence, saved->next_policy_id, [&] {
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
  for (const auto& [handle, seq] : seqs) seq_marks_[handle] = seq;
  log(LogLevel::Info, "restored " + std::to_string(saved->sas.size()) + " SAs and " +
                          std::to_string(saved->policies.size()) + " policies from " + store_->path());
}

}  // namespace ov2
