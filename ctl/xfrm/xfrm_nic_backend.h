// The NIC engine's kernel side in one object: what NicEngine (ctl/engine/)
// calls for ADD_SA / DELETE_SA / UPDATE_SA / capabilities / statistics when
// the SAs go to a crypto-capable NIC through XFRM (XFRMA_OFFLOAD_DEV).
//
// One SA per offload handle (the handle is the daemon's; this object only
// records it).  Nothing is left installed when an add fails.
//
//   XfrmNicBackend nic({.device = "eth0", .offload = OffloadKind::Crypto});
//   if (auto d = nic.can_offload(sa); !d.offloadable) -> fall back to AF_XDP, log d.reason
//   nic.add_sa(handle, sa);          // throws ov2::Error in plain words
//   nic.update_sa(handle, seq_hi);   // UPDATE_SA
//   nic.delete_sa(handle);           // DELETE_SA
//   nic.capabilities();              // NDIS_IPSEC_OFFLOAD_V2 form
//
// Not thread-safe: call from the control thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "engine/capabilities.h"
#include "model/sa_spec.h"
#include "xfrm/offload_caps.h"
#include "xfrm/xfrm_messages.h"
#include "xfrm/xfrm_sa_table.h"
#include "xfrm/xfrm_socket.h"

namespace ov2::xfrm {

struct NicBackendConfig {
  std::string device;                         // the offload NIC, e.g. "eth0"
  OffloadKind offload = OffloadKind::Crypto;  // Packet also needs policies (XfrmSocket::add_policy)
  // Send SAs to the kernel even when the device says esp-hw-offload is off
  // (tests on machines without a capable NIC; the kernel then decides).
  bool skip_capability_check = false;
};

class XfrmNicBackend {
 public:
  // Opens the XFRM socket and reads the device's ESP features, in the
  // calling thread's network namespace.  Throws ov2::Error (NotFound for an
  // unknown device).
  explicit XfrmNicBackend(NicBackendConfig config);

  // NDIS_IPSEC_OFFLOAD_V2 capabilities of the device (esp = false without
  // esp-hw-offload).
  Capabilities capabilities() const { return nic_capabilities(features_); }
  // Whether `sa` could go to the device, and if not, why (for --engine auto).
  OffloadDecision can_offload(const SaSpec& sa) const { return xfrm::can_offload(sa, features_, config_.offload); }
  const EspFeatures& features() const { return features_; }

  // ADD_SA for one SA under `handle` (non-zero).  Checks can_offload (throws
  // Unsupported with its reason), installs the SA with XFRMA_OFFLOAD_DEV,
  // verifies the kernel kept the offload, records the handle.  reqid 0 uses
  // the handle's low 32 bits (packet-offload policies name the SA by reqid).
  // Throws ov2::Error with the kernel's refusal in plain words.
  void add_sa(uint64_t handle, const SaSpec& sa, uint32_t reqid = 0);
  // DELETE_SA.  Unknown handle: ov2::Error(NotFound).  If the kernel already
  // lost the SA (expired), the handle is forgotten anyway.
  void delete_sa(uint64_t handle);
  // UPDATE_SA: new ESN high-order bits.  Unknown handle: NotFound; non-ESN
  // SA: InvalidArgument (NDIS semantics).
  void update_sa(uint64_t handle, uint32_t seq_hi);
  // The kernel's counters and replay state of the SA.
  SaReadback statistics(uint64_t handle);
  // The handle table (for listings and tests).
  const XfrmSaTable& table() const { return table_; }

 private:
  const XfrmSaEntry& entry_of(uint64_t handle) const;

  NicBackendConfig config_;
  EspFeatures features_;
  std::unique_ptr<XfrmSocket> socket_;
  XfrmSaTable table_;
};

}  // namespace ov2::xfrm
