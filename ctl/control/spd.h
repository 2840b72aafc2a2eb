// The security policy database (SPD) as the user manages it: policies with
// ids that are never reused, both directions.  Order: lower priority value
// wins; equal priorities are ordered by id (older first).  The engine gets
// the compiled list of each direction (ControlPlane does that).
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <vector>

#include "model/policy_spec.h"

namespace ov2 {

struct PolicyRecord {
  uint32_t id = 0;
  PolicySpec spec;
};

class Spd {
 public:
  // The id the next insert() will use.
  uint32_t next_id() const { return next_id_; }
  // Records `spec` under next_id() and advances it.  Returns the id.
  uint32_t insert(const PolicySpec& spec);
  // Restart recovery: records `spec` under the saved `id` (false if the id
  // is taken) and makes sure next_id() stays above it.
  bool restore(uint32_t id, const PolicySpec& spec);
  // Raises next_id() to at least `id` (the saved next id).  Never lowers it.
  void raise_next_id(uint32_t id) { next_id_ = std::max(next_id_, id); }
  // Removes a policy; false if there is none with this id.
  bool erase(uint32_t id);
  // Gives policy `id` a new spec, keeping its id (and so its place among
  // equal priorities); false if there is none with this id.
  bool replace(uint32_t id, const PolicySpec& spec);

  const PolicyRecord* find(uint32_t id) const;
  // The policies of one direction, best first (priority, then id).
  std::vector<const PolicyRecord*> ordered(Direction dir) const;
  // Every policy, by id.
  std::vector<const PolicyRecord*> list() const;
  // Ids of the PROTECT policies that name `sa_handle`.
  std::vector<uint32_t> using_sa(uint64_t sa_handle) const;
  // A policy identical to `spec` in everything but id, or nullptr.
  const PolicyRecord* find_identical(const PolicySpec& spec) const;

 private:
  uint32_t next_id_ = 1;
  std::map<uint32_t, PolicyRecord> policies_;
};

bool same_policy(const PolicySpec& a, const PolicySpec& b);

}  // namespace ov2
