#include "xfrm/xfrm_nic_backend.h"

#include "common/error.h"

namespace ov2::xfrm {

XfrmNicBackend::XfrmNicBackend(NicBackendConfig config)
    : config_(std::move(config)),
      features_(query_esp_features(config_.device)),
      socket_(std::make_unique<XfrmSocket>()) {
  if (config_.offload == OffloadKind::None)
    fail(ErrorCode::InvalidArgument, "the NIC engine needs an offload mode (crypto or packet)");
}

const XfrmSaEntry& XfrmNicBackend::entry_of(uint64_t handle) const {
  const XfrmSaEntry* e = table_.find(handle);
  if (!e) fail(ErrorCode::NotFound, "the NIC engine has no SA with offload handle " + std::to_string(handle));
  return *e;
}

void XfrmNicBackend::add_sa(uint64_t handle, const SaSpec& sa, uint32_t reqid) {
  if (handle == 0) fail(ErrorCode::InvalidArgument, "offload handle 0 means \"no offload\" and cannot name an SA");
  if (table_.find(handle)) fail(ErrorCode::Exists, "offload handle " + std::to_string(handle) + " is already in use");
  if (sa.inner_handle != 0)
    fail(ErrorCode::Unsupported,
         "cannot offload: transport-over-tunnel bundles cannot be expressed as one XFRM offloaded SA — use --engine "
         "afxdp");
  if (!config_.skip_capability_check) {
    const OffloadDecision d = can_offload(sa);
    if (!d.offloadable) fail(ErrorCode::Unsupported, d.reason + " — use --engine afxdp");
  }
  XfrmSaEntry entry;
  entry.key = sa_key_of(sa);
  entry.src = sa.src;
  entry.reqid = reqid ? reqid : static_cast<uint32_t>(handle);
  entry.ifindex = features_.ifindex;
  entry.offload = config_.offload;
  entry.esn = sa.esn;
  if (table_.find(entry.key))
    fail(ErrorCode::Exists, "the NIC engine already has an SA with SPI and destination of the " + describe_sa(sa));

  NewSaOptions options;
  options.reqid = entry.reqid;
  options.offload = config_.offload;
  options.ifindex = features_.ifindex;
  socket_->add_sa(sa, options, config_.device);  // throws; removes a half-installed SA itself
  table_.insert(handle, entry);
}

void XfrmNicBackend::delete_sa(uint64_t handle) {
  const XfrmSaEntry entry = entry_of(handle);
  try {
    socket_->delete_sa(entry.id());
  } catch (const Error& e) {
    if (e.code() != ErrorCode::NotFound) throw;  // gone already (expired): forget it too
  }
  table_.erase(handle);
}

void XfrmNicBackend::update_sa(uint64_t handle, uint32_t seq_hi) {
  const XfrmSaEntry& entry = entry_of(handle);
  if (!entry.esn)
    fail(ErrorCode::InvalidArgument,
         "offload handle " + std::to_string(handle) + " is not an ESN SA: UPDATE_SA only sets ESN high-order bits");
  socket_->set_esn_high_bits(entry.id(), entry.reqid, entry.key.dir, seq_hi);
}

SaReadback XfrmNicBackend::statistics(uint64_t handle) { return socket_->get_sa(entry_of(handle).id()); }

}  // namespace ov2::xfrm
