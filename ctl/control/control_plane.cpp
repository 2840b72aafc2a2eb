#include "control/control_plane.h"

#include <algorithm>
#include <set>

#include "common/error.h"
#include "model/sa_json.h"

namespace ov2 {

namespace {
std::string id_list(const std::vector<uint32_t>& ids) {
  std::string out;
  for (uint32_t id : ids) out += (out.empty() ? "" : ", ") + std::to_string(id);
  return out;
}

// The change event of an SA, named by its record.
ChangeEvent sa_change(ChangeKind kind, const SaRecord& r, ChangeCause cause) {
  return {kind, r.handle, 0, cause, r.spec.spi, r.spec.dir, r.spec.mode};
}
}  // namespace

const char* change_kind_name(ChangeKind kind) {
  switch (kind) {
    case ChangeKind::SaAdded:
      return "sa-added";
    case ChangeKind::SaUpdated:
      return "sa-updated";
    case ChangeKind::SaDeleted:
      return "sa-deleted";
    case ChangeKind::PolicyAdded:
      return "policy-added";
    case ChangeKind::PolicyDeleted:
      return "policy-deleted";
    case ChangeKind::PolicyUpdated:
      return "policy-updated";
  }
  return "unknown";
}

const char* change_cause_name(ChangeCause cause) {
  switch (cause) {
    case ChangeCause::User:
      return "user";
    case ChangeCause::SaDeleteReq:
      return "sa-delete-req";
    case ChangeCause::Expired:
      return "expired";
  }
  return "unknown";
}

ControlPlane::ControlPlane(Engine& engine, uint32_t sa_capacity) : engine_(engine), sas_(engine, sa_capacity) {}

void ControlPlane::add_listener(Listener* listener) {
  if (listener != nullptr && std::find(listeners_.begin(), listeners_.end(), listener) == listeners_.end())
    listeners_.push_back(listener);
}

void ControlPlane::remove_listener(Listener* listener) {
  listeners_.erase(std::remove(listeners_.begin(), listeners_.end(), listener), listeners_.end());
}

void ControlPlane::notify(const ChangeEvent& event) {
  // Copy: a listener may remove itself while being told.
  const auto listeners = listeners_;
  for (Listener* l : listeners) {
    try {
      l->on_change(event);
    } catch (...) {
      // The change has happened; a listener's failure must not make it look failed.
    }
  }
}

uint64_t ControlPlane::add_sa(SaSpec spec) {
  // An SA inside a bundle is used through the bundle's tunnel SA only.
  // (Other bundle errors -- unknown, tunnel-mode, other direction -- are the database's to report.)
  const SaRecord* inner = spec.inner_handle != 0 ? sas_.find(spec.inner_handle) : nullptr;
  if (inner != nullptr && inner->spec.mode == Mode::Transport && inner->spec.dir == spec.dir) {
    const auto users = spd_.using_sa(spec.inner_handle);
    if (!users.empty())
      fail(ErrorCode::InvalidArgument, "--inner " + handle_to_string(spec.inner_handle) + " is used directly by " +
                                           (users.size() == 1 ? "policy " : "policies ") + id_list(users) +
                                           "; an SA inside a bundle is used through the bundle: delete the "
                                           "policy first");
  }
  const uint64_t handle = sas_.add(std::move(spec));
  notify(sa_change(ChangeKind::SaAdded, *sas_.find(handle), ChangeCause::User));
  return handle;
}

std::vector<uint64_t> ControlPlane::add_sas(std::vector<SaSpec> specs, size_t* failed_index) {
  struct BatchGuard {  // a batch never outlives this call (a throw of any kind included)
    Engine& engine;
    ~BatchGuard() { engine.abort_batch(); }
  } guard{engine_};
  engine_.begin_batch(specs.size());
  std::vector<uint64_t> added;
  added.reserve(specs.size());
  const auto take_back = [&](size_t index) {
    engine_.abort_batch();
    if (!added.empty()) delete_sas(added, false);
    if (failed_index != nullptr) *failed_index = index;
  };
  for (size_t i = 0; i < specs.size(); ++i) {
    try {
      added.push_back(add_sa(std::move(specs[i])));
    } catch (const Error&) {
      take_back(i);
      throw;
    }
  }
  try {
    engine_.commit_batch();
  } catch (const Error&) {
    take_back(specs.size());
    throw;
  }
  return added;
}

CompiledPolicy ControlPlane::compile_one(uint32_t id, const PolicySpec& spec) const {
  CompiledPolicy c{id, spec, 0, 0};
  if (spec.action == PolicyAction::Protect) {
    const SaRecord* sa = sas_.find(spec.sa_handle);
    if (sa != nullptr && sa->spec.inner_handle != 0) {
      c.offload_handle = sa->spec.inner_handle;
      c.tunnel_handle = sa->handle;
    } else {
      c.offload_handle = spec.sa_handle;
    }
  }
  return c;
}

std::vector<CompiledPolicy> ControlPlane::compiled(Direction dir, const PolicySpec* extra,
                                                   const std::vector<uint32_t>& without) const {
  std::vector<CompiledPolicy> out;
  for (const PolicyRecord* p : spd_.ordered(dir))
    if (std::find(without.begin(), without.end(), p->id) == without.end()) out.push_back(compile_one(p->id, p->spec));
  if (extra != nullptr && extra->dir == dir) {
    // The new policy has the highest id: it goes after every policy of equal or better priority.
    CompiledPolicy c = compile_one(spd_.next_id(), *extra);
    auto pos = std::find_if(out.begin(), out.end(),
                            [&](const CompiledPolicy& q) { return q.spec.priority > extra->priority; });
    out.insert(pos, c);
  }
  return out;
}

void ControlPlane::push_spd(Direction dir, const std::vector<CompiledPolicy>& list) {
  if (dir == Direction::Out)
    engine_.set_outbound_spd(list);
  else
    engine_.set_inbound_spd(list);
}

ControlPlane::DeleteResult ControlPlane::delete_sas(const std::vector<uint64_t>& handles, bool force,
                                                    ChangeCause cause) {
  if (handles.empty()) fail(ErrorCode::InvalidArgument, "give at least one SA handle to delete");
  sas_.check_removable(handles);

  std::vector<uint32_t> users;
  std::string detail;
  for (uint64_t h : std::set<uint64_t>(handles.begin(), handles.end())) {
    const auto ids = spd_.using_sa(h);
    if (ids.empty()) continue;
    users.insert(users.end(), ids.begin(), ids.end());
    detail += std::string(detail.empty() ? "" : "; ") + "SA " + handle_to_string(h) + " is used by " +
              (ids.size() == 1 ? "policy " : "policies ") + id_list(ids);
  }
  std::sort(users.begin(), users.end());
  if (!users.empty() && !force)
    fail(ErrorCode::InvalidArgument,
         detail + "; delete the policies first, or use --force to delete them with the SA; nothing was deleted");

  DeleteResult result;
  if (!users.empty()) {
    // Replace the SPDs first so no packet is steered to a handle about to go.
    // If the second direction fails, restore the first.
    const auto out_list = compiled(Direction::Out, nullptr, users);
    const auto in_list = compiled(Direction::In, nullptr, users);
    push_spd(Direction::Out, out_list);
    try {
      push_spd(Direction::In, in_list);
    } catch (...) {
      push_spd(Direction::Out, compiled(Direction::Out, nullptr, {}));
      throw;
    }
    for (uint32_t id : users) spd_.erase(id);
    result.deleted_policies = users;
  }
  result.deleted_sas.assign(handles.begin(), handles.end());
  std::sort(result.deleted_sas.begin(), result.deleted_sas.end());
  result.deleted_sas.erase(std::unique(result.deleted_sas.begin(), result.deleted_sas.end()), result.deleted_sas.end());
  std::vector<ChangeEvent> sa_events;  // described while the records exist
  sa_events.reserve(result.deleted_sas.size());
  for (uint64_t h : result.deleted_sas) sa_events.push_back(sa_change(ChangeKind::SaDeleted, *sas_.find(h), cause));
  sas_.remove(handles);
  for (uint32_t id : result.deleted_policies) notify({ChangeKind::PolicyDeleted, 0, id, cause});
  for (const ChangeEvent& e : sa_events) notify(e);
  return result;
}

void ControlPlane::update_sa(uint64_t handle, uint32_t seq_hi) {
  sas_.update_seq_hi(handle, seq_hi);
  notify(sa_change(ChangeKind::SaUpdated, *sas_.find(handle), ChangeCause::User));
}

void ControlPlane::check_protect_sa(const PolicySpec& spec) const {
  const SaRecord* sa = sas_.find(spec.sa_handle);
  if (sa == nullptr)
    fail(ErrorCode::InvalidArgument, "--sa " + handle_to_string(spec.sa_handle) + ": no SA has this handle");
  if (sa->spec.dir != spec.dir)
    fail(ErrorCode::InvalidArgument, "--sa " + handle_to_string(spec.sa_handle) + " is an " + to_string(sa->spec.dir) +
                                         "bound SA; an " + to_string(spec.dir) + "bound policy needs an " +
                                         to_string(spec.dir) + "bound SA");
  if (sa->bundled_in != 0)
    fail(ErrorCode::InvalidArgument, "--sa " + handle_to_string(spec.sa_handle) + " is the inner SA of the bundle " +
                                         handle_to_string(sa->bundled_in) + "; name the bundle's tunnel SA " +
                                         handle_to_string(sa->bundled_in));
}

uint32_t ControlPlane::add_policy(const PolicySpec& spec) {
  validate_policy(spec);
  if (spec.action == PolicyAction::Protect) check_protect_sa(spec);
  if (const PolicyRecord* same = spd_.find_identical(spec))
    fail(ErrorCode::Exists, "an identical policy exists already (id " + std::to_string(same->id) + ")");
  if (spd_.next_id() == UINT32_MAX) fail(ErrorCode::ResourceExhausted, "policy ids are exhausted; restart the daemon");
  if (spd_.ordered(spec.dir).size() >= OV2_MAX_POLICIES)
    fail(ErrorCode::ResourceExhausted, "the " + std::string(to_string(spec.dir)) + "bound SPD is full (" +
                                           std::to_string(OV2_MAX_POLICIES) + " policies)");
  push_spd(spec.dir, compiled(spec.dir, &spec, {}));
  const uint32_t id = spd_.insert(spec);
  notify({ChangeKind::PolicyAdded, 0, id, ChangeCause::User});
  return id;
}

void ControlPlane::delete_policies(const std::vector<uint32_t>& ids) {
  if (ids.empty()) fail(ErrorCode::InvalidArgument, "give at least one policy id to delete");
  bool in = false, out = false;
  for (uint32_t id : ids) {
    const PolicyRecord* p = spd_.find(id);
    if (p == nullptr) fail(ErrorCode::NotFound, "no policy has id " + std::to_string(id) + "; nothing was deleted");
    (p->spec.dir == Direction::In ? in : out) = true;
  }
  const auto out_list = compiled(Direction::Out, nullptr, ids);
  const auto in_list = compiled(Direction::In, nullptr, ids);
  if (out) push_spd(Direction::Out, out_list);
  if (in) {
    try {
      push_spd(Direction::In, in_list);
    } catch (...) {
      if (out) push_spd(Direction::Out, compiled(Direction::Out, nullptr, {}));
      throw;
    }
  }
  for (uint32_t id : ids) spd_.erase(id);
  for (uint32_t id : std::set<uint32_t>(ids.begin(), ids.end()))
    notify({ChangeKind::PolicyDeleted, 0, id, ChangeCause::User});
}

void ControlPlane::update_policy_sa(uint32_t id, uint64_t sa_handle) {
  const PolicyRecord* p = spd_.find(id);
  if (p == nullptr) fail(ErrorCode::NotFound, "no policy has id " + std::to_string(id) + "; nothing was changed");
  if (p->spec.action != PolicyAction::Protect)
    fail(ErrorCode::InvalidArgument, "policy " + std::to_string(id) + " is a " + to_string(p->spec.action) +
                                         " policy; only a protect policy names an SA");
  PolicySpec next = p->spec;
  next.sa_handle = sa_handle;
  check_protect_sa(next);
  if (const PolicyRecord* same = spd_.find_identical(next); same != nullptr && same->id != id)
    fail(ErrorCode::Exists, "an identical policy exists already (id " + std::to_string(same->id) + ")");
  const PolicySpec previous = p->spec;
  spd_.replace(id, next);
  try {
    push_spd(next.dir, compiled(next.dir, nullptr, {}));
  } catch (...) {
    spd_.replace(id, previous);  // the engine threw before changing anything (compile_spd first)
    throw;
  }
  notify({ChangeKind::PolicyUpdated, 0, id, ChangeCause::User});
}

void ControlPlane::restore(std::vector<SaRecord> sas, const std::vector<PolicyRecord>& policies,
                           uint64_t next_sa_sequence, uint32_t next_policy_id,
                           const std::function<void()>& before_policies) {
  if (sas_.size() != 0 || !spd_.list().empty())
    fail(ErrorCode::Internal, "restoring saved state needs an empty control plane");
  // Inner (transport) SAs before the bundles that name them; within each, in slot order, so that
  // the database takes each saved slot as the next fresh one (no search of its free list).
  // (The order is sorted, not the records: moving 200 000 SaRecords around cost more than the sort.)
  std::vector<std::pair<uint64_t, size_t>> order;  // (bundle bit, slot), index
  order.reserve(sas.size());
  for (size_t i = 0; i < sas.size(); ++i)
    order.emplace_back((uint64_t{sas[i].spec.inner_handle != 0} << 32) | handle_slot(sas[i].handle), i);
  std::sort(order.begin(), order.end());
  std::vector<uint64_t> installed;
  installed.reserve(sas.size());
  struct BatchGuard {  // a batch never outlives this call (a throw of any kind included)
    Engine& engine;
    ~BatchGuard() { engine.abort_batch(); }
  } guard{engine_};
  // The engine may write parts of the SAs at once after the last one (the AF_XDP engine: the inbound
  // SAs' ov2_wire entries, one bpf syscall per 8 192 instead of one each).
  engine_.begin_batch(sas.size());
  try {
    for (const auto& [key, index] : order) {
      SaRecord& r = sas[index];
      sas_.restore(r.handle, std::move(r.spec));  // the keys move into the database (no copy)
      installed.push_back(r.handle);
    }
    engine_.commit_batch();  // all or nothing; a throw rolls the restore back below
    if (before_policies) before_policies();
    for (const PolicyRecord& p : policies) {
      validate_policy(p.spec);
      if (p.spec.action == PolicyAction::Protect) {
        const SaRecord* sa = sas_.find(p.spec.sa_handle);
        if (sa == nullptr || sa->spec.dir != p.spec.dir || sa->bundled_in != 0)
          fail(ErrorCode::InvalidArgument, "saved policy " + std::to_string(p.id) + " protects with SA " +
                                               handle_to_string(p.spec.sa_handle) +
                                               ", which is missing, of the other direction or inside a bundle");
      }
      if (!spd_.restore(p.id, p.spec))
        fail(ErrorCode::InvalidArgument, "saved policy id " + std::to_string(p.id) + " is 0 or appears twice");
    }
    push_spd(Direction::Out, compiled(Direction::Out, nullptr, {}));
    push_spd(Direction::In, compiled(Direction::In, nullptr, {}));
  } catch (...) {
    engine_.abort_batch();
    try {
      push_spd(Direction::Out, {});
      push_spd(Direction::In, {});
    } catch (...) {
      // Empty lists compile; nothing sensible to do if the engine still refuses.
    }
    for (const PolicyRecord* p : spd_.list()) spd_.erase(p->id);
    if (!installed.empty()) sas_.remove(installed);
    throw;
  }
  sas_.raise_next_sequence(next_sa_sequence);
  spd_.raise_next_id(next_policy_id);
}

}  // namespace ov2
