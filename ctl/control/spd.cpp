#include "control/spd.h"

#include <algorithm>

namespace ov2 {

bool same_policy(const PolicySpec& a, const PolicySpec& b) {
  return a.dir == b.dir && a.src == b.src && a.dst == b.dst && a.proto == b.proto && a.sport == b.sport &&
         a.dport == b.dport && a.action == b.action && a.sa_handle == b.sa_handle && a.priority == b.priority;
}

uint32_t Spd::insert(const PolicySpec& spec) {
  const uint32_t id = next_id_++;
  policies_.emplace(id, PolicyRecord{id, spec});
  return id;
}

bool Spd::restore(uint32_t id, const PolicySpec& spec) {
  if (id == 0 || !policies_.emplace(id, PolicyRecord{id, spec}).second) return false;
  if (id >= next_id_) next_id_ = id + 1;
  return true;
}

bool Spd::erase(uint32_t id) { return policies_.erase(id) != 0; }

bool Spd::replace(uint32_t id, const PolicySpec& spec) {
  auto it = policies_.find(id);
  if (it == policies_.end()) return false;
  it->second.spec = spec;
  return true;
}

const PolicyRecord* Spd::find(uint32_t id) const {
  auto it = policies_.find(id);
  return it == policies_.end() ? nullptr : &it->second;
}

std::vector<const PolicyRecord*> Spd::ordered(Direction dir) const {
  std::vector<const PolicyRecord*> out;
  for (const auto& [id, p] : policies_)
    if (p.spec.dir == dir) out.push_back(&p);
  // policies_ iterates by id, so a stable sort by priority keeps id order on ties.
  std::stable_sort(out.begin(), out.end(),
                   [](const PolicyRecord* a, const PolicyRecord* b) { return a->spec.priority < b->spec.priority; });
  return out;
}

std::vector<const PolicyRecord*> Spd::list() const {
  std::vector<const PolicyRecord*> out;
  for (const auto& [id, p] : policies_) out.push_back(&p);
  return out;
}

std::vector<uint32_t> Spd::using_sa(uint64_t sa_handle) const {
  std::vector<uint32_t> out;
  for (const auto& [id, p] : policies_)
    if (p.spec.action == PolicyAction::Protect && p.spec.sa_handle == sa_handle) out.push_back(id);
  return out;
}

const PolicyRecord* Spd::find_identical(const PolicySpec& spec) const {
  for (const auto& [id, p] : policies_)
    if (same_policy(p.spec, spec)) return &p;
  return nullptr;
}

}  // namespace ov2
