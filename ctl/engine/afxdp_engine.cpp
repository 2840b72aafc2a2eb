#include "engine/afxdp_engine.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "common/shrink_after_erase.h"
#include "esp/crypto_backend.h"
#include "model/algorithms.h"

namespace ov2 {

Capabilities afxdp_capabilities() {
  Capabilities c;
  c.ipv6 = true;
  c.ipv4_options = true;  // the worker parses the IPv4 header length
  c.ipv6_non_ipsec_extension_headers = false;
  c.ah = false;
  c.esp = true;
  c.ah_esp_combined = false;
  c.transport = true;
  c.tunnel = true;
  c.transport_tunnel_combined = true;
  c.lso_supported = false;
  c.extended_sequence_numbers = true;
  c.udp_esp = IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TRANSPORT | IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TUNNEL |
              IPSEC_OFFLOAD_V2_TRANSPORT_OVER_UDP_ESP_ENCAPSULATION_TUNNEL;
  c.authentication_algorithms = supported_auth_mask();
  c.encryption_algorithms = supported_enc_mask();
  c.sa_offload_capacity = OV2_MAX_SAS;
  c.chacha20_poly1305 = (c.encryption_algorithms & OV2_ENCRYPTION_CHACHA20_POLY1305) != 0;
  c.engine = "afxdp";
  c.crypto = esp::crypto_backend_description(esp::crypto_backend());
  return c;
}

AfXdpEngine::AfXdpEngine(BpfPrograms& programs, Dataplane* dataplane, WarningSink warn)
    : programs_(programs),
      dataplane_(dataplane),
      warn_(std::move(warn)),
      inbound_(std::make_shared<const PolicyTable>()),
      outbound_(std::make_shared<const PolicyTable>()) {}

Capabilities AfXdpEngine::capabilities() const { return afxdp_capabilities(); }

ov2_sa_key AfXdpEngine::inbound_key(const SaSpec& sa) {
  ov2_sa_key key{};
  key.spi_be = htonl(sa.spi);
  key.family = sa.dst.family == Family::V4 ? OV2_AF_INET : OV2_AF_INET6;
  std::memcpy(key.daddr, sa.dst.bytes.data(), sa.dst.size());
  return key;
}

ov2_sa_value AfXdpEngine::inbound_value(uint64_t handle, const SaSpec& sa) {
  ov2_sa_value value{};
  value.handle = handle;
  value.flags = (sa.udp_encap ? OV2_SA_F_UDP_ENCAP : 0u) | (sa.esn ? OV2_SA_F_ESN : 0u) |
                (sa.mode == Mode::Tunnel ? OV2_SA_F_TUNNEL : 0u);
  value.encap_dport = sa.udp_encap ? sa.encap_dport : 0;
  return value;
}

void AfXdpEngine::add_sa(uint64_t handle, const SaSpec& sa) {
  if (dataplane_ != nullptr) {  // its SA table records what is installed
    if (dataplane_->has_sa(handle)) fail(ErrorCode::Internal, "the AF_XDP engine already holds this handle");
    dataplane_->install_sa(handle, sa);  // ESP objects + wire map entry
    return;
  }
  if (installed_.count(handle)) fail(ErrorCode::Internal, "the AF_XDP engine already holds this handle");
  // So the insert below cannot throw after the install; grown by doubling (reserve(size + 1) rehashed
  // the whole table every ~16 % of growth: a restore of 200 000 SAs spent its time there).
  if (static_cast<double>(installed_.size() + 1) >
      installed_.max_load_factor() * static_cast<double>(installed_.bucket_count()))
    installed_.reserve(std::max<size_t>(2 * installed_.size(), 64));
  // Outbound SAs live only in the workers' table: ov2_tx puts the handle into
  // the metadata and the worker finds the SA by it.  Inbound (outer) SAs also
  // go into ov2_wire's map so their ESP reaches the worker.
  if (sa.dir == Direction::In) programs_.put_inbound_sa(inbound_key(sa), inbound_value(handle, sa));
  installed_.emplace(handle, Installed{sa.dir, inbound_key(sa)});
}

void AfXdpEngine::delete_sa(uint64_t handle) noexcept {
  auto warn = [&](const std::exception& e) {
    if (warn_) warn_("deleting SA " + std::to_string(handle) + " from the AF_XDP engine: " + e.what());
  };
  if (dataplane_ != nullptr) {
    if (!dataplane_->has_sa(handle)) return;
    try {
      dataplane_->remove_sa(handle);  // the wire map entry first: no new packet of this SA reaches a worker
    } catch (const std::exception& e) {
      warn(e);
    }
    return;
  }
  auto it = installed_.find(handle);
  if (it == installed_.end()) return;
  try {
    if (it->second.dir == Direction::In) programs_.delete_inbound_sa(it->second.key);
  } catch (const std::exception& e) {
    warn(e);
  }
  installed_.erase(it);
  release_unused_buckets(installed_);
}

void AfXdpEngine::update_sa(uint64_t handle, uint32_t seq_hi) {
  if (dataplane_ != nullptr ? !dataplane_->has_sa(handle) : !installed_.count(handle))
    fail(ErrorCode::InvalidArgument, "the AF_XDP engine holds no SA with this handle");
  if (dataplane_ != nullptr) dataplane_->update_seq_hi(handle, seq_hi);
}

void AfXdpEngine::begin_batch(size_t expected) {
  if (dataplane_ != nullptr) dataplane_->begin_wire_batch(expected);
}

void AfXdpEngine::commit_batch() {
  if (dataplane_ != nullptr) dataplane_->commit_wire_batch();
}

void AfXdpEngine::abort_batch() noexcept {
  if (dataplane_ != nullptr) dataplane_->discard_wire_batch();
}

void AfXdpEngine::set_outbound_spd(const std::vector<CompiledPolicy>& policies) {
  CompiledSpd compiled = compile_spd(policies);  // throws before anything changes
  loaded_outbound_ = load_spd(programs_.spd_trie_fd(), programs_.spd_entries_fd(), compiled,
                              loaded_outbound_ ? &*loaded_outbound_ : nullptr);
  auto next = std::make_shared<PolicyTable>();
  next->ordered = policies;
  next->generation = outbound_.load()->generation + 1;
  outbound_.store(std::move(next));
}

void AfXdpEngine::set_inbound_spd(const std::vector<CompiledPolicy>& policies) {
  // The workers' copy (a raw-pointer snapshot they read per packet without a lock).
  if (dataplane_ != nullptr) dataplane_->set_inbound_policies(policies);
  auto next = std::make_shared<PolicyTable>();
  next->ordered = policies;
  next->generation = inbound_.load()->generation + 1;
  inbound_.store(std::move(next));
}

}  // namespace ov2
