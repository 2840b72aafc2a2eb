#include "engine/nic_engine.h"

#include "common/error.h"
#include "common/shrink_after_erase.h"
#include "model/sa_json.h"

namespace ov2 {

SaRuntimeCounters counters_from_kernel(const xfrm::SaReadback& state, Direction dir) {
  SaRuntimeCounters c;
  c.packets = state.packets;
  c.bytes = state.bytes;
  c.by_reason[static_cast<size_t>(esp::Reason::Replayed)] =
      uint64_t{state.replay_failures} + state.replay_window_failures;
  c.by_reason[static_cast<size_t>(esp::Reason::AuthFailed)] = state.integrity_failures;
  if (state.replay_esn) {
    const xfrm::ReplayEsn& r = *state.replay_esn;
    if (dir == Direction::Out)
      c.next_seq = ((uint64_t{r.oseq_hi} << 32) | r.oseq) + 1;
    else
      c.highest_seq = (uint64_t{r.seq_hi} << 32) | r.seq;
  }
  return c;
}

std::optional<KernelSaEvent> kernel_sa_event(const xfrm::XfrmSaTable& table, const xfrm::KernelSaMessage& msg) {
  const auto handle = xfrm::handle_of(table, msg.id);
  if (!handle) return std::nullopt;
  KernelSaEvent e;
  e.handle = *handle;
  switch (msg.kind) {
    case xfrm::KernelSaEventKind::SoftExpire:
      e.kind = KernelSaEvent::Kind::SoftExpire;
      break;
    case xfrm::KernelSaEventKind::HardExpire:
      e.kind = KernelSaEvent::Kind::HardExpire;
      break;
    case xfrm::KernelSaEventKind::Deleted:
      e.kind = KernelSaEvent::Kind::Deleted;
      break;
  }
  e.limit = msg.limit;
  e.packets = msg.packets;
  e.bytes = msg.bytes;
  return e;
}

NicEngine::NicEngine(const std::string& device, WarningSink warn, xfrm::OffloadKind offload)
    : backend_(xfrm::NicBackendConfig{device, offload, /*skip_capability_check=*/true}),
      events_(std::make_unique<xfrm::XfrmEventSocket>()),
      device_(device),
      warn_(std::move(warn)) {}

void NicEngine::finish_restore() noexcept {
  const size_t n = backend_.finish_restore(warn_);
  if (n != 0 && warn_)
    warn_("NIC engine: removed " + std::to_string(n) +
          " kernel XFRM policies that a previous ipsecov2d left behind (it was killed) and the saved state no "
          "longer has");
}

std::optional<KernelSaEvent> NicEngine::on_kernel_message(const xfrm::KernelSaMessage& msg) const {
  return kernel_sa_event(backend_.table(), msg);
}

std::vector<KernelSaEvent> NicEngine::read_kernel_events() {
  std::vector<KernelSaEvent> out;
  bool lost = false;
  for (const auto& m : events_->read(&lost))
    if (auto e = on_kernel_message(m)) out.push_back(std::move(*e));
  if (lost && warn_)
    warn_("NIC engine: the kernel dropped XFRM expire/SA notifications (socket buffer full); soft or hard expiry "
          "of a NIC-held SA may have been missed");
  return out;
}

NicEngine::~NicEngine() { backend_.remove_all(warn_); }

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

void NicEngine::set_spd(Direction dir, const std::vector<CompiledPolicy>& policies) {
  std::vector<std::pair<uint32_t, PolicySpec>> wanted;
  wanted.reserve(policies.size());
  for (const auto& p : policies) {
    if (p.tunnel_handle != 0)
      fail(ErrorCode::Unsupported, "policy " + std::to_string(p.id) +
                                       " protects with a bundle, which a NIC cannot process; use --engine afxdp");
    PolicySpec spec = p.spec;
    if (spec.action == PolicyAction::Protect) spec.sa_handle = p.offload_handle;
    wanted.emplace_back(p.id, spec);
  }
  backend_.replace_policies(dir, wanted);
}

void NicEngine::set_outbound_spd(const std::vector<CompiledPolicy>& policies) { set_spd(Direction::Out, policies); }
void NicEngine::set_inbound_spd(const std::vector<CompiledPolicy>& policies) { set_spd(Direction::In, policies); }

std::optional<SaRuntimeCounters> NicEngine::sa_counters(uint64_t handle) {
  const xfrm::XfrmSaEntry* e = backend_.table().find(handle);
  if (!e) return std::nullopt;
  return counters_from_kernel(backend_.statistics(handle), e->key.dir);
}

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
  release_unused_buckets(on_nic_);
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

std::optional<SaRuntimeCounters> AutoEngine::sa_counters(uint64_t handle) {
  const auto it = on_nic_.find(handle);
  if (it == on_nic_.end() || !it->second) return std::nullopt;
  return nic_->sa_counters(handle);
}

void AutoEngine::finish_restore() noexcept {
  if (nic_) nic_->finish_restore();
}

std::vector<KernelSaEvent> AutoEngine::read_kernel_events() {
  if (!nic_) return {};
  std::vector<KernelSaEvent> out = nic_->read_kernel_events();
  // Only SAs still on the NIC (the handle's twin on AF_XDP has its own lifetimes).
  std::erase_if(out, [&](const KernelSaEvent& e) {
    const auto it = on_nic_.find(e.handle);
    return it == on_nic_.end() || !it->second;
  });
  return out;
}

std::string AutoEngine::engine_of(uint64_t handle) const {
  const auto it = on_nic_.find(handle);
  if (it == on_nic_.end()) return "";
  return it->second ? "nic" : "afxdp";
}

}  // namespace ov2
