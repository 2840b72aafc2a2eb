#include "engine/nic_engine.h"

#include "common/error.h"
#include "model/sa_json.h"

namespace ov2 {

NicEngine::NicEngine(const std::string& device, WarningSink warn)
    : backend_(xfrm::NicBackendConfig{device, xfrm::OffloadKind::Crypto, /*skip_capability_check=*/true}),
      device_(device),
      warn_(std::move(warn)) {}

Capabilities NicEngine::capabilities() const {
  Capabilities c = backend_.capabilities();
  c.engine = "nic";
  // Drivers do not tell their SA capacity (the driver refuses an SA when it is
  // full); the daemon's own table keeps its usual size.
  if (c.sa_offload_capacity == 0) c.sa_offload_capacity = OV2_MAX_SAS;
  return c;
}

void NicEngine::add_sa(uint64_t handle, const SaSpec& sa) {
  if (sa.inner_handle != 0)
    fail(ErrorCode::Unsupported, "a NIC cannot process a transport SA inside a tunnel SA (bundle); use --engine afxdp "
                                 "or --engine auto");
  backend_.add_sa(handle, sa);
}

void NicEngine::delete_sa(uint64_t handle) noexcept {
  try {
    backend_.delete_sa(handle);
  } catch (const std::exception& e) {
    if (warn_) warn_("NIC engine: deleting SA " + handle_to_string(handle) + ": " + e.what());
  }
}

void NicEngine::update_sa(uint64_t handle, uint32_t seq_hi) { backend_.update_sa(handle, seq_hi); }

namespace {

void refuse_policies_on_nic(const std::vector<CompiledPolicy>& policies, const NicEngine& nic) {
  for (const auto& p : policies)
    if (p.spec.action == PolicyAction::Protect && (nic.holds(p.offload_handle) || nic.holds(p.tunnel_handle)))
      fail(ErrorCode::Unsupported, "policy " + std::to_string(p.id) +
                                       " protects with an SA held by the NIC: ipsecov2 does not translate its SPD "
                                       "into kernel XFRM policies yet; add the policy with 'ip xfrm policy'");
}

}  // namespace

void NicEngine::set_outbound_spd(const std::vector<CompiledPolicy>& policies) { refuse_policies_on_nic(policies, *this); }
void NicEngine::set_inbound_spd(const std::vector<CompiledPolicy>& policies) { refuse_policies_on_nic(policies, *this); }

bool NicEngine::holds(uint64_t handle) const { return handle != 0 && backend_.table().find(handle) != nullptr; }

AutoEngine::AutoEngine(std::unique_ptr<NicEngine> nic, AfXdpEngine& afxdp, WarningSink warn)
    : nic_(std::move(nic)), afxdp_(afxdp), warn_(std::move(warn)) {}

Capabilities AutoEngine::capabilities() const {
  // What the host can do: the AF_XDP engine does everything the NIC does.
  Capabilities c = afxdp_.capabilities();
  c.engine = nic_ ? "auto (nic + afxdp)" : "auto (afxdp)";
  return c;
}

void AutoEngine::add_sa(uint64_t handle, const SaSpec& sa) {
  if (nic_ && sa.inner_handle == 0) {
    const xfrm::OffloadDecision d = nic_->can_offload(sa);
    if (d.offloadable) {
      try {
        nic_->add_sa(handle, sa);
        on_nic_[handle] = true;
        return;
      } catch (const Error& e) {
        if (warn_) warn_("SA " + handle_to_string(handle) + " stays on the AF_XDP engine: the NIC refused it: " + e.what());
      }
    } else if (warn_) {
      warn_("SA " + handle_to_string(handle) + " goes to the AF_XDP engine (" + d.reason + ")");
    }
  }
  afxdp_.add_sa(handle, sa);
  on_nic_[handle] = false;
}

Engine& AutoEngine::holder(uint64_t handle) {
  const auto it = on_nic_.find(handle);
  if (it != on_nic_.end() && it->second) return *nic_;
  return afxdp_;
}

void AutoEngine::delete_sa(uint64_t handle) noexcept {
  holder(handle).delete_sa(handle);
  on_nic_.erase(handle);
}

void AutoEngine::update_sa(uint64_t handle, uint32_t seq_hi) { holder(handle).update_sa(handle, seq_hi); }

void AutoEngine::split(const std::vector<CompiledPolicy>& policies, std::vector<CompiledPolicy>& to_nic,
                       std::vector<CompiledPolicy>& to_afxdp) const {
  for (const auto& p : policies) {
    const auto it = on_nic_.find(p.tunnel_handle != 0 ? p.tunnel_handle : p.offload_handle);
    const bool nic = p.spec.action == PolicyAction::Protect && it != on_nic_.end() && it->second;
    (nic ? to_nic : to_afxdp).push_back(p);
  }
}

void AutoEngine::set_outbound_spd(const std::vector<CompiledPolicy>& policies) {
  std::vector<CompiledPolicy> nic, afxdp;
  split(policies, nic, afxdp);
  if (nic_) nic_->set_outbound_spd(nic);
  afxdp_.set_outbound_spd(afxdp);
}

void AutoEngine::set_inbound_spd(const std::vector<CompiledPolicy>& policies) {
  std::vector<CompiledPolicy> nic, afxdp;
  split(policies, nic, afxdp);
  if (nic_) nic_->set_inbound_spd(nic);
  afxdp_.set_inbound_spd(afxdp);
}

std::string AutoEngine::engine_of(uint64_t handle) const {
  const auto it = on_nic_.find(handle);
  if (it == on_nic_.end()) return "";
  return it->second ? "nic" : "afxdp";
}

}  // namespace ov2
