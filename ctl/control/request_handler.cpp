#include "control/request_handler.h"

#include <openssl/crypto.h>

#include "common/error.h"
#include "control/log.h"
#include "control/protocol.h"
#include "control/stats_report.h"
#include "model/sa_json.h"

namespace ov2 {

using nlohmann::json;

namespace {

const json& field(const json& req, const char* key, const std::string& op) {
  auto it = req.find(key);
  if (it == req.end()) fail(ErrorCode::InvalidArgument, "request '" + op + "' needs the field '" + key + "'");
  return *it;
}

uint64_t handle_field(const json& v, const char* key) {
  if (!v.is_string()) fail(ErrorCode::InvalidArgument, std::string("'") + key + "' must be a handle string \"0x...\"");
  return parse_handle(v.get_ref<const std::string&>());
}

uint32_t uint32_field(const json& v, const char* key) {
  if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > int64_t{UINT32_MAX})
    fail(ErrorCode::InvalidArgument, std::string("'") + key + "' must be a number from 0 to 4294967295");
  return static_cast<uint32_t>(v.get<int64_t>());
}

json sa_record_json(const SaRecord& r) {
  json j = sa_spec_public_json(r.spec);
  j["handle"] = handle_to_string(r.handle);
  if (r.bundled_in != 0) j["bundled-in"] = handle_to_string(r.bundled_in);
  return j;
}

const char* op_names =
    "caps, sa.add (one SA, or a batch), sa.del, sa.update, sa.list, sa.show, policy.add, policy.update, policy.del, "
    "policy.list, stats, "
    "monitor";

}  // namespace

json capabilities_json(const Capabilities& c) {
  return json{
      {"Encapsulation", c.encapsulation},
      {"IPv6", c.ipv6},
      {"IPv4Options", c.ipv4_options},
      {"IPv6NonIPsecExtensionHeaders", c.ipv6_non_ipsec_extension_headers},
      {"Ah", c.ah},
      {"Esp", c.esp},
      {"AhEspCombined", c.ah_esp_combined},
      {"Transport", c.transport},
      {"Tunnel", c.tunnel},
      {"TransportTunnelCombined", c.transport_tunnel_combined},
      {"LsoSupported", c.lso_supported},
      {"ExtendedSequenceNumbers", c.extended_sequence_numbers},
      {"UdpEsp", c.udp_esp},
      {"AuthenticationAlgorithms", c.authentication_algorithms},
      {"EncryptionAlgorithms", c.encryption_algorithms},
      {"SaOffloadCapacity", c.sa_offload_capacity},
      {"ChaCha20Poly1305", c.chacha20_poly1305},
      {"Engine", c.engine},
      {"Crypto", c.crypto},
  };
}

