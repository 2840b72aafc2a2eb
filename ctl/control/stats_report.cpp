#include "control/stats_report.h"

#include <unistd.h>

#include <array>
#include <map>

#include "common/secure_bytes.h"
#include "dataplane/dataplane.h"
#include "esp/crypto_backend.h"
#include "esp/esp.h"
#include "model/sa_json.h"

namespace ov2 {

using nlohmann::json;

namespace {

// Names in the enum order of shared/ov2_abi.h (the static_asserts keep them in step).
constexpr std::array<const char*, OV2_WIRE_COUNTER_MAX> kWireNames = {"rx",
                                                                      "pass-not-ip",
                                                                      "pass-not-esp",
                                                                      "pass-fragment",
                                                                      "pass-ike",
                                                                      "pass-keepalive",
                                                                      "pass-no-sa",
                                                                      "pass-malformed",
                                                                      "pass-encap-mismatch",
                                                                      "pass-no-worker",
                                                                      "redirect",
                                                                      "redirect-fragment",
                                                                      "pass-fragment-no-sa",
                                                                      "pass-ext-too-deep"};
constexpr std::array<const char*, OV2_TX_COUNTER_MAX> kTxNames = {
    "rx", "protect", "bypass", "discard", "no-policy", "not-ip", "malformed", "meta-fail", "no-worker"};
constexpr std::array<const char*, OV2_DELIVER_COUNTER_MAX> kDeliverNames = {"rx",       "accepted",  "bad-cookie",
                                                                            "not-shim", "malformed", "meta-fail"};
constexpr std::array<const char*, OV2_VERDICT_COUNTER_MAX> kVerdictNames = {
    "rx",         "accept",       "drop-no-meta",          "drop-not-done", "drop-status",   "sa-delete-req",
    "event-lost", "accept-plain", "redirect-wire-ingress", "drop-no-wire",  "drop-vlan-push"};
constexpr std::array<const char*, OV2_CRYPTO_STATUS_COUNT> kCryptoStatusNames = {"CRYPTO_SUCCESS",
                                                                                 "CRYPTO_GENERIC_ERROR",
                                                                                 "CRYPTO_TRANSPORT_AH_AUTH_FAILED",
                                                                                 "CRYPTO_TRANSPORT_ESP_AUTH_FAILED",
                                                                                 "CRYPTO_TUNNEL_AH_AUTH_FAILED",
                                                                                 "CRYPTO_TUNNEL_ESP_AUTH_FAILED",
                                                                                 "CRYPTO_INVALID_PACKET_SYNTAX",
                                                                                 "CRYPTO_INVALID_PROTOCOL"};

template <size_t N>
json named(const std::array<const char*, N>& names, const std::vector<uint64_t>& values) {
  json j = json::object();
  for (size_t i = 0; i < N; ++i) j[names[i]] = i < values.size() ? values[i] : 0;
  return j;
}

json worker_json(const WorkerCounterArray& a) {
  json j = json::object();
  for (size_t i = 0; i < a.size(); ++i) j[worker_counter_name(static_cast<WorkerCounter>(i))] = a[i];
  return j;
}

json xsk_json(const XskPort::Stats& s) {
  return json{{"rx_dropped", s.rx_dropped},
              {"rx_invalid_descs", s.rx_invalid_descs},
              {"tx_invalid_descs", s.tx_invalid_descs},
              {"rx_ring_full", s.rx_ring_full},
              {"rx_fill_ring_empty_descs", s.rx_fill_ring_empty_descs},
              {"tx_ring_empty_descs", s.tx_ring_empty_descs}};
}

json sa_json(const SaRecord& r, const SaRuntimeCounters& c) {
  json errors = json::object();
  for (size_t i = 0; i < c.by_reason.size(); ++i) {
    const auto reason = static_cast<esp::Reason>(i);
    if (reason == esp::Reason::Ok) continue;  // "ok" is `packets`
    errors[esp::reason_name(reason)] = c.by_reason[i];
  }
  return json{{"handle", handle_to_string(r.handle)}, {"dir", to_string(r.spec.dir)}, {"mode", to_string(r.spec.mode)},
              {"spi", handle_to_string(r.spec.spi)},  {"packets", c.packets},         {"bytes", c.bytes},
              {"errors", std::move(errors)},          {"next_seq", c.next_seq},       {"highest_seq", c.highest_seq}};
}

}  // namespace

static_assert(kWireNames.size() == OV2_WIRE_COUNTER_MAX);
static_assert(kVerdictNames.size() == OV2_VERDICT_COUNTER_MAX);

std::string crypto_status_ndis_name(uint32_t status) {
  return status < kCryptoStatusNames.size() ? kCryptoStatusNames[status] : "CRYPTO_STATUS_" + std::to_string(status);
}

namespace {

json key_storage_json(const KeyArenaStats& s) {
  const auto page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  return json{{"slots_in_use", s.slots_in_use},
              {"mapped_bytes", s.pages * page},
              {"locked_bytes", s.locked_pages * page},
              {"reserve_bytes", s.reserve_pages * page}};
}

}  // namespace

json stats_json(const ControlPlane& plane, const Dataplane* dataplane) {
  json out;
  const bool running = dataplane != nullptr && dataplane->running();
  out["dataplane"] = {{"running", running}, {"crypto", esp::backend_name(esp::crypto_backend())}};
  // Key storage (common/secure_bytes.h): raw keys and expanded key schedules.
  out["key_storage"] = {{"keys", key_storage_json(key_arena_stats())},
                        {"schedules", key_storage_json(key_block_stats())}};
  if (!running) out["dataplane"]["note"] = "the data plane is not running (ipsecov2d has no --wire): counters are zero";
  out["sas"] = json::array();
  for (const SaRecord* r : plane.sas().list()) {
    SaRuntimeCounters c{};
    const char* counted_by = "afxdp";
    try {
      if (auto kernel = plane.engine_sa_counters(r->handle)) {
        c = *kernel;
        counted_by = "kernel";
      } else if (running) {
        c = dataplane->sa_counters(r->handle);
      }
    } catch (...) {
      // Not installed in the workers' table (cannot happen after a successful
      // add), or the kernel lost the NIC-held SA (expired): zeros.
    }
    out["sas"].push_back(sa_json(*r, c));
    out["sas"].back()["counted_by"] = counted_by;
  }
  if (!running) return out;

  const DataplaneCounters dc = dataplane->counters();
  out["dataplane"]["queues"] = dc.per_worker.size();
  out["worker"] = worker_json(dc.worker);
  out["per_queue"] = json::array();
  for (const auto& w : dc.per_worker) out["per_queue"].push_back(worker_json(w));
  out["xsk"] = {{"wire", json::array()}, {"nic", json::array()}};
  for (const auto& s : dc.wire_sockets) out["xsk"]["wire"].push_back(xsk_json(s));
  for (const auto& s : dc.nic_sockets) out["xsk"]["nic"].push_back(xsk_json(s));
  json status = json::object();
  for (size_t i = 0; i < kCryptoStatusNames.size(); ++i)
    status[kCryptoStatusNames[i]] = i < dc.verdict_status.size() ? dc.verdict_status[i] : 0;
  // ov2_verdict counts only failing statuses in its status map; a packet with
  // CRYPTO_SUCCESS is exactly an accepted one.
  if (dc.verdict.size() > OV2_VERDICT_ACCEPT)
    status[kCryptoStatusNames[CRYPTO_SUCCESS]] =
        status[kCryptoStatusNames[CRYPTO_SUCCESS]].get<uint64_t>() + dc.verdict[OV2_VERDICT_ACCEPT];
  out["bpf"] = {{"wire", named(kWireNames, dc.wire)},
                {"tx", named(kTxNames, dc.tx)},
                {"deliver", named(kDeliverNames, dc.deliver)},
                {"verdict", named(kVerdictNames, dc.verdict)},
                {"verdict_status", std::move(status)}};
  out["neighbour_resolutions"] = dc.neighbour_resolutions;
  return out;
}

namespace {

// Label values are names and handles, but escape anyway (text format rules).
std::string label_value(const std::string& v) {
  std::string out;
  for (char ch : v) {
    if (ch == '\\' || ch == '"') out += '\\';
    if (ch == '\n') {
      out += "\\n";
      continue;
    }
    out += ch;
  }
  return out;
}

class Exposition {
 public:
  // Starts a metric family (HELP and TYPE once).
  void family(const std::string& name, const char* type, const char* help) {
    text_ += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  }
  void sample(const std::string& name, const std::vector<std::pair<std::string, std::string>>& labels, uint64_t value) {
    text_ += name;
    if (!labels.empty()) {
      text_ += '{';
      for (size_t i = 0; i < labels.size(); ++i)
        text_ += (i ? "," : "") + labels[i].first + "=\"" + label_value(labels[i].second) + "\"";
      text_ += '}';
    }
    text_ += ' ' + std::to_string(value) + '\n';
  }
  std::string take() { return std::move(text_); }

