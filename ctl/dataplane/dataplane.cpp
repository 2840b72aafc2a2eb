#include "dataplane/dataplane.h"

#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "common/error.h"

namespace ov2 {

Dataplane::Dataplane(const Options& opts) : opts_(opts) {
  if (opts.wire_ifname.empty()) fail(ErrorCode::InvalidArgument, "data plane: the wire interface is required");
  if (opts.queues == 0 || opts.queues > OV2_MAX_QUEUES)
    fail(ErrorCode::InvalidArgument, "data plane: queues must be 1.." + std::to_string(OV2_MAX_QUEUES));
  sas_ = std::make_unique<SaRuntime>(opts.sa_capacity, opts.queues);
  inbound_policies_ = std::make_unique<InboundPolicies>(sas_->epochs());
}

Dataplane::~Dataplane() { stop(); }

void Dataplane::start() {
  if (running_) return;
  try {
    wire_ifindex_ = link::index_of(opts_.wire_ifname);
    if (wire_ifindex_ == 0)
      fail(ErrorCode::InvalidArgument, "wire interface " + opts_.wire_ifname + " does not exist in this namespace");
    uint8_t wire_mac[6];
    link::mac_of(opts_.wire_ifname, wire_mac);

    BpfPrograms::Options bopts;
    bopts.cookie = opts_.cookie;
    bopts.verdict_mark = opts_.verdict_mark;
    programs_ = std::make_unique<BpfPrograms>(bopts);

    OffloadDevice::Options dopts;
    dopts.host_name = opts_.offload_dev;
    dopts.nic_name = opts_.offload_peer;
    dopts.wire_ifname = opts_.wire_ifname;
    dopts.mtu = opts_.mtu;
    dopts.queues = opts_.queues;
    device_ = std::make_unique<OffloadDevice>(dopts, *programs_);

    neighbours_ = std::make_unique<NeighbourCache>();
    resolver_ = std::make_unique<NeighbourResolver>(*neighbours_, wire_ifindex_);

    for (uint32_t q = 0; q < opts_.queues; ++q) {
      Worker::Config wc;
      wc.id = q;
      wc.queue = q;
      wc.cpu = q < opts_.cpus.size() ? opts_.cpus[q] : -1;
      wc.batch = opts_.batch;
      wc.wire_ifname = opts_.wire_ifname;
      wc.nic_ifname = opts_.offload_peer;
      std::memcpy(wc.wire_mac, wire_mac, 6);
      std::memcpy(wc.host_mac, device_->host_mac(), 6);
      std::memcpy(wc.nic_mac, device_->nic_mac(), 6);
      wc.cookie = programs_->cookie();
      wc.wire_mtu = device_->wire_mtu();
      wc.umem.frames = opts_.umem_frames;
      wc.umem.frame_size = opts_.frame_size;
      wc.umem.fill_size = opts_.ring_size;
      wc.umem.comp_size = opts_.ring_size;
      wc.rings.rx_size = opts_.ring_size;
      wc.rings.tx_size = opts_.ring_size;
      wc.wire_xsks_map_fd = programs_->wire_xsks_map_fd();
      wc.tx_xsks_map_fd = programs_->tx_xsks_map_fd();
      wc.workers = opts_.queues;
      wc.handoff_slots = opts_.handoff_slots ? opts_.handoff_slots : std::min<uint32_t>(2 * opts_.ring_size, 65536);
      wc.inbound_policies = inbound_policies_.get();
      workers_.push_back(std::make_unique<Worker>(wc, *sas_, *neighbours_));
    }
    if (opts_.queues > 1) {
      std::vector<Worker*> peers;
      for (auto& w : workers_) peers.push_back(w.get());
      for (auto& w : workers_) w->connect(peers);
    }
    for (auto& w : workers_) w->start();
    // The wire last: inbound ESP is redirected only once a worker listens.
    programs_->attach_wire(wire_ifindex_);
    stop_housekeeping_.store(false);
    housekeeping_ = std::thread([this] { housekeeping(); });
    running_ = true;
  } catch (...) {
    running_ = true;  // let stop() tear down whatever got built
    stop();
    throw;
  }
}

void Dataplane::stop() {
  if (!running_) return;
  stop_housekeeping_.store(true);
  if (housekeeping_.joinable()) housekeeping_.join();
  if (programs_) {
    try {
      programs_->detach_all();
    } catch (...) {
      // Deleting the device below detaches its programs anyway.
    }
  }
  for (auto& w : workers_) w->stop();
  workers_.clear();
  resolver_.reset();
  device_.reset();
  programs_.reset();
  neighbours_.reset();
  sas_->reclaim();  // no worker left: everything retired is freed (keys wiped)
  inbound_policies_->reclaim();
  running_ = false;
}

void Dataplane::housekeeping() {
  // After deletes, give the freed SA memory (ESP objects, OpenSSL contexts)
  // back to the kernel: glibc keeps it in its arenas otherwise, and the RSS
  // of a daemon that once held 100 000 SAs would never come down.  Trimmed
  // every kTrimAfterFreed SAs during a long run of deletes, and once at its
  // end (a tick that freed nothing after ticks that did), so that a few
  // hundred deletes are given back too.  (Key storage is not malloc: it
  // unmaps its own empty chunks, common/secure_bytes.h.)
  constexpr size_t kTrimAfterFreed = 1024;
  size_t freed_since_trim = 0;
  while (!stop_housekeeping_.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    size_t freed = 0;
    sas_->reclaim(&freed);
    inbound_policies_->reclaim();
    freed_since_trim += freed;
    if (freed_since_trim >= kTrimAfterFreed || (freed == 0 && freed_since_trim > 0)) {
      malloc_trim(0);
      freed_since_trim = 0;
    }
  }
}

namespace {

ov2_sa_value wire_value_for(uint64_t handle, const SaSpec& spec) {
  ov2_sa_value v{};
  v.handle = handle;
  v.flags = (spec.udp_encap ? OV2_SA_F_UDP_ENCAP : 0u) | (spec.esn ? OV2_SA_F_ESN : 0u) |
            (spec.mode == Mode::Tunnel ? OV2_SA_F_TUNNEL : 0u);
  v.encap_dport = spec.udp_encap ? spec.encap_dport : 0;
  return v;
}

}  // namespace

void Dataplane::install_sa(uint64_t handle, const SaSpec& spec) {
  if (!running_) fail(ErrorCode::InvalidArgument, "data plane not started: start it before installing SAs");
  sas_->install(handle, spec);
  if (spec.dir == Direction::Out && !spec.dst.is_any()) {
    // Resolve the peer's next hop now, so the first packets of the tunnel are
    // not dropped while the neighbour entry is learned.
    uint8_t mac[6];
    const uint8_t family = spec.dst.family == Family::V4 ? 4 : 6;
    std::array<uint8_t, 17> peer{};
    peer[0] = family;
    std::copy(spec.dst.bytes.begin(), spec.dst.bytes.end(), peer.begin() + 1);
    if (neighbours_->lookup(family, spec.dst.bytes.data(), mac)) {
      last_neighbour_request_ = {};  // resolved: a later miss asks again
    } else if (peer != last_neighbour_request_) {
      neighbours_->request(family, spec.dst.bytes.data());
      last_neighbour_request_ = peer;
    }
  }
  if (spec.dir == Direction::In) {
    try {
      if (wire_batch_) {
        wire_batch_->handles.push_back(handle);
        wire_batch_->keys.push_back(inbound_key_for(spec));
        wire_batch_->values.push_back(wire_value_for(handle, spec));
        return;
      }
      programs_->put_inbound_sa(inbound_key_for(spec), wire_value_for(handle, spec));
    } catch (...) {
      sas_->remove(handle);
      throw;
    }
  }
}

void Dataplane::begin_wire_batch(size_t expected) {
  wire_batch_.emplace();
  wire_batch_->removed = false;
  wire_batch_->handles.reserve(expected);
  wire_batch_->keys.reserve(expected);
  wire_batch_->values.reserve(expected);
}

void Dataplane::commit_wire_batch() {
  if (!wire_batch_) return;
  WireBatch batch = std::move(*wire_batch_);
  wire_batch_.reset();
  if (batch.removed) {  // keep only the entries whose SA is still installed under that key
    size_t kept = 0;
    for (size_t i = 0; i < batch.handles.size(); ++i) {
      ov2_sa_key key{};
      if (!sas_->inbound_key_of(batch.handles[i], &key) || std::memcmp(&key, &batch.keys[i], sizeof key) != 0) continue;
      batch.keys[kept] = batch.keys[i];
      batch.values[kept] = batch.values[i];
      ++kept;
    }
    batch.keys.resize(kept);
    batch.values.resize(kept);
  }
  programs_->put_new_inbound_sas(batch.keys, batch.values);
}

void Dataplane::remove_sa(uint64_t handle) {
  if (wire_batch_) wire_batch_->removed = true;
  ov2_sa_key key{};
  const bool inbound = sas_->inbound_key_of(handle, &key);
  if (inbound && programs_) {
    try {
      programs_->delete_inbound_sa(key);
    } catch (const Error&) {
      // Already gone from the map: the table entry is what matters now.
    }
  }
  sas_->remove(handle);
}

void Dataplane::update_seq_hi(uint64_t handle, uint32_t seq_hi) { sas_->update_seq_hi(handle, seq_hi); }

bool Dataplane::take_failed_sas(std::vector<uint64_t>& out) {
  bool complete = true;
  for (const auto& w : workers_) complete = w->take_failed_sas(out) && complete;
  return complete;
}

DataplaneCounters Dataplane::counters() const {
  DataplaneCounters c;
  for (const auto& w : workers_) {
    WorkerCounterArray a = w->counters();
    for (size_t i = 0; i < a.size(); ++i) c.worker[i] += a[i];
    c.per_worker.push_back(a);
    c.wire_sockets.push_back(w->wire_socket_stats());
    c.nic_sockets.push_back(w->nic_socket_stats());
  }
  if (programs_) {
    c.wire = programs_->wire_counters();
    c.tx = programs_->tx_counters();
    c.deliver = programs_->deliver_counters();
    c.verdict = programs_->verdict_counters();
    c.verdict_status = programs_->verdict_status_counters();
  }
  if (resolver_) c.neighbour_resolutions = resolver_->resolutions();
  return c;
}

}  // namespace ov2
