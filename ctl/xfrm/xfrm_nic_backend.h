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
//   nic.replace_policies(Direction::Out, {{id, spec}, ...});  // the kernel's SPD
//
// Not thread-safe: call from the control thread.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/capabilities.h"
#include "model/policy_spec.h"
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

// The kernel SPD entries of ipsecov2 policy `id`: protect -> allow with the
// template of its SA `sa` (endpoints, reqid, mode), bypass -> allow without
// template, discard -> block.  An inbound tunnel-mode protect policy also
// gets its fwd twin, as strongSwan installs.  A packet-offloaded SA puts
// XFRMA_OFFLOAD_DEV on its protect entries.  `sa` is needed for protect only.
// Every entry asks for the index ov2_policy_index(id, its direction).
// Throws ov2::Error (NotFound: protect without an SA on the NIC; Unsupported:
// a port range the kernel's port/mask selector cannot say).  Pure.
std::vector<XfrmPolicy> kernel_policies_of(uint32_t id, const PolicySpec& spec, const XfrmSaEntry* sa);

// The handle of the SA a kernel event is about (by SPI, destination and
// protocol, either direction), if `table` holds it.
std::optional<uint64_t> handle_of(const XfrmSaTable& table, const SaId& id);

class XfrmNicBackend {
 public:
  // Opens the XFRM socket and reads the device's ESP features, in the
  // calling thread's network namespace.  Throws ov2::Error (NotFound for an
  // unknown device).
  //
  // Restart after a crash (SIGKILL: remove_all never ran): the kernel
  // policies carrying ipsecov2's index tag (ov2_policy_index) are read here
  // and kept as leftovers.  Until finish_restore(), replace_policies
  // replaces a leftover with the same kernel key in place
  // (XFRM_MSG_UPDPOLICY: no moment without the policy) instead of failing
  // with "exists", and add_sa replaces an SA the kernel already has under the
  // same SPI and destination (delete, then add: the kernel cannot change an
  // SA's keys in place).  finish_restore() then removes the leftovers the
  // restored state did not name.  Policies without the tag are never touched.
  explicit XfrmNicBackend(NicBackendConfig config);
  // Removes what is still installed (remove_all).
  ~XfrmNicBackend();
  XfrmNicBackend(const XfrmNicBackend&) = delete;
  XfrmNicBackend& operator=(const XfrmNicBackend&) = delete;

  OffloadKind offload() const { return config_.offload; }

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

  // Ends the restart recovery (see the constructor): removes the leftover
  // policies no restored policy replaced and returns how many there were.
  // Never throws; problems go to `warn`.
  size_t finish_restore(const std::function<void(const std::string&)>& warn) noexcept;
  // The tagged kernel policies found at start and not (yet) replaced.
  const std::vector<XfrmPolicy>& leftovers() const { return leftovers_; }

  // Makes the kernel's SPD hold exactly `wanted` for ipsecov2 direction `dir`
  // (policy id -> spec; a policy keeps its entries while its id stays;
  // translated with kernel_policies_of and this backend's SA table).  All
  // or nothing: when an add fails, what this call added is removed again and
  // the error (naming the policy) is thrown.
  void replace_policies(Direction dir, const std::vector<std::pair<uint32_t, PolicySpec>>& wanted);
  // The kernel entries installed for policy `id` (empty if none).
  std::vector<XfrmPolicy> installed_policies(Direction dir, uint32_t id) const;
  // Removes every policy, then every SA this backend installed (daemon
  // stop: nothing is left in the kernel).  Never throws; problems go to `warn`.
  void remove_all(const std::function<void(const std::string&)>& warn) noexcept;

 private:
  const XfrmSaEntry& entry_of(uint64_t handle) const;
  void remove_entries(const std::vector<XfrmPolicy>& entries,
                      const std::function<void(const std::string&)>& warn) noexcept;

  NicBackendConfig config_;
  EspFeatures features_;
  std::unique_ptr<XfrmSocket> socket_;
  XfrmSaTable table_;
  // ipsecov2 policy id -> its kernel entries, per ipsecov2 direction (0 in, 1 out).
  std::map<uint32_t, std::vector<XfrmPolicy>> policies_[2];
  std::vector<XfrmPolicy> leftovers_;  // a crashed run's tagged policies (until finish_restore)
  bool restoring_ = true;
};

}  // namespace ov2::xfrm
