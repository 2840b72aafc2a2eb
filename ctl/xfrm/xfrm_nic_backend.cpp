#include "xfrm/xfrm_nic_backend.h"

#include <algorithm>

#include "common/error.h"

namespace ov2::xfrm {

XfrmNicBackend::XfrmNicBackend(NicBackendConfig config)
    : config_(std::move(config)),
      features_(query_esp_features(config_.device)),
      socket_(std::make_unique<XfrmSocket>()) {
  if (config_.offload == OffloadKind::None)
    fail(ErrorCode::InvalidArgument, "the NIC engine needs an offload mode (crypto or packet)");
  for (const XfrmPolicy& p : socket_->dump_policies())
    if (is_ov2_policy_index(p.index)) leftovers_.push_back(p);
}

std::optional<uint64_t> handle_of(const XfrmSaTable& table, const SaId& id) {
  for (Direction dir : {Direction::Out, Direction::In})
    if (auto h = table.find(XfrmSaKey{id.spi, id.dst, id.proto, dir})) return h;
  return std::nullopt;
}

size_t XfrmNicBackend::finish_restore(const std::function<void(const std::string&)>& warn) noexcept {
  restoring_ = false;
  const size_t n = leftovers_.size();
  for (const XfrmPolicy& p : leftovers_) {
    try {
      socket_->delete_policy_by_index(p.index, p.dir);
    } catch (const Error& err) {
      if (err.code() != ErrorCode::NotFound && warn)
        warn(std::string("NIC engine: removing a policy a previous run left: ") + err.what());
    }
  }
  leftovers_.clear();
  return n;
}

XfrmNicBackend::~XfrmNicBackend() { remove_all(nullptr); }

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
  entry.mode = sa.mode;
  if (table_.find(entry.key))
    fail(ErrorCode::Exists, "the NIC engine already has an SA with SPI and destination of the " + describe_sa(sa));

