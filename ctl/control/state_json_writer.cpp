#include "control/state_json_writer.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

#include "model/algorithms.h"

namespace ov2 {
namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

void put(std::string& out, std::string_view text) { out.append(text); }

void put_number(std::string& out, uint64_t v) {
  char buf[24];
  const auto end = std::to_chars(buf, buf + sizeof buf, v).ptr;
  out.append(buf, end);
}

// A JSON string; escapes like nlohmann::json's dump (the values written here
// are names, addresses and hex, which need none, but nothing may break the
// syntax).
void put_string(std::string& out, std::string_view s) {
  out.push_back('"');
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(ch);
    } else if (c < 0x20) {
      out.append("\\u00");
      out.push_back(kHexDigits[c >> 4]);
      out.push_back(kHexDigits[c & 15]);
    } else {
      out.push_back(ch);
    }
  }
  out.push_back('"');
}

// "key": (with the comma before it unless first)
void put_key(std::string& out, std::string_view key, bool first = false) {
  if (!first) out.push_back(',');
  out.push_back('"');
  out.append(key);
  out.append("\":");
}

void put_handle(std::string& out, uint64_t handle) {
  // handle_to_string's "0x%llx", without a temporary string.
  char buf[20];
  const auto end = std::to_chars(buf, buf + sizeof buf, handle, 16).ptr;
  out.append("\"0x");
  out.append(buf, end);
  out.push_back('"');
}

void put_hex_key(std::string& out, const SecureBytes& key) {
  out.push_back('"');
  const size_t at = out.size();
  out.resize(at + key.size() * 2);
  char* p = out.data() + at;
  for (uint8_t b : key.span()) {
    *p++ = kHexDigits[b >> 4];
    *p++ = kHexDigits[b & 15];
  }
  out.push_back('"');
}

// The address's text, without the quotes.
void put_addr_text(std::string& out, const IpAddr& addr) {
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(addr.family == Family::V4 ? AF_INET : AF_INET6, addr.bytes.data(), buf, sizeof buf);
  out.append(buf);
}

void put_addr(std::string& out, const IpAddr& addr) {
  out.push_back('"');
  put_addr_text(out, addr);
  out.push_back('"');
}

void put_prefix(std::string& out, const IpPrefix& prefix) {
  out.push_back('"');
  put_addr_text(out, prefix.addr);
  out.push_back('/');
  put_number(out, prefix.len);
  out.push_back('"');
}

void put_lifetime(std::string& out, const LifetimeLimit& l) {
  out.push_back('[');
  put_number(out, l.soft);
  out.push_back(',');
  put_number(out, l.hard);
  out.push_back(']');
}

void put_port_range(std::string& out, const PortRange& r) {
  out.push_back('"');
  put_number(out, r.lo);
  if (r.lo != r.hi) {
    out.push_back('-');
    put_number(out, r.hi);
  }
  out.push_back('"');
}

}  // namespace

// Keys in std::map order (nlohmann::json's object order), as sa_spec_public_json
// plus the key hex of the state file (state_store.cpp's former sa_json_with_keys).
void write_sa_spec(std::string& out, const SaSpec& sa) {
  const EncAlgInfo& enc = info(sa.enc);
  out.push_back('{');
  if (enc.aead) {
    put_key(out, "aead", true);
    put_string(out, enc.name);
  } else {
    put_key(out, "auth", true);
    put_string(out, info(sa.auth).name);
    put_key(out, "auth-key");
    put_hex_key(out, sa.auth_key);
  }
  put_key(out, "dir");
  put_string(out, to_string(sa.dir));
  put_key(out, "dst");
  put_addr(out, sa.dst);
  if (!enc.aead) {
    put_key(out, "enc");
    put_string(out, enc.name);
    if (!sa.enc_key.empty()) {
      put_key(out, "enc-key");
      put_hex_key(out, sa.enc_key);
    }
  }
  put_key(out, "encap");
  put(out, sa.udp_encap ? "\"udp\"" : "\"none\"");
  if (sa.udp_encap) {
    put_key(out, "encap-dport");
    put_number(out, sa.encap_dport);
    put_key(out, "encap-sport");
    put_number(out, sa.encap_sport);
  }
  put_key(out, "esn");
  put(out, sa.esn ? "true" : "false");
  if (sa.inner_handle != 0) {
    put_key(out, "inner");
    put_handle(out, sa.inner_handle);
  }
  if (enc.aead) {
    put_key(out, "key");
    put_hex_key(out, sa.enc_key);
  }
  put_key(out, "lifetime-bytes");
  put_lifetime(out, sa.life_bytes);
  put_key(out, "lifetime-packets");
  put_lifetime(out, sa.life_packets);
  put_key(out, "lifetime-seconds");
  put_lifetime(out, sa.life_seconds);
  put_key(out, "mode");
  put_string(out, to_string(sa.mode));
  put_key(out, "replay-window");
  put_number(out, sa.replay_window);
  if (sa.esn) {
    put_key(out, "seq-hi");
    put_number(out, sa.seq_hi);
  }
  put_key(out, "spi");
  put_number(out, sa.spi);
  put_key(out, "src");
  put_addr(out, sa.src);
  out.push_back('}');
}

