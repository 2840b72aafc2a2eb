// An SPD entry for the tests (control plane, state store, inbound SPD, XFRM
// translation): the fields every policy has; a test sets the rest itself.
#pragma once

#include <cstdint>
#include <string_view>

#include "model/policy_spec.h"

namespace ov2::test {

// `sa`: the SA a PROTECT policy names (0: none); `priority`: lower wins.
inline PolicySpec policy(Direction dir, std::string_view src, std::string_view dst, PolicyAction action,
                         uint64_t sa = 0, uint32_t priority = 1000) {
  PolicySpec p;
  p.dir = dir;
  p.src = IpPrefix::parse(src);
  p.dst = IpPrefix::parse(dst);
  p.action = action;
  p.sa_handle = sa;
  p.priority = priority;
  return p;
}

inline PolicySpec protect(Direction dir, std::string_view src, std::string_view dst, uint64_t sa) {
  return policy(dir, src, dst, PolicyAction::Protect, sa);
}

}  // namespace ov2::test
