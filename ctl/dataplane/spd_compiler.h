// Compiles the outbound SPD into the form ov2_tx reads: an LPM trie over
// (family, destination) whose leaves list every policy whose destination
// prefix covers the leaf, best first, and an array of entries.  A packet costs
// one trie lookup plus a scan of at most OV2_SPD_MAX_CANDIDATES entries,
// however many policies there are.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "model/policy_spec.h"
#include "ov2_abi.h"

namespace ov2 {

struct CompiledPolicy {
  uint32_t id;  // user-visible policy id
  PolicySpec spec;
  uint64_t offload_handle;  // PROTECT: what goes into the metadata's OffloadHandle
  uint64_t tunnel_handle;   // PROTECT of a bundle: the tunnel SA; else 0
};

struct CompiledSpd {
  std::vector<std::pair<ov2_spd_trie_key, ov2_spd_candidates>> trie;
  std::vector<ov2_spd_entry> entries;  // index = slot used in candidates
};

// Orders by (priority, insertion id).  Throws ov2::Error(ResourceExhausted) if a
// leaf would need more than OV2_SPD_MAX_CANDIDATES overlapping policies, naming them.
CompiledSpd compile_spd(const std::vector<CompiledPolicy>& outbound_policies);

// Writes a compiled SPD into the maps, replacing what was there (entries first,
// then trie leaves, then stale leaves removed, so a packet always sees a
// consistent view).
//
// So that no slot an old leaf still points to changes meaning mid-update, an
// entry identical to one in `previous` keeps its slot and a new entry goes to
// a slot `previous` did not use (only if the array is too full for that, a
// stale slot is reused).  Returns the SPD as placed in the maps (entries
// indexed by slot, unused slots zero/invalid): pass THAT as `previous` next
// time.  `previous` = nullptr means the maps are empty.  Throws
// ov2::Error(Kernel) or (ResourceExhausted) if a map refuses a write.
CompiledSpd load_spd(int trie_fd, int entries_fd, const CompiledSpd& spd, const CompiledSpd* previous);

}  // namespace ov2
