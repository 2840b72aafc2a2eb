#include "model/sa_json.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <set>

#include "common/error.h"
#include "model/algorithms.h"

namespace ov2 {
namespace {

using nlohmann::json;

[[noreturn]] void bad(const std::string& key, const std::string& what) {
  fail(ErrorCode::InvalidArgument, "'" + key + "' " + what);
}

// Parses an unsigned number written as decimal or 0x-hex text.
bool parse_u64_text(std::string_view s, uint64_t& out) {
  int base = 10;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    s.remove_prefix(2);
    base = 16;
  }
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out, base);
  return ec == std::errc() && p == s.data() + s.size();
}

// A JSON number or a "decimal"/"0xhex" string, checked against `max`.
uint64_t get_uint(const json& v, const std::string& key, uint64_t max) {
  uint64_t out = 0;
  if (v.is_number_unsigned()) {
    out = v.get<uint64_t>();
  } else if (v.is_number_integer()) {
    // Parsed text gives unsigned numbers; numbers built in C++ may be signed.
    if (v.get<int64_t>() < 0) bad(key, "must not be negative");
    out = static_cast<uint64_t>(v.get<int64_t>());
  } else if (v.is_string()) {
    if (!parse_u64_text(v.get_ref<const std::string&>(), out))
      bad(key, "must be a number (decimal or 0x-hex), not '" + v.get<std::string>() + "'");
  } else {
    bad(key, "must be a number");
  }
  if (out > max) bad(key, "is " + std::to_string(out) + "; the maximum is " + std::to_string(max));
  return out;
}

const std::string& get_string(const json& v, const std::string& key) {
  if (!v.is_string()) bad(key, "must be a string");
  return v.get_ref<const std::string&>();
}

bool get_bool(const json& v, const std::string& key) {
  if (!v.is_boolean()) bad(key, "must be true or false");
  return v.get<bool>();
}

// "SOFT,HARD" or [soft, hard].
LifetimeLimit get_lifetime(const json& v, const std::string& key) {
  LifetimeLimit l;
  if (v.is_array()) {
    if (v.size() != 2) bad(key, "must be [soft, hard]");
    l.soft = get_uint(v[0], key, UINT64_MAX);
    l.hard = get_uint(v[1], key, UINT64_MAX);
    return l;
  }
  if (!v.is_string()) bad(key, "must be \"SOFT,HARD\" or [soft, hard]");
  const std::string& s = v.get_ref<const std::string&>();
  const auto comma = s.find(',');
  if (comma == std::string::npos || !parse_u64_text(s.substr(0, comma), l.soft) ||
      !parse_u64_text(s.substr(comma + 1), l.hard))
    bad(key, "must be SOFT,HARD (two numbers, 0 = no limit), not '" + s + "'");
  return l;
}

SecureBytes get_key(const json& v, const std::string& key) {
  if (!v.is_string()) bad(key, "must be a hex string");
  try {
    return SecureBytes::from_hex(v.get_ref<const std::string&>());
  } catch (const Error& e) {
    // from_hex never quotes its input, so its message is safe to pass on.
    bad(key, std::string("is invalid: ") + e.what());
  }
}

IpAddr get_addr(const json& v, const std::string& key) {
  try {
    return IpAddr::parse(get_string(v, key));
  } catch (const Error& e) {
    bad(key, std::string("is invalid: ") + e.what());
  }
}

IpPrefix get_prefix(const json& v, const std::string& key) {
  try {
    return IpPrefix::parse(get_string(v, key));
  } catch (const Error& e) {
    bad(key, std::string("is invalid: ") + e.what());
  }
}

void reject_unknown_keys(const json& j, const std::set<std::string>& known, const char* what) {
  if (!j.is_object()) fail(ErrorCode::InvalidArgument, std::string(what) + " must be a JSON object");
  for (const auto& [k, v] : j.items())
    if (!known.count(k)) fail(ErrorCode::InvalidArgument, std::string("unknown ") + what + " field '" + k + "'");
}

const json& require(const json& j, const char* key, const char* what) {
  auto it = j.find(key);
  if (it == j.end()) fail(ErrorCode::InvalidArgument, std::string(what) + " needs '" + key + "'");
  return *it;
}

bool is_xfrm_spelling(std::string_view given, const char* xfrm_name) { return ascii_lower(given) == xfrm_name; }

json lifetime_json(const LifetimeLimit& l) { return json::array({l.soft, l.hard}); }

std::string port_range_string(const PortRange& r) {
  return r.lo == r.hi ? std::to_string(r.lo) : std::to_string(r.lo) + "-" + std::to_string(r.hi);
}

}  // namespace

