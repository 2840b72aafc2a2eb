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
#include <vector>

#include "control/sa_database.h"
#include "control/spd.h"
#include "engine/engine.h"

namespace ov2 {

class ControlPlane {
 public:
  // `engine` must outlive the control plane.
  ControlPlane(Engine& engine, uint32_t sa_capacity);

  Capabilities capabilities() const { return engine_.capabilities(); }

  // ADD_SA; returns the handle.  Throws ov2::Error.
  uint64_t add_sa(SaSpec spec);

  struct DeleteResult {
    std::vector<uint64_t> deleted_sas;
    std::vector<uint32_t> deleted_policies;  // only with force
  };
  // DELETE_SA of a list (all-or-nothing).  Throws ov2::Error.
  DeleteResult delete_sas(const std::vector<uint64_t>& handles, bool force);

  // UPDATE_SA.  Throws ov2::Error(InvalidArgument) for unknown or non-ESN SAs.
  void update_sa(uint64_t handle, uint32_t seq_hi);

  // Adds a policy; returns its id (never reused).  Throws ov2::Error.
  uint32_t add_policy(const PolicySpec& spec);
  // Deletes policies by id (all-or-nothing: an unknown id deletes nothing).
  void delete_policies(const std::vector<uint32_t>& ids);

  const SaDatabase& sas() const { return sas_; }
  const Spd& spd() const { return spd_; }

  // The compiled list the engine gets for one direction, with `extra` added
  // (id = spd.next_id()) and the ids in `without` left out.
  std::vector<CompiledPolicy> compiled(Direction dir, const PolicySpec* extra,
                                       const std::vector<uint32_t>& without) const;

 private:
  CompiledPolicy compile_one(uint32_t id, const PolicySpec& spec) const;
  void push_spd(Direction dir, const std::vector<CompiledPolicy>& list);

  Engine& engine_;
  SaDatabase sas_;
  Spd spd_;
};

}  // namespace ov2
