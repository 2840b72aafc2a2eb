// The façade the control socket drives: the SA database and the SPD over one
// engine, with the rules that tie them together.
//
//  - A PROTECT policy names an existing SA of the same direction.  For a
//    bundle it names the tunnel SA; the compiled entry then carries
//    offload_handle = the inner transport SA and tunnel_handle = the tunnel
//    SA (NDIS: OffloadHandle is the transport SA, TunnelHandle the tunnel SA).
//  - Deleting an SA that a PROTECT policy names is refused with a message
//    naming the policies, unless `force` is set: then those policies are
//    removed first (the engine's SPD is replaced before the SA goes, so no
//    packet is ever steered to a deleted handle).
//  - Every operation is all-or-nothing.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "control/sa_database.h"
#include "control/spd.h"
#include "engine/engine.h"

namespace ov2 {

// What changed in the control plane's state.  Carries handles and ids, and
// for an SA the few facts that name it (so that a listener need not keep a
// copy for the SA's deleted event: the SA is gone by then), never keys or
// specs: a listener that needs more looks the SA up.
enum class ChangeKind { SaAdded, SaUpdated, SaDeleted, PolicyAdded, PolicyDeleted, PolicyUpdated };
// Why it changed: a user request, a data-plane SaDeleteReq (NDIS
// NDIS_STATUS_IPSEC_SA_DELETE_REQ equivalent), or an SA's lifetime expiry.
enum class ChangeCause { User, SaDeleteReq, Expired };

struct ChangeEvent {
  ChangeKind kind = ChangeKind::SaAdded;
  uint64_t sa_handle = 0;  // Sa* kinds
  uint32_t policy_id = 0;  // Policy* kinds
  ChangeCause cause = ChangeCause::User;
  // Sa* kinds: what the SA was (also for SaDeleted).
  uint32_t sa_spi = 0;
  Direction sa_dir = Direction::Out;
  Mode sa_mode = Mode::Tunnel;
};

// "sa-added", "sa-updated", "sa-deleted", "policy-added", "policy-deleted", "policy-updated".
const char* change_kind_name(ChangeKind kind);
// "user", "sa-delete-req", "expired".
const char* change_cause_name(ChangeCause cause);

class ControlPlane {
 public:
  // Told about every successful change, after the change is complete (the
  // database already shows it).  Called synchronously on the daemon thread,
  // in the order the changes happened; a delete with --force reports the
  // policy deletions before the SA deletions.  on_change must not throw
  // (an exception is swallowed: the change itself has succeeded).
  struct Listener {
    virtual ~Listener() = default;
    virtual void on_change(const ChangeEvent& event) = 0;
  };

  // `engine` must outlive the control plane.
  ControlPlane(Engine& engine, uint32_t sa_capacity);

  // Registers `listener` (not owned; must stay valid until removed or the
  // control plane is destroyed).  Adding the same listener twice is a no-op.
  void add_listener(Listener* listener);
  // Unregisters `listener`; unknown listeners are ignored.
  void remove_listener(Listener* listener);

  Capabilities capabilities() const { return engine_.capabilities(); }
  // Which engine holds the SA (`sa show` reports it; --engine auto decides per SA).
  std::string engine_of(uint64_t handle) const { return engine_.engine_of(handle); }
  // The SA's counters kept by its engine outside the data plane (NIC-held
  // SAs: the kernel's); nullopt otherwise.  Throws ov2::Error if reading fails.
  std::optional<SaRuntimeCounters> engine_sa_counters(uint64_t handle) const { return engine_.sa_counters(handle); }

  // ADD_SA; returns the handle.  Throws ov2::Error.
  uint64_t add_sa(SaSpec spec);
  // A batch of ADD_SA (a batched sa.add), all-or-nothing: adds `specs` in
  // order and returns their handles.  The engine may write parts of them at
  // once at the end (Engine::begin_batch).  When one is refused, or the
  // engine's write at the end fails, the ones added are deleted again
  // (listeners see the adds and the deletes) and it throws ov2::Error;
  // `failed_index`, if given, is set to the refused spec's index (specs.size()
  // for the write at the end).
  std::vector<uint64_t> add_sas(std::vector<SaSpec> specs, size_t* failed_index = nullptr);

  struct DeleteResult {
    std::vector<uint64_t> deleted_sas;
    std::vector<uint32_t> deleted_policies;  // only with force
  };
  // DELETE_SA of a list (all-or-nothing).  Throws ov2::Error.
  // `cause` is passed to listeners.
  DeleteResult delete_sas(const std::vector<uint64_t>& handles, bool force, ChangeCause cause = ChangeCause::User);

  // UPDATE_SA.  Throws ov2::Error(InvalidArgument) for unknown or non-ESN SAs.
  void update_sa(uint64_t handle, uint32_t seq_hi);

  // Adds a policy; returns its id (never reused).  Throws ov2::Error.
  uint32_t add_policy(const PolicySpec& spec);
  // Deletes policies by id (all-or-nothing: an unknown id deletes nothing).
  void delete_policies(const std::vector<uint32_t>& ids);
  // Switches the PROTECT policy `id` to the SA `sa_handle` in one step (the
  // rekey's make-before-break): the engine's SPD is replaced as a whole, so
  // every packet matches the policy with either the old or the new SA, never
  // none.  The policy keeps its id, selectors and priority.  Throws
  // ov2::Error (unknown id, not PROTECT, SA unknown/of the other
  // direction/inside a bundle); nothing changes then.
  void update_policy_sa(uint32_t id, uint64_t sa_handle);

  // Restart recovery (state_store.h), on an empty control plane only: installs
  // `sas` under their saved handles, calls `before_policies` (e.g. to set the
  // outbound sequence numbers before any packet can reach an SA), installs
  // `policies` under their saved ids and keeps later handles/ids above the
  // saved sequences.  All-or-nothing: on throw everything restored is
  // removed again.  Listeners are not told (nothing changed for them).
  void restore(std::vector<SaRecord> sas, const std::vector<PolicyRecord>& policies, uint64_t next_sa_sequence,
               uint32_t next_policy_id, const std::function<void()>& before_policies);

  const SaDatabase& sas() const { return sas_; }
  const Spd& spd() const { return spd_; }

  // The compiled list the engine gets for one direction, with `extra` added
  // (id = spd.next_id()) and the ids in `without` left out.
  std::vector<CompiledPolicy> compiled(Direction dir, const PolicySpec* extra,
                                       const std::vector<uint32_t>& without) const;

 private:
  CompiledPolicy compile_one(uint32_t id, const PolicySpec& spec) const;
  // Throws unless the PROTECT spec's SA exists, has its direction and is not inside a bundle.
  void check_protect_sa(const PolicySpec& spec) const;
  void push_spd(Direction dir, const std::vector<CompiledPolicy>& list);
  void notify(const ChangeEvent& event);

  Engine& engine_;
  SaDatabase sas_;
  Spd spd_;
  std::vector<Listener*> listeners_;
};

}  // namespace ov2
