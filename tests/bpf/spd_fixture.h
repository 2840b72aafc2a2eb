// Building outbound policies and loading them into ov2_tx's maps, for the
// ov2_tx and SPD compiler tests.
#pragma once

#include <string>
#include <vector>

#include "bpf_harness.h"
#include "dataplane/spd_compiler.h"

namespace ov2::test {

struct PolicyArgs {
  std::string dst = "0.0.0.0/0";
  std::string src = "";  // "" = any of the destination's family
  PolicyAction action = PolicyAction::Protect;
  uint64_t handle = 0;  // PROTECT: offload handle
  uint64_t tunnel = 0;
  uint32_t priority = 1000;
  uint16_t proto = kAnyProto;
  PortRange sport{};
  PortRange dport{};
};

inline CompiledPolicy make_policy(uint32_t id, const PolicyArgs& a) {
  CompiledPolicy p{};
  p.id = id;
  p.spec.dir = Direction::Out;
  p.spec.dst = IpPrefix::parse(a.dst);
  p.spec.src = a.src.empty() ? IpPrefix{IpAddr::any(p.spec.dst.addr.family), 0} : IpPrefix::parse(a.src);
  p.spec.proto = a.proto;
  p.spec.sport = a.sport;
  p.spec.dport = a.dport;
  p.spec.action = a.action;
  p.spec.sa_handle = a.action == PolicyAction::Protect ? a.handle : 0;
  p.spec.priority = a.priority;
  p.offload_handle = p.spec.sa_handle;
  p.tunnel_handle = a.action == PolicyAction::Protect ? a.tunnel : 0;
  return p;
}

// Replaces ov2_tx's SPD with these policies (through compile_spd + load_spd).
inline void load_outbound_spd(const std::vector<CompiledPolicy>& policies) {
  static CompiledSpd loaded;
  static bool have_loaded = false;
  CompiledSpd compiled = compile_spd(policies);
  loaded = load_spd(programs().spd_trie_fd(), programs().spd_entries_fd(), compiled, have_loaded ? &loaded : nullptr);
  have_loaded = true;
}

}  // namespace ov2::test