  NewSaOptions options;
  options.reqid = entry.reqid;
  options.offload = config_.offload;
  options.ifindex = features_.ifindex;
  try {
    socket_->add_sa(sa, options, config_.device);  // throws; removes a half-installed SA itself
  } catch (const Error& e) {
    // Restoring after a crash: the saved state says this SA was ours, and
    // the kernel still has it.  Its keys cannot change in place: replace it.
    if (!restoring_ || e.code() != ErrorCode::Exists) throw;
    socket_->delete_sa(entry.id());
    socket_->add_sa(sa, options, config_.device);
  }
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

namespace {

int dir_slot(Direction dir) { return dir == Direction::In ? 0 : 1; }

PortMask port_selector(uint32_t id, const char* which, const PortRange& r) {
  const auto pm = port_mask_of(r.lo, r.hi);
  if (!pm)
    fail(ErrorCode::Unsupported, "policy " + std::to_string(id) + ": " + which + " range " + std::to_string(r.lo) +
                                     "-" + std::to_string(r.hi) +
                                     " cannot be said in the kernel's SPD (its port selector is a value and a mask): "
                                     "use one port, a power-of-two block aligned to its size, or --engine afxdp");
  return *pm;
}

}  // namespace

std::vector<XfrmPolicy> kernel_policies_of(uint32_t id, const PolicySpec& spec, const XfrmSaEntry* sa) {
  XfrmPolicy p;
  p.dir = spec.dir == Direction::In ? XfrmPolicyDir::In : XfrmPolicyDir::Out;
  p.src = spec.src;
  p.dst = spec.dst;
  p.proto = spec.proto == kAnyProto ? 0 : static_cast<uint8_t>(spec.proto);
  const PortMask sport = port_selector(id, "source port", spec.sport);
  const PortMask dport = port_selector(id, "destination port", spec.dport);
  p.sport = sport.port;
  p.sport_mask = sport.mask;
  p.dport = dport.port;
  p.dport_mask = dport.mask;
  p.priority = spec.priority;
  p.block = spec.action == PolicyAction::Discard;
  p.index = ov2_policy_index(id, p.dir);
  if (spec.action != PolicyAction::Protect) return {p};

  if (!sa)
    fail(ErrorCode::NotFound, "policy " + std::to_string(id) + " protects with SA " + std::to_string(spec.sa_handle) +
                                  ", which the NIC engine does not hold");
  if (sa->key.dir != spec.dir)
    fail(ErrorCode::InvalidArgument, "policy " + std::to_string(id) + " is " + to_string(spec.dir) +
                                         "bound but its SA is " + to_string(sa->key.dir) + "bound");
  p.has_template = true;
  p.tmpl_src = sa->src;
  p.tmpl_dst = sa->key.dst;
  p.reqid = sa->reqid;
  p.mode = sa->mode;
  if (sa->offload == OffloadKind::Packet) p.offload_ifindex = sa->ifindex;
  std::vector<XfrmPolicy> out{p};
  if (spec.dir == Direction::In && sa->mode == Mode::Tunnel) {
    XfrmPolicy fwd = p;
    fwd.dir = XfrmPolicyDir::Fwd;
    fwd.index = ov2_policy_index(id, fwd.dir);
    out.push_back(fwd);
  }
  return out;
}

std::vector<XfrmPolicy> XfrmNicBackend::installed_policies(Direction dir, uint32_t id) const {
  const auto& m = policies_[dir_slot(dir)];
  const auto it = m.find(id);
  return it == m.end() ? std::vector<XfrmPolicy>{} : it->second;
}

void XfrmNicBackend::remove_entries(const std::vector<XfrmPolicy>& entries,
                                    const std::function<void(const std::string&)>& warn) noexcept {
  for (const auto& e : entries) {
    try {
      socket_->delete_policy(e);
    } catch (const Error& err) {
      if (err.code() != ErrorCode::NotFound && warn)
        warn(std::string("NIC engine: removing a kernel policy: ") + err.what());
    }
  }
}

void XfrmNicBackend::replace_policies(Direction dir, const std::vector<std::pair<uint32_t, PolicySpec>>& wanted) {
  auto& installed = policies_[dir_slot(dir)];
  // Translate everything first: a policy the kernel cannot express changes nothing.
  std::map<uint32_t, std::vector<XfrmPolicy>> next;
  for (const auto& [id, spec] : wanted) {
    if (spec.dir != dir) fail(ErrorCode::Internal, "policy " + std::to_string(id) + " given for the wrong direction");
    next[id] = kernel_policies_of(id, spec, table_.find(spec.sa_handle));
  }
  std::vector<std::vector<XfrmPolicy>*> added;
  for (auto& [id, entries] : next) {
    const auto it = installed.find(id);
    if (it != installed.end() && it->second == entries) continue;
    if (it != installed.end())
      fail(ErrorCode::Internal, "policy " + std::to_string(id) + " changed its kernel entries while installed");
    std::vector<XfrmPolicy> done;
    try {
      for (const auto& e : entries) {
        // A crashed run's entry with the same key is replaced in place.
        const auto left = std::find_if(leftovers_.begin(), leftovers_.end(),
                                       [&](const XfrmPolicy& l) { return same_kernel_key(l, e); });
        socket_->add_policy(e, config_.device, /*replace=*/left != leftovers_.end());
        if (left != leftovers_.end()) leftovers_.erase(left);
        done.push_back(e);
      }
    } catch (const Error& err) {
      remove_entries(done, nullptr);
      for (auto* a : added) remove_entries(*a, nullptr);
      const std::string hint = err.code() == ErrorCode::Exists
                                   ? " (the kernel keeps one policy per selector and direction: another ipsecov2 "
                                     "policy, or one added with 'ip xfrm policy', has the same selectors)"
                                   : "";
      throw Error(err.code(), "policy " + std::to_string(id) + ": " + err.what() + hint);
    }
    added.push_back(&entries);
  }
  for (const auto& [id, entries] : installed)
    if (!next.contains(id)) remove_entries(entries, nullptr);
  installed = std::move(next);
}

void XfrmNicBackend::remove_all(const std::function<void(const std::string&)>& warn) noexcept {
  for (auto& m : policies_) {
    for (const auto& [id, entries] : m) remove_entries(entries, warn);
    m.clear();
  }
  for (uint64_t h : table_.handles()) {
    try {
      delete_sa(h);
    } catch (const std::exception& e) {
      if (warn) warn("NIC engine: removing SA " + std::to_string(h) + ": " + e.what());
      table_.erase(h);
    }
  }
}

}  // namespace ov2::xfrm