json RequestHandler::handle(const json& req) {
  if (!req.is_object()) fail(ErrorCode::InvalidArgument, "a request must be a JSON object");
  auto version = req.find("version");
  if (version == req.end())
    fail(ErrorCode::InvalidArgument, "the request has no \"version\"; this daemon speaks version 1");
  if (!version->is_number_integer() || version->get<int64_t>() != kProtocolVersion)
    fail(ErrorCode::Unsupported, "protocol version " + version->dump() +
                                     " is not supported; this daemon speaks version 1 (update ipsecov2ctl)");
  auto op_it = req.find("op");
  if (op_it == req.end() || !op_it->is_string())
    fail(ErrorCode::InvalidArgument, std::string("the request has no \"op\"; known ops: ") + op_names);
  const std::string& op = op_it->get_ref<const std::string&>();

  json answer = {{"ok", true}};
  if (op == "caps") {
    answer["caps"] = capabilities_json(plane_.capabilities());
  } else if (op == "sa.add" && req.contains("sas")) {
    answer["handles"] = add_sa_batch(field(req, "sas", op));
  } else if (op == "sa.add") {
    SaSpec spec = sa_spec_from_json(field(req, "sa", op));
    const uint64_t handle = plane_.add_sa(std::move(spec));
    answer["handle"] = handle_to_string(handle);
    const SaRecord* r = plane_.sas().find(handle);
    log(LogLevel::Info, "added " + std::string(to_string(r->spec.dir)) + "bound SA " + handle_to_string(handle) +
                            " spi " + handle_to_string(r->spec.spi) + " dst " + r->spec.dst.to_string());
  } else if (op == "sa.del") {
    const json& list = field(req, "handles", op);
    if (!list.is_array()) fail(ErrorCode::InvalidArgument, "'handles' must be a list of handle strings");
    std::vector<uint64_t> handles;
    for (const auto& h : list) handles.push_back(handle_field(h, "handles"));
    bool force = false;
    if (auto f = req.find("force"); f != req.end()) {
      if (!f->is_boolean()) fail(ErrorCode::InvalidArgument, "'force' must be true or false");
      force = f->get<bool>();
    }
    const auto result = plane_.delete_sas(handles, force);
    answer["deleted"] = json::array();
    for (uint64_t h : result.deleted_sas) answer["deleted"].push_back(handle_to_string(h));
    answer["deleted_policies"] = result.deleted_policies;
    log(LogLevel::Info,
        "deleted SAs " + answer["deleted"].dump() +
            (result.deleted_policies.empty() ? "" : " and policies " + answer["deleted_policies"].dump()));
  } else if (op == "sa.update") {
    const uint64_t handle = handle_field(field(req, "handle", op), "handle");
    const uint32_t seq_hi = uint32_field(field(req, "seq-hi", op), "seq-hi");
    plane_.update_sa(handle, seq_hi);
    log(LogLevel::Info, "updated SA " + handle_to_string(handle) + " seq-hi " + std::to_string(seq_hi));
  } else if (op == "sa.list") {
    answer["sas"] = json::array();
    for (const SaRecord* r : plane_.sas().list()) {
      answer["sas"].push_back(sa_record_json(*r));
      answer["sas"].back()["engine"] = plane_.engine_of(r->handle);
    }
  } else if (op == "sa.show") {
    const uint64_t handle = handle_field(field(req, "handle", op), "handle");
    const SaRecord* r = plane_.sas().find(handle);
    if (r == nullptr) fail(ErrorCode::NotFound, "no SA has handle " + handle_to_string(handle));
    answer["sa"] = sa_record_json(*r);
    answer["sa"]["engine"] = plane_.engine_of(r->handle);
    if (const auto kernel = plane_.engine_sa_counters(r->handle)) {
      // NIC-held SA: the kernel's counters (XFRM_MSG_GETSA).
      answer["sa"]["kernel-counters"] = {
          {"packets", kernel->packets},
          {"bytes", kernel->bytes},
          {"replayed", kernel->by_reason[static_cast<size_t>(esp::Reason::Replayed)]},
          {"auth-failed", kernel->by_reason[static_cast<size_t>(esp::Reason::AuthFailed)]},
          {r->spec.dir == Direction::Out ? "next-seq" : "highest-seq",
           r->spec.dir == Direction::Out ? kernel->next_seq : kernel->highest_seq}};
    }
  } else if (op == "policy.add") {
    const PolicySpec spec = policy_spec_from_json(field(req, "policy", op));
    const uint32_t id = plane_.add_policy(spec);
    answer["id"] = id;
    log(LogLevel::Info, "added policy " + std::to_string(id) + " " + policy_spec_json(spec).dump());
  } else if (op == "policy.update") {
    const uint32_t id = uint32_field(field(req, "id", op), "id");
    const uint64_t handle = handle_field(field(req, "sa", op), "sa");
    plane_.update_policy_sa(id, handle);
    log(LogLevel::Info, "policy " + std::to_string(id) + " now protects with SA " + handle_to_string(handle));
  } else if (op == "policy.del") {
    const json& list = field(req, "ids", op);
    if (!list.is_array()) fail(ErrorCode::InvalidArgument, "'ids' must be a list of policy ids");
    std::vector<uint32_t> ids;
    for (const auto& v : list) ids.push_back(uint32_field(v, "ids"));
    plane_.delete_policies(ids);
    answer["deleted"] = ids;
    log(LogLevel::Info, "deleted policies " + answer["deleted"].dump());
  } else if (op == "policy.list") {
    answer["policies"] = json::array();
    for (const PolicyRecord* p : plane_.spd().list()) {
      json j = policy_spec_json(p->spec);
      j["id"] = p->id;
      answer["policies"].push_back(std::move(j));
    }
  } else if (op == "stats") {
    answer["stats"] = stats_source_ ? stats_source_() : stats_json(plane_, nullptr);
  } else if (op == "monitor") {
    // The server turns the connection into an event stream after this answer
    // (ControlServer::set_stream_detector matches "stream":"monitor").
    answer["stream"] = "monitor";
  } else {
    fail(ErrorCode::InvalidArgument, "unknown op '" + op + "'; known ops: " + op_names);
  }
  return answer;
}

