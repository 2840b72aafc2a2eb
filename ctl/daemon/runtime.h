// Everything the daemon runs besides the control socket: the BPF programs,
// the engine and the data plane (wire attachment, offload device, AF_XDP
// workers).  Created from the configuration; destroying it removes
// everything it attached or created.
//
// With a wire interface the Dataplane (ctl/dataplane/dataplane.h) is started
// and owns the programs; without one only the programs are loaded (SAs and
// policies still reach the BPF maps, no packet is processed).
#pragma once

#include <memory>

#include "config/daemon_config.h"
#include "dataplane/bpf_programs.h"
#include "dataplane/dataplane.h"
#include "engine/afxdp_engine.h"
#include "engine/nic_engine.h"

namespace ov2 {

class Runtime {
 public:
  // Loads the BPF programs and creates the engine named in `config`.  Throws
  // ov2::Error with the reason (unknown engine, BPF load failure, missing
  // interface).
  explicit Runtime(const DaemonConfig& config);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // The engine the control plane talks to: AF_XDP, NIC, or auto (per SA).
  Engine& engine() { return selected_ ? *selected_ : static_cast<Engine&>(*engine_); }
  AfXdpEngine& afxdp_engine() { return *engine_; }
  BpfPrograms& programs() { return dataplane_ ? dataplane_->programs() : *programs_; }
  Dataplane* dataplane() { return dataplane_.get(); }

 private:
  // The one place where the data plane starts (from the configuration):
  // with a wire, the Dataplane attaches ov2_wire, creates the offload device
  // with ov2_tx/ov2_deliver/ov2_verdict and starts the AF_XDP workers.
  void start_dataplane(const DaemonConfig& config);

  // Declaration order is destruction order in reverse: engine first.
  std::unique_ptr<Dataplane> dataplane_;   // with a wire: owns the programs
  std::unique_ptr<BpfPrograms> programs_;  // without a wire
  std::unique_ptr<AfXdpEngine> engine_;
  std::unique_ptr<Engine> selected_;  // NicEngine or AutoEngine; null: engine_ (afxdp)
};

}  // namespace ov2
