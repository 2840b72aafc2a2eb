// The AF_XDP engine: inbound SAs go into ov2_wire's SA map (so matching ESP is
// steered to the worker), the outbound SPD is compiled into ov2_tx's maps, and
// the SPDs are published as snapshots for the packet path.
//
// With a running Dataplane (daemon started with --wire), SAs are installed
// through it: its SaRuntime is the workers' SA table (ESP objects with the
// keys, found by handle slot) and it writes the wire map entry itself.
// Without one (no wire yet), the engine writes the wire map directly, so the
// control plane and the BPF maps work on their own; no keys are kept here.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <unordered_map>

#include "dataplane/bpf_programs.h"
#include "dataplane/dataplane.h"
#include "engine/engine.h"
#include "engine/policy_table.h"

namespace ov2 {

class AfXdpEngine : public Engine {
 public:
  // `programs` (and `dataplane`, if not null: a started Dataplane whose
  // programs these are) must outlive the engine; the daemon's runtime owns them.
  AfXdpEngine(BpfPrograms& programs, Dataplane* dataplane, WarningSink warn);

  Capabilities capabilities() const override;
  void add_sa(uint64_t handle, const SaSpec& sa) override;
  void delete_sa(uint64_t handle) noexcept override;
  void update_sa(uint64_t handle, uint32_t seq_hi) override;
  // With a data plane: Dataplane::begin_wire_batch / commit_wire_batch / discard_wire_batch.
  void begin_batch(size_t expected) override;
  void commit_batch() override;
  void abort_batch() noexcept override;
  void set_outbound_spd(const std::vector<CompiledPolicy>& policies) override;
  void set_inbound_spd(const std::vector<CompiledPolicy>& policies) override;

  // For the worker: the current SPD snapshots (the inbound one is for the
  // RFC 4301 §5.2 check of decrypted packets).  Load once per batch; a
  // snapshot stays valid as long as the caller holds the shared_ptr.
  std::shared_ptr<const PolicyTable> inbound_policies() const { return inbound_.load(); }
  std::shared_ptr<const PolicyTable> outbound_policies() const { return outbound_.load(); }

  // The key ov2_wire looks an inbound SA up by, and the value stored for it.
  static ov2_sa_key inbound_key(const SaSpec& sa);
  static ov2_sa_value inbound_value(uint64_t handle, const SaSpec& sa);

 private:
  struct Installed {
    Direction dir;
    ov2_sa_key key;  // inbound: the wire map key
  };

  BpfPrograms& programs_;
  Dataplane* dataplane_;
  WarningSink warn_;
  // Without a data plane only: what is in the wire map (with one, its SA
  // table is the record, and a second one cost 64 bytes per SA, issue #6).
  std::unordered_map<uint64_t, Installed> installed_;
  std::atomic<std::shared_ptr<const PolicyTable>> inbound_;
  std::atomic<std::shared_ptr<const PolicyTable>> outbound_;
  std::optional<CompiledSpd> loaded_outbound_;  // what is in ov2_tx's maps now
};

// AF_XDP engine's capabilities (also used by tests without BPF).
Capabilities afxdp_capabilities();

}  // namespace ov2