json RequestHandler::add_sa_batch(const json& list) {
  if (!list.is_array() || list.empty() || list.size() > kMaxBatchSas)
    fail(ErrorCode::InvalidArgument, "'sas' must be a list of 1 to " + std::to_string(kMaxBatchSas) + " SAs");
  // Every entry is checked before anything is installed.
  std::vector<SaSpec> specs;
  specs.reserve(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    try {
      specs.push_back(sa_spec_from_json(list[i]));
    } catch (const Error& e) {
      fail(e.code(), "sas[" + std::to_string(i) + "]: " + e.what() + "; no SA of the batch was installed");
    } catch (const json::exception&) {
      fail(ErrorCode::InvalidArgument,
           "sas[" + std::to_string(i) + "]: a field has the wrong type; no SA of the batch was installed");
    }
  }
  std::vector<uint64_t> added;
  const size_t count = specs.size();
  size_t failed = 0;
  try {
    added = plane_.add_sas(std::move(specs), &failed);
  } catch (const Error& e) {
    // What the engine or the tables refuse (a duplicate SPI, capacity): the batch was taken back.
    fail(e.code(), (failed < count ? "sas[" + std::to_string(failed) + "]: " : std::string()) + e.what() +
                       "; no SA of the batch was installed");
  }
  json handles = json::array();
  for (uint64_t h : added) handles.push_back(handle_to_string(h));
  log(LogLevel::Info, "added " + std::to_string(added.size()) + " SAs in one batch, handles " +
                          handle_to_string(added.front()) + " to " + handle_to_string(added.back()));
  return handles;
}

std::string RequestHandler::handle_line(std::string_view line) {
  json req;
  try {
    req = json::parse(line);
  } catch (const json::parse_error& e) {
    // e.what() quotes the text near the error, which may be key hex: report the position only.
    return error_line(error_code_name(ErrorCode::InvalidArgument),
                      "the request is not valid JSON (error at byte " + std::to_string(e.byte) + ")");
  } catch (const json::exception&) {
    // e.g. out_of_range for a number like 5e5555 (found by fuzz_control_request).
    return error_line(error_code_name(ErrorCode::InvalidArgument),
                      "the request is not valid JSON (a number is out of range)");
  }
  std::string answer;
  try {
    answer = answer_line(handle(req));
  } catch (const Error& e) {
    answer = error_line(error_code_name(e.code()), e.what());
  } catch (const json::exception&) {
    answer = error_line(error_code_name(ErrorCode::InvalidArgument), "the request has a field of the wrong type");
  } catch (const std::bad_alloc&) {
    answer = error_line(error_code_name(ErrorCode::ResourceExhausted), "out of memory");
  } catch (const std::exception& e) {
    answer = error_line(error_code_name(ErrorCode::Internal), std::string("internal error: ") + e.what());
  }
  wipe_secrets(req);
  return answer;
}

}  // namespace ov2