SaSpec sa_spec_from_json(const json& j, json* inner_ref) {
  static const std::set<std::string> known(kSaSpecKeys.begin(), kSaSpecKeys.end());
  reject_unknown_keys(j, known, "SA");

  SaSpec sa;
  sa.dir = parse_direction(get_string(require(j, "dir", "an SA"), "dir"));
  sa.mode = parse_mode(get_string(require(j, "mode", "an SA"), "mode"));
  sa.src = get_addr(require(j, "src", "an SA"), "src");
  sa.dst = get_addr(require(j, "dst", "an SA"), "dst");
  sa.spi = static_cast<uint32_t>(get_uint(require(j, "spi", "an SA"), "spi", UINT32_MAX));

  const bool has_aead = j.contains("aead");
  const bool has_enc = j.contains("enc");
  if (has_aead == has_enc)
    fail(ErrorCode::InvalidArgument,
         "an SA needs either 'aead' (with 'key') or 'enc' and 'auth' (with 'enc-key' and 'auth-key')");
  if (has_aead) {
    for (const char* k : {"enc-key", "auth", "auth-key"})
      if (j.contains(k)) bad(k, "does not go with 'aead': an AEAD cipher has one key and authenticates by itself");
    const std::string& name = get_string(j["aead"], "aead");
    sa.enc = parse_aead_alg(name);
    sa.enc_key = get_key(require(j, "key", "an AEAD SA"), "key");
    if (is_xfrm_spelling(name, info(sa.enc).xfrm_name)) sa.enc = enc_alg_for_key_length(sa.enc, sa.enc_key.size());
    sa.auth = AuthAlg::None;
  } else {
    if (j.contains("key")) bad("key", "is the AEAD key; with 'enc' give 'enc-key' and 'auth-key'");
    const std::string& enc_name = get_string(j["enc"], "enc");
    sa.enc = parse_enc_alg(enc_name);
    if (j.contains("enc-key"))
      sa.enc_key = get_key(j["enc-key"], "enc-key");
    else if (sa.enc != EncAlg::Null)
      fail(ErrorCode::InvalidArgument, std::string(info(sa.enc).name) + " needs 'enc-key'");
    if (is_xfrm_spelling(enc_name, info(sa.enc).xfrm_name)) sa.enc = enc_alg_for_key_length(sa.enc, sa.enc_key.size());
    const std::string& auth_name = get_string(require(j, "auth", "an SA with 'enc'"), "auth");
    sa.auth = parse_auth_alg(auth_name);
    sa.auth_key = get_key(require(j, "auth-key", "an SA with 'auth'"), "auth-key");
    if (is_xfrm_spelling(auth_name, info(sa.auth).xfrm_name))
      sa.auth = auth_alg_for_key_length(sa.auth, sa.auth_key.size());
  }

  if (j.contains("esn")) sa.esn = get_bool(j["esn"], "esn");
  if (j.contains("seq-hi")) sa.seq_hi = static_cast<uint32_t>(get_uint(j["seq-hi"], "seq-hi", UINT32_MAX));
  if (j.contains("encap")) {
    const std::string& encap = get_string(j["encap"], "encap");
    if (encap == "udp")
      sa.udp_encap = true;
    else if (encap != "none")
      bad("encap", "must be 'udp' or 'none', not '" + encap + "'");
  }
  if (j.contains("encap-sport"))
    sa.encap_sport = static_cast<uint16_t>(get_uint(j["encap-sport"], "encap-sport", 65535));
  if (j.contains("encap-dport"))
    sa.encap_dport = static_cast<uint16_t>(get_uint(j["encap-dport"], "encap-dport", 65535));
  if (j.contains("replay-window"))
    sa.replay_window = static_cast<uint32_t>(get_uint(j["replay-window"], "replay-window", UINT32_MAX));
  if (j.contains("lifetime-packets")) sa.life_packets = get_lifetime(j["lifetime-packets"], "lifetime-packets");
  if (j.contains("lifetime-bytes")) sa.life_bytes = get_lifetime(j["lifetime-bytes"], "lifetime-bytes");
  if (j.contains("lifetime-seconds")) sa.life_seconds = get_lifetime(j["lifetime-seconds"], "lifetime-seconds");

  if (inner_ref != nullptr) *inner_ref = nullptr;
  if (j.contains("inner")) {
    const json& inner = j["inner"];
    if (inner_ref != nullptr) *inner_ref = inner;
    if (inner.is_string()) {
      sa.inner_handle = parse_handle(inner.get_ref<const std::string&>());
    } else if (inner_ref == nullptr || !inner.is_number_integer() || inner.get<int64_t>() < 0) {
      bad("inner", "must be an SA handle such as \"0x1000001\"");
    } else if (sa.mode != Mode::Tunnel) {
      // An index the caller resolves; validate the mode here all the same.
      fail(ErrorCode::InvalidArgument, "--inner puts a transport SA inside this SA: this SA must be in tunnel mode");
    }
  }

  validate_sa(sa);
  return sa;
}