void write_policy_spec(std::string& out, const PolicySpec& p) {
  out.push_back('{');
  put_key(out, "action", true);
  put_string(out, to_string(p.action));
  put_key(out, "dir");
  put_string(out, to_string(p.dir));
  put_key(out, "dport");
  put_port_range(out, p.dport);
  put_key(out, "dst");
  put_prefix(out, p.dst);
  put_key(out, "priority");
  put_number(out, p.priority);
  put_key(out, "proto");
  put_string(out, proto_to_string(p.proto));
  if (p.action == PolicyAction::Protect) {
    put_key(out, "sa");
    put_handle(out, p.sa_handle);
  }
  put_key(out, "sport");
  put_port_range(out, p.sport);
  put_key(out, "src");
  put_prefix(out, p.src);
  out.push_back('}');
}

namespace {

// {"handle":..,"op":"sa","seq_mark":..,"spec":{..}}: a journal record (`record`) or, without "op", a snapshot entry.
void put_sa_object(std::string& out, const SavedSa& sa, bool record) {
  put(out, "{\"handle\":");
  put_handle(out, sa.handle);
  put(out, record ? ",\"op\":\"sa\",\"seq_mark\":" : ",\"seq_mark\":");
  put_number(out, sa.seq_mark);
  put(out, ",\"spec\":");
  write_sa_spec(out, sa.spec);
  out.push_back('}');
}

// {"id":..,"op":"policy","spec":{..}}, or without "op" (a snapshot entry).
void put_policy_object(std::string& out, const PolicyRecord& policy, bool record) {
  put(out, "{\"id\":");
  put_number(out, policy.id);
  put(out, record ? ",\"op\":\"policy\",\"spec\":" : ",\"spec\":");
  write_policy_spec(out, policy.spec);
  out.push_back('}');
}

}  // namespace

void write_sa_record(std::string& out, const SavedSa& sa) { put_sa_object(out, sa, true); }

void write_sa_deleted_record(std::string& out, uint64_t handle) {
  put(out, "{\"handle\":");
  put_handle(out, handle);
  put(out, ",\"op\":\"sa-del\"}");
}

void write_policy_record(std::string& out, const PolicyRecord& policy) { put_policy_object(out, policy, true); }

void write_policy_deleted_record(std::string& out, uint32_t id) {
  put(out, "{\"id\":");
  put_number(out, id);
  put(out, ",\"op\":\"policy-del\"}");
}

void write_seq_mark_record(std::string& out, uint64_t handle, uint64_t seq_mark) {
  put(out, "{\"handle\":");
  put_handle(out, handle);
  put(out, ",\"op\":\"mark\",\"seq_mark\":");
  put_number(out, seq_mark);
  out.push_back('}');
}

namespace {
void put_sequences(std::string& out, uint64_t next_sa_sequence, uint32_t next_policy_id, const char* op_tail) {
  put(out, "{\"next_policy_id\":");
  put_number(out, next_policy_id);
  put(out, ",\"next_sa_sequence\":");
  put_number(out, next_sa_sequence);
  put(out, op_tail);
}
}  // namespace

void write_sequences_record(std::string& out, uint64_t next_sa_sequence, uint32_t next_policy_id) {
  put_sequences(out, next_sa_sequence, next_policy_id, ",\"op\":\"sequences\"}");
}

void write_stop_record(std::string& out, uint64_t next_sa_sequence, uint32_t next_policy_id) {
  put_sequences(out, next_sa_sequence, next_policy_id, ",\"op\":\"stop\"}");
}

void write_sa_entry(std::string& out, const SavedSa& sa) { put_sa_object(out, sa, false); }

void write_policy_entry(std::string& out, const PolicyRecord& policy) { put_policy_object(out, policy, false); }

}  // namespace ov2
