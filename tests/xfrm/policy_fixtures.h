// An ipsecov2 SPD entry for the XFRM policy tests (protect names no SA here:
// the tests pass the NIC's SA entry to kernel_policies_of themselves).
#pragma once

#include "model/policy_spec.h"

namespace ov2::xfrm::test {

inline PolicySpec spd_entry(Direction dir, const char* src, const char* dst, PolicyAction action, uint32_t priority) {
  PolicySpec p;
  p.dir = dir;
  p.src = IpPrefix::parse(src);
  p.dst = IpPrefix::parse(dst);
  p.action = action;
  p.priority = priority;
  return p;
}

}  // namespace ov2::xfrm::test