json sa_spec_public_json(const SaSpec& sa) {
  json j;
  j["dir"] = to_string(sa.dir);
  j["mode"] = to_string(sa.mode);
  j["src"] = sa.src.to_string();
  j["dst"] = sa.dst.to_string();
  j["spi"] = sa.spi;
  const EncAlgInfo& enc = info(sa.enc);
  if (enc.aead) {
    j["aead"] = enc.name;
    j["key-bytes"] = sa.enc_key.size();
  } else {
    j["enc"] = enc.name;
    j["enc-key-bytes"] = sa.enc_key.size();
    j["auth"] = info(sa.auth).name;
    j["auth-key-bytes"] = sa.auth_key.size();
  }
  j["esn"] = sa.esn;
  if (sa.esn) j["seq-hi"] = sa.seq_hi;
  j["encap"] = sa.udp_encap ? "udp" : "none";
  if (sa.udp_encap) {
    j["encap-sport"] = sa.encap_sport;
    j["encap-dport"] = sa.encap_dport;
  }
  j["replay-window"] = sa.replay_window;
  j["lifetime-packets"] = lifetime_json(sa.life_packets);
  j["lifetime-bytes"] = lifetime_json(sa.life_bytes);
  j["lifetime-seconds"] = lifetime_json(sa.life_seconds);
  if (sa.inner_handle != 0) j["inner"] = handle_to_string(sa.inner_handle);
  return j;
}

PolicySpec policy_spec_from_json(const json& j) {
  static const std::set<std::string> known = {"dir",   "src",    "dst", "proto",   "sport",
                                              "dport", "action", "sa",  "priority"};
  reject_unknown_keys(j, known, "policy");
  PolicySpec p;
  p.dir = parse_direction(get_string(require(j, "dir", "a policy"), "dir"));
  p.src = get_prefix(require(j, "src", "a policy"), "src");
  p.dst = get_prefix(require(j, "dst", "a policy"), "dst");
  if (j.contains("proto")) {
    const json& v = j["proto"];
    p.proto =
        v.is_string() ? parse_proto(v.get_ref<const std::string&>()) : static_cast<uint16_t>(get_uint(v, "proto", 255));
  }
  for (const char* key : {"sport", "dport"}) {
    if (!j.contains(key)) continue;
    const json& v = j[key];
    PortRange r;
    if (v.is_string()) {
      r = parse_port_range(v.get_ref<const std::string&>());
    } else {
      r.lo = r.hi = static_cast<uint16_t>(get_uint(v, key, 65535));
    }
    (std::string_view(key) == "sport" ? p.sport : p.dport) = r;
  }
  p.action = parse_policy_action(get_string(require(j, "action", "a policy"), "action"));
  if (j.contains("sa")) {
    const json& v = j["sa"];
    if (!v.is_string()) bad("sa", "must be an SA handle such as \"0x1000001\"");
    p.sa_handle = parse_handle(v.get_ref<const std::string&>());
  }
  if (j.contains("priority")) p.priority = static_cast<uint32_t>(get_uint(j["priority"], "priority", UINT32_MAX));
  validate_policy(p);
  return p;
}

json policy_spec_json(const PolicySpec& p) {
  json j;
  j["dir"] = to_string(p.dir);
  j["src"] = p.src.to_string();
  j["dst"] = p.dst.to_string();
  j["proto"] = proto_to_string(p.proto);
  j["sport"] = port_range_string(p.sport);
  j["dport"] = port_range_string(p.dport);
  j["action"] = to_string(p.action);
  if (p.action == PolicyAction::Protect) j["sa"] = handle_to_string(p.sa_handle);
  j["priority"] = p.priority;
  return j;
}

std::string handle_to_string(uint64_t handle) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(handle));
  return buf;
}

uint64_t parse_handle(std::string_view text) {
  uint64_t h = 0;
  if (!parse_u64_text(text, h))
    fail(ErrorCode::InvalidArgument,
         "'" + std::string(text) + "' is not an SA handle (expected 0x followed by hex digits, as 'sa add' prints)");
  if (h == 0) fail(ErrorCode::InvalidArgument, "handle 0 means 'no offload' and never names an SA");
  return h;
}

}  // namespace ov2
