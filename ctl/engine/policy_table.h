// A compiled SPD of one direction as the packet path sees it: an immutable,
// ordered snapshot (best priority first, ties by policy id), replaced as a
// whole.  The worker uses the inbound one for the RFC 4301 §5.2 check of
// decrypted packets: lookup() returns the first policy whose selectors match.
#pragma once

#include <cstdint>
#include <vector>

#include "dataplane/spd_compiler.h"

namespace ov2 {

// The selector fields of one packet (addresses in network order, as IpAddr).
struct PacketSelector {
  IpAddr src;
  IpAddr dst;
  uint8_t proto = 0;
  uint16_t sport = 0;  // host order; 0 when the protocol has no ports
  uint16_t dport = 0;
};

// True if the policy's selectors cover the packet.
inline bool policy_matches(const PolicySpec& p, const PacketSelector& s) {
  if (!p.src.contains(s.src) || !p.dst.contains(s.dst)) return false;
  if (p.proto != kAnyProto && p.proto != s.proto) return false;
  if (s.sport < p.sport.lo || s.sport > p.sport.hi) return false;
  if (s.dport < p.dport.lo || s.dport > p.dport.hi) return false;
  return true;
}

struct PolicyTable {
  std::vector<CompiledPolicy> ordered;  // best first
  uint64_t generation = 0;

  // The first matching policy, or nullptr (no policy: RFC 4301 says discard).
  const CompiledPolicy* lookup(const PacketSelector& s) const {
    for (const auto& p : ordered)
      if (policy_matches(p.spec, s)) return &p;
    return nullptr;
  }
};

}  // namespace ov2