 private:
  std::string text_;
};

}  // namespace

std::string prometheus_text(const json& stats) {
  Exposition e;
  const bool running = stats.at("dataplane").at("running").get<bool>();
  e.family("ipsecov2_dataplane_running", "gauge", "1 if the AF_XDP data plane is running (ipsecov2d --wire)");
  e.sample("ipsecov2_dataplane_running", {}, running ? 1 : 0);

  const json& sas = stats.at("sas");
  e.family("ipsecov2_sas", "gauge", "Installed security associations");
  e.sample("ipsecov2_sas", {}, sas.size());
  auto sa_labels = [](const json& sa) {
    return std::vector<std::pair<std::string, std::string>>{{"handle", sa.at("handle").get<std::string>()},
                                                            {"dir", sa.at("dir").get<std::string>()},
                                                            {"spi", sa.at("spi").get<std::string>()}};
  };
  e.family("ipsecov2_sa_packets_total", "counter", "Packets processed successfully per SA");
  for (const auto& sa : sas) e.sample("ipsecov2_sa_packets_total", sa_labels(sa), sa.at("packets").get<uint64_t>());
  e.family("ipsecov2_sa_bytes_total", "counter", "Bytes processed successfully per SA");
  for (const auto& sa : sas) e.sample("ipsecov2_sa_bytes_total", sa_labels(sa), sa.at("bytes").get<uint64_t>());
  e.family("ipsecov2_sa_errors_total", "counter", "Packets refused per SA, by ESP reason");
  for (const auto& sa : sas)
    for (const auto& [reason, n] : sa.at("errors").items()) {
      auto labels = sa_labels(sa);
      labels.emplace_back("reason", reason);
      e.sample("ipsecov2_sa_errors_total", labels, n.get<uint64_t>());
    }
  e.family("ipsecov2_sa_next_seq", "gauge", "Outbound SA: next ESP sequence number to send");
  for (const auto& sa : sas)
    if (sa.at("dir") == "out") e.sample("ipsecov2_sa_next_seq", sa_labels(sa), sa.at("next_seq").get<uint64_t>());
  e.family("ipsecov2_sa_highest_seq", "gauge", "Inbound SA: highest sequence number seen (top of the replay window)");
  for (const auto& sa : sas)
    if (sa.at("dir") == "in") e.sample("ipsecov2_sa_highest_seq", sa_labels(sa), sa.at("highest_seq").get<uint64_t>());
  if (stats.contains("key_storage")) {  // not from a daemon older than the key storage report
    const json& ks = stats.at("key_storage");
    e.family("ipsecov2_key_storage_slots", "gauge", "Keys (raw) and expanded keys (schedules) held in key storage");
    for (const char* storage : {"keys", "schedules"})
      e.sample("ipsecov2_key_storage_slots", {{"storage", storage}}, ks.at(storage).at("slots_in_use").get<uint64_t>());
    e.family("ipsecov2_key_storage_bytes", "gauge",
             "Key storage memory: mapped, locked (mlock), reserve (mapped chunks with no key in use)");
    for (const char* storage : {"keys", "schedules"})
      for (const char* state : {"mapped", "locked", "reserve"})
        e.sample("ipsecov2_key_storage_bytes", {{"storage", storage}, {"state", state}},
                 ks.at(storage).at(std::string(state) + "_bytes").get<uint64_t>());
  }
  if (!running) return e.take();

  e.family("ipsecov2_worker_total", "counter", "AF_XDP worker counters, summed over queues");
  for (const auto& [name, n] : stats.at("worker").items())
    e.sample("ipsecov2_worker_total", {{"counter", name}}, n.get<uint64_t>());
  e.family("ipsecov2_worker_queue_total", "counter", "AF_XDP worker counters per queue");
  const json& per_queue = stats.at("per_queue");
  for (size_t q = 0; q < per_queue.size(); ++q)
    for (const auto& [name, n] : per_queue[q].items())
      e.sample("ipsecov2_worker_queue_total", {{"queue", std::to_string(q)}, {"counter", name}}, n.get<uint64_t>());
  e.family("ipsecov2_xsk_total", "counter", "Kernel AF_XDP socket statistics (XDP_STATISTICS)");
  for (const char* side : {"wire", "nic"}) {
    const json& list = stats.at("xsk").at(side);
    for (size_t q = 0; q < list.size(); ++q)
      for (const auto& [name, n] : list[q].items())
        e.sample("ipsecov2_xsk_total", {{"socket", side}, {"queue", std::to_string(q)}, {"stat", name}},
                 n.get<uint64_t>());
  }
  e.family("ipsecov2_bpf_total", "counter", "BPF program branch counters (ov2_wire, ov2_tx, ov2_deliver, ov2_verdict)");
  for (const char* program : {"wire", "tx", "deliver", "verdict"})
    for (const auto& [name, n] : stats.at("bpf").at(program).items())
      e.sample("ipsecov2_bpf_total", {{"program", program}, {"counter", name}}, n.get<uint64_t>());
  e.family("ipsecov2_verdict_status_total", "counter", "ov2_verdict packets by NDIS CryptoStatus");
  for (const auto& [name, n] : stats.at("bpf").at("verdict_status").items())
    e.sample("ipsecov2_verdict_status_total", {{"status", name}}, n.get<uint64_t>());
  e.family("ipsecov2_neighbour_resolutions_total", "counter", "Next-hop MAC resolutions asked by the workers");
  e.sample("ipsecov2_neighbour_resolutions_total", {}, stats.value("neighbour_resolutions", uint64_t{0}));
  return e.take();
}

}  // namespace ov2
