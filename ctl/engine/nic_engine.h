// The NIC engine: SAs go to a crypto-capable NIC through the kernel's XFRM
// device offload (XFRMA_OFFLOAD_DEV), with the same offload handles as the
// AF_XDP engine.  The kernel side is ctl/xfrm (XfrmNicBackend).
//
// AutoEngine puts each SA where it can run: on the NIC when the NIC can
// offload it (AES-GCM, no UDP encapsulation, esp-hw-offload on), otherwise on
// the AF_XDP engine, and says which and why in the log.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>

#include "engine/afxdp_engine.h"
#include "engine/engine.h"
#include "xfrm/xfrm_nic_backend.h"

namespace ov2 {

// The SA counters of a kernel XFRM state (GETSA), in the AF_XDP engine's
// form: curlft packets/bytes; stats.replay + stats.replay_window as
// "replayed", stats.integrity_failed as "auth-failed"; outbound next_seq =
// (oseq_hi:oseq) + 1, inbound highest_seq = seq_hi:seq (the high halves only
// with ESN).
SaRuntimeCounters counters_from_kernel(const xfrm::SaReadback& state, Direction dir);

// The engine's event for a decoded kernel SA message, if `table` holds the SA.
std::optional<KernelSaEvent> kernel_sa_event(const xfrm::XfrmSaTable& table, const xfrm::KernelSaMessage& msg);

class NicEngine : public Engine {
 public:
  // Opens XFRM for `device` in the current network namespace.  `offload`:
  // Crypto (the kernel's SPD steers packets to NIC-held SAs) or Packet (the
  // NIC also holds the policies: XFRMA_OFFLOAD_DEV on them too).  Throws
  // ov2::Error (NotFound for an unknown device).
  NicEngine(const std::string& device, WarningSink warn, xfrm::OffloadKind offload = xfrm::OffloadKind::Crypto);
  // Removes every kernel policy and SA it installed (nothing left behind).
  ~NicEngine() override;

  Capabilities capabilities() const override;
  // Sends the SA to the kernel even when the device reports no ESP offload:
  // the kernel's answer (or the missing offload, read back) is the error.
  void add_sa(uint64_t handle, const SaSpec& sa) override;
  void delete_sa(uint64_t handle) noexcept override;
  void update_sa(uint64_t handle, uint32_t seq_hi) override;
  // SAs on a NIC are used through the kernel's own SPD: every policy given
  // here becomes kernel XFRM policies (xfrm::kernel_policies_of),
  // replacing this direction's previous ones, all or nothing.
  void set_outbound_spd(const std::vector<CompiledPolicy>& policies) override;
  void set_inbound_spd(const std::vector<CompiledPolicy>& policies) override;
  // The kernel's counters of a NIC-held SA; nullopt for other handles.
  std::optional<SaRuntimeCounters> sa_counters(uint64_t handle) override;

  // Removes the policies a crashed run left that the restore did not take
  // over (XfrmNicBackend::finish_restore) and logs how many.
  void finish_restore() noexcept override;
  // XFRMNLGRP_EXPIRE / XFRMNLGRP_SA of this namespace (XfrmEventSocket).
  int kernel_event_fd() const override { return events_ ? events_->fd() : -1; }
  std::vector<KernelSaEvent> read_kernel_events() override;
  // The event for one kernel message about an SA this engine holds, or
  // nullopt (another SA, another message type).  What read_kernel_events
  // does with each message the socket decoded.
  std::optional<KernelSaEvent> on_kernel_message(const xfrm::KernelSaMessage& msg) const;

  // Whether `sa` could be offloaded to this NIC, and if not, why.
  xfrm::OffloadDecision can_offload(const SaSpec& sa) const { return backend_.can_offload(sa); }
  bool holds(uint64_t handle) const;

 private:
  void set_spd(Direction dir, const std::vector<CompiledPolicy>& policies);

  xfrm::XfrmNicBackend backend_;
  std::unique_ptr<xfrm::XfrmEventSocket> events_;
  std::string device_;
  WarningSink warn_;
};

class AutoEngine : public Engine {
 public:
  // `nic` may be null (no wire, or XFRM unavailable): then everything goes to AF_XDP.
  AutoEngine(std::unique_ptr<NicEngine> nic, AfXdpEngine& afxdp, WarningSink warn);

  Capabilities capabilities() const override;
  void add_sa(uint64_t handle, const SaSpec& sa) override;
  void delete_sa(uint64_t handle) noexcept override;
  void update_sa(uint64_t handle, uint32_t seq_hi) override;
  // The AF_XDP engine's (the NIC engine writes each SA as it comes).
  void begin_batch(size_t expected) override { afxdp_.begin_batch(expected); }
  void commit_batch() override { afxdp_.commit_batch(); }
  void abort_batch() noexcept override { afxdp_.abort_batch(); }
  // Policies go to the engine that holds their SA (bypass/discard: AF_XDP).
  void set_outbound_spd(const std::vector<CompiledPolicy>& policies) override;
  void set_inbound_spd(const std::vector<CompiledPolicy>& policies) override;

  // "nic" or "afxdp" for an installed handle, "" if unknown.
  std::string engine_of(uint64_t handle) const override;
  std::optional<SaRuntimeCounters> sa_counters(uint64_t handle) override;
  void finish_restore() noexcept override;
  int kernel_event_fd() const override { return nic_ ? nic_->kernel_event_fd() : -1; }
  std::vector<KernelSaEvent> read_kernel_events() override;

 private:
  Engine& holder(uint64_t handle);
  void split(const std::vector<CompiledPolicy>& policies, std::vector<CompiledPolicy>& to_nic,
             std::vector<CompiledPolicy>& to_afxdp) const;

  std::unique_ptr<NicEngine> nic_;
  AfXdpEngine& afxdp_;
  WarningSink warn_;
  std::unordered_map<uint64_t, bool> on_nic_;  // handle -> held by the NIC
};

}  // namespace ov2
