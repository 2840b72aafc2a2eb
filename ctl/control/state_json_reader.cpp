#include "control/state_json_reader.h"

#include <algorithm>
#include <array>
#include <cctype>

#include "model/policy_spec.h"
#include "model/sa_json.h"

namespace ov2 {
namespace {

// One value of a flat object: what the writer puts in the state file.
struct Value {
  enum class Kind : uint8_t { String, Number, Bool, Pair, Object };
  Kind kind = Kind::String;
  std::string_view text;  // String (without the quotes; no escapes)
  uint64_t number = 0;    // Number; Pair: the first
  uint64_t second = 0;    // Pair
  bool flag = false;      // Bool
};

struct Field {
  std::string_view key;
  Value value;
};

// The fields of one object (the writer's objects have at most 21).
struct Fields {
  std::array<Field, 24> items;
  size_t size = 0;
  const Value* get(std::string_view key) const {
    for (size_t i = 0; i < size; ++i)
      if (items[i].key == key) return &items[i].value;
    return nullptr;
  }
  bool has(std::string_view key) const { return get(key) != nullptr; }
  // Every key is one of `known` (the nlohmann path refuses or ignores others: not ours to decide).
  template <size_t N>
  bool only(const std::array<std::string_view, N>& known) const {
    for (size_t i = 0; i < size; ++i)
      if (std::find(known.begin(), known.end(), items[i].key) == known.end()) return false;
    return true;
  }
};

// A strict scanner: anything it is not sure about is "not mine" (false).
class Scanner {
 public:
  explicit Scanner(std::string_view text) : t_(text) {}

  void ws() {
    while (i_ < t_.size() && (t_[i_] == ' ' || t_[i_] == '\n' || t_[i_] == '\t' || t_[i_] == '\r')) ++i_;
  }
  bool at_end() const { return i_ == t_.size(); }
  bool peek(char c) {
    ws();
    return i_ < t_.size() && t_[i_] == c;
  }
  bool lit(char c) {
    if (!peek(c)) return false;
    ++i_;
    return true;
  }
  // A string of printable ASCII without escapes (names, addresses, hex).
  bool string(std::string_view& out) {
    if (!lit('"')) return false;
    const size_t start = i_;
    while (i_ < t_.size()) {
      const auto c = static_cast<unsigned char>(t_[i_]);
      if (c == '"') {
        out = t_.substr(start, i_ - start);
        ++i_;
        return true;
      }
      if (c == '\\' || c < 0x20 || c >= 0x80) return false;
      ++i_;
    }
    return false;
  }
  // A JSON integer that nlohmann reads as unsigned: digits, no leading zero, no fraction or exponent.
  bool number(uint64_t& out) {
    ws();
    const size_t start = i_;
    uint64_t v = 0;
    while (i_ < t_.size() && t_[i_] >= '0' && t_[i_] <= '9') {
      const auto d = static_cast<uint64_t>(t_[i_] - '0');
      if (v > (UINT64_MAX - d) / 10) return false;  // nlohmann makes it a float
      v = v * 10 + d;
      ++i_;
    }
    const size_t len = i_ - start;
    if (len == 0 || (len > 1 && t_[start] == '0')) return false;
    if (i_ < t_.size() && (t_[i_] == '.' || t_[i_] == 'e' || t_[i_] == 'E')) return false;
    out = v;
    return true;
  }
  bool word(std::string_view w) {
    ws();
    if (t_.substr(i_, w.size()) != w) return false;
    i_ += w.size();
    return true;
  }

  // A flat object; one value may be an object itself, read into `nested`.
  bool object(Fields& out, Fields* nested) {
    out.size = 0;
    if (!lit('{')) return false;
    if (lit('}')) return true;
    do {
      if (out.size == out.items.size()) return false;
      Field& f = out.items[out.size];
      if (!string(f.key) || !lit(':') || out.has(f.key)) return false;  // a repeated key: nlohmann keeps the last
      if (!value(f.value, nested)) return false;
      ++out.size;
    } while (lit(','));
    return lit('}');
  }

 private:
  bool value(Value& v, Fields*& nested) {
    ws();
    if (i_ >= t_.size()) return false;
    const char c = t_[i_];
    if (c == '"') {
      v.kind = Value::Kind::String;
      return string(v.text);
    }
    if (c >= '0' && c <= '9') {
      v.kind = Value::Kind::Number;
      return number(v.number);
    }
    if (c == 't' || c == 'f') {
      v.kind = Value::Kind::Bool;
      v.flag = c == 't';
      return word(v.flag ? "true" : "false");
    }
    if (c == '[') {
      v.kind = Value::Kind::Pair;
      return lit('[') && number(v.number) && lit(',') && number(v.second) && lit(']');
    }
    if (c == '{' && nested != nullptr) {
      v.kind = Value::Kind::Object;
      Fields* inner = nested;
      nested = nullptr;  // one nested object per object
      return object(*inner, nullptr);
    }
    return false;
  }

  std::string_view t_;
  size_t i_ = 0;
};

// The "not mine" signal inside the builders below (caught in the entry points).
struct NotMine {};

const Value& need(const Fields& f, std::string_view key, Value::Kind kind) {
  const Value* v = f.get(key);
  if (v == nullptr || v->kind != kind) throw NotMine{};
  return *v;
}

std::string_view need_string(const Fields& f, std::string_view key) { return need(f, key, Value::Kind::String).text; }

uint64_t need_number(const Fields& f, std::string_view key, uint64_t max) {
  const uint64_t n = need(f, key, Value::Kind::Number).number;
  if (n > max) throw NotMine{};
  return n;
}

// Optional fields: absent is fine, the wrong kind is not.
const Value* maybe(const Fields& f, std::string_view key, Value::Kind kind) {
  const Value* v = f.get(key);
  if (v != nullptr && v->kind != kind) throw NotMine{};
  return v;
}

uint64_t maybe_number(const Fields& f, std::string_view key, uint64_t max, uint64_t otherwise) {
  const Value* v = maybe(f, key, Value::Kind::Number);
  if (v == nullptr) return otherwise;
  if (v->number > max) throw NotMine{};
  return v->number;
}

LifetimeLimit maybe_lifetime(const Fields& f, std::string_view key) {
  const Value* v = maybe(f, key, Value::Kind::Pair);
  return v == nullptr ? LifetimeLimit{} : LifetimeLimit{v->number, v->second};
}

// sa_json.cpp's test (lower(given) == xfrm_name), without a string per SA.
bool is_xfrm_spelling(std::string_view given, std::string_view xfrm_name) {
  return given.size() == xfrm_name.size() &&
         std::equal(given.begin(), given.end(), xfrm_name.begin(), [](char a, char b) {
           return std::tolower(static_cast<unsigned char>(a)) == static_cast<unsigned char>(b);
         });
}

// sa_spec_from_json's success path (model/sa_json.cpp), value by value.
SaSpec sa_spec_from(const Fields& f) {
  if (!f.only(kSaSpecKeys)) throw NotMine{};
  SaSpec sa;
  sa.dir = parse_direction(need_string(f, "dir"));
  sa.mode = parse_mode(need_string(f, "mode"));
  sa.src = IpAddr::parse(need_string(f, "src"));
  sa.dst = IpAddr::parse(need_string(f, "dst"));
  sa.spi = static_cast<uint32_t>(need_number(f, "spi", UINT32_MAX));
  const bool has_aead = f.has("aead");
  if (has_aead == f.has("enc")) throw NotMine{};
  if (has_aead) {
    if (f.has("enc-key") || f.has("auth") || f.has("auth-key")) throw NotMine{};
    const std::string_view name = need_string(f, "aead");
    sa.enc = parse_aead_alg(name);
    sa.enc_key = SecureBytes::from_hex(need_string(f, "key"));  // from the file's bytes into key storage
    if (is_xfrm_spelling(name, info(sa.enc).xfrm_name)) sa.enc = enc_alg_for_key_length(sa.enc, sa.enc_key.size());
    sa.auth = AuthAlg::None;
  } else {
    if (f.has("key")) throw NotMine{};
    const std::string_view enc_name = need_string(f, "enc");
    sa.enc = parse_enc_alg(enc_name);
    if (const Value* k = maybe(f, "enc-key", Value::Kind::String))
      sa.enc_key = SecureBytes::from_hex(k->text);
    else if (sa.enc != EncAlg::Null)
      throw NotMine{};
    if (is_xfrm_spelling(enc_name, info(sa.enc).xfrm_name)) sa.enc = enc_alg_for_key_length(sa.enc, sa.enc_key.size());
    const std::string_view auth_name = need_string(f, "auth");
    sa.auth = parse_auth_alg(auth_name);
    sa.auth_key = SecureBytes::from_hex(need_string(f, "auth-key"));
    if (is_xfrm_spelling(auth_name, info(sa.auth).xfrm_name))
      sa.auth = auth_alg_for_key_length(sa.auth, sa.auth_key.size());
  }
  if (const Value* v = maybe(f, "esn", Value::Kind::Bool)) sa.esn = v->flag;
  sa.seq_hi = static_cast<uint32_t>(maybe_number(f, "seq-hi", UINT32_MAX, sa.seq_hi));
  if (const Value* v = maybe(f, "encap", Value::Kind::String)) {
    if (v->text == "udp")
      sa.udp_encap = true;
    else if (v->text != "none")
      throw NotMine{};
  }
  sa.encap_sport = static_cast<uint16_t>(maybe_number(f, "encap-sport", 65535, sa.encap_sport));
  sa.encap_dport = static_cast<uint16_t>(maybe_number(f, "encap-dport", 65535, sa.encap_dport));
  sa.replay_window = static_cast<uint32_t>(maybe_number(f, "replay-window", UINT32_MAX, sa.replay_window));
  sa.life_packets = maybe_lifetime(f, "lifetime-packets");
  sa.life_bytes = maybe_lifetime(f, "lifetime-bytes");
  sa.life_seconds = maybe_lifetime(f, "lifetime-seconds");
  if (const Value* v = maybe(f, "inner", Value::Kind::String)) sa.inner_handle = parse_handle(v->text);
  validate_sa(sa);
  return sa;
}

constexpr std::array<std::string_view, 9> kPolicyKeys = {"dir",   "src",    "dst", "proto",   "sport",
                                                         "dport", "action", "sa",  "priority"};

PortRange port_range_from(const Fields& f, std::string_view key) {
  const Value* v = f.get(key);
  if (v == nullptr) return PortRange{};
  if (v->kind == Value::Kind::String) return parse_port_range(v->text);
  if (v->kind != Value::Kind::Number || v->number > 65535) throw NotMine{};
  PortRange r;
  r.lo = r.hi = static_cast<uint16_t>(v->number);
  return r;
}

// policy_spec_from_json's success path.
PolicySpec policy_spec_from(const Fields& f) {
  if (!f.only(kPolicyKeys)) throw NotMine{};
  PolicySpec p;
  p.dir = parse_direction(need_string(f, "dir"));
  p.src = IpPrefix::parse(need_string(f, "src"));
  p.dst = IpPrefix::parse(need_string(f, "dst"));
  if (const Value* v = f.get("proto")) {
    if (v->kind == Value::Kind::String)
      p.proto = parse_proto(v->text);
    else if (v->kind == Value::Kind::Number && v->number <= 255)
      p.proto = static_cast<uint16_t>(v->number);
    else
      throw NotMine{};
  }
  if (f.has("sport")) p.sport = port_range_from(f, "sport");
  if (f.has("dport")) p.dport = port_range_from(f, "dport");
  p.action = parse_policy_action(need_string(f, "action"));
  if (const Value* v = maybe(f, "sa", Value::Kind::String)) p.sa_handle = parse_handle(v->text);
  if (f.has("priority")) p.priority = static_cast<uint32_t>(need_number(f, "priority", UINT32_MAX));
  validate_policy(p);
  return p;
}

constexpr uint64_t kMaxSequence = (uint64_t{1} << 40) - 1;

// One element of "sas" or "policies" (an object with "spec" inside).
void read_sa_entry(Scanner& in, DaemonState& s) {
  Fields entry, spec;
  if (!in.object(entry, &spec) || !entry.only(std::array<std::string_view, 3>{"handle", "seq_mark", "spec"}))
    throw NotMine{};
  need(entry, "spec", Value::Kind::Object);
  SavedSa sa;
  sa.handle = parse_handle(need_string(entry, "handle"));
  sa.spec = sa_spec_from(spec);
  sa.seq_mark = need_number(entry, "seq_mark", UINT64_MAX);
  s.sas.push_back(std::move(sa));
}

void read_policy_entry(Scanner& in, DaemonState& s) {
  Fields entry, spec;
  if (!in.object(entry, &spec) || !entry.only(std::array<std::string_view, 2>{"id", "spec"})) throw NotMine{};
  need(entry, "spec", Value::Kind::Object);
  PolicyRecord p;
  p.id = static_cast<uint32_t>(need_number(entry, "id", UINT32_MAX));
  p.spec = policy_spec_from(spec);
  s.policies.push_back(p);
}

template <typename ReadOne>
void read_list(Scanner& in, ReadOne&& read_one) {
  if (!in.lit('[')) throw NotMine{};
  if (in.lit(']')) return;
  do read_one();
  while (in.lit(','));
  if (!in.lit(']')) throw NotMine{};
}

}  // namespace

std::optional<DaemonState> fast_parse_state(std::string_view text, size_t more_sas) {
  try {
    Scanner in(text);
    DaemonState s;
    // About one SA per 300 bytes: no reallocation moves of the specs (nor in the replay after it).
    s.sas.reserve(text.size() / 256 + more_sas);
    bool magic = false, version = false, next_sa = false, next_policy = false, sas = false, policies = false,
         journal = false;
    auto once = [](bool& seen) {
      if (seen) throw NotMine{};
      seen = true;
    };
    if (!in.lit('{')) return std::nullopt;
    do {
      std::string_view key;
      if (!in.string(key) || !in.lit(':')) return std::nullopt;
      uint64_t n = 0;
      std::string_view str;
      if (key == "magic") {
        once(magic);
        if (!in.string(str) || str != kStateMagic) return std::nullopt;
      } else if (key == "version") {
        once(version);
        if (!in.number(n) || n != static_cast<uint64_t>(kStateVersion)) return std::nullopt;
      } else if (key == "next_sa_sequence") {
        once(next_sa);
        if (!in.number(n) || n > kMaxSequence) return std::nullopt;
        s.next_sa_sequence = n;
      } else if (key == "next_policy_id") {
        once(next_policy);
        if (!in.number(n) || n > UINT32_MAX) return std::nullopt;
        s.next_policy_id = static_cast<uint32_t>(n);
      } else if (key == "journal_id") {
        once(journal);
        if (!in.string(str)) return std::nullopt;
        s.journal_id = std::string(str);
      } else if (key == "sas") {
        once(sas);
        read_list(in, [&] { read_sa_entry(in, s); });
      } else if (key == "policies") {
        once(policies);
        read_list(in, [&] { read_policy_entry(in, s); });
      } else {
        return std::nullopt;
      }
    } while (in.lit(','));
    if (!in.lit('}')) return std::nullopt;
    in.ws();
    if (!in.at_end() || !magic || !version || !next_sa || !next_policy || !sas || !policies) return std::nullopt;
    return s;
  } catch (...) {
    // NotMine, or a value parser's ov2::Error: the nlohmann path decides (and words the error).
    return std::nullopt;
  }
}

bool fast_parse_record(std::string_view payload, FastRecord& out) {
  try {
    Scanner in(payload);
    Fields r, spec;
    if (!in.object(r, &spec)) return false;
    in.ws();
    if (!in.at_end()) return false;
    const std::string_view op = need_string(r, "op");
    if (op == "sa") {
      if (!r.only(std::array<std::string_view, 4>{"handle", "op", "seq_mark", "spec"})) return false;
      need(r, "spec", Value::Kind::Object);
      out.op = FastRecord::Op::Sa;
      out.sa.handle = parse_handle(need_string(r, "handle"));
      out.sa.spec = sa_spec_from(spec);
      out.sa.seq_mark = need_number(r, "seq_mark", UINT64_MAX);
    } else if (op == "sa-del") {
      if (!r.only(std::array<std::string_view, 2>{"handle", "op"})) return false;
      out.op = FastRecord::Op::SaDeleted;
      out.sa.handle = parse_handle(need_string(r, "handle"));
    } else if (op == "mark") {
      if (!r.only(std::array<std::string_view, 3>{"handle", "op", "seq_mark"})) return false;
      out.op = FastRecord::Op::Mark;
      out.sa.handle = parse_handle(need_string(r, "handle"));
      out.sa.seq_mark = need_number(r, "seq_mark", UINT64_MAX);
    } else if (op == "policy") {
      if (!r.only(std::array<std::string_view, 3>{"id", "op", "spec"})) return false;
      need(r, "spec", Value::Kind::Object);
      out.op = FastRecord::Op::Policy;
      out.policy.id = static_cast<uint32_t>(need_number(r, "id", UINT32_MAX));
      out.policy.spec = policy_spec_from(spec);
    } else if (op == "policy-del") {
      if (!r.only(std::array<std::string_view, 2>{"id", "op"})) return false;
      out.op = FastRecord::Op::PolicyDeleted;
      out.policy.id = static_cast<uint32_t>(need_number(r, "id", UINT32_MAX));
    } else if (op == "sequences" || op == "stop") {
      if (!r.only(std::array<std::string_view, 3>{"next_policy_id", "next_sa_sequence", "op"})) return false;
      out.op = op == "stop" ? FastRecord::Op::Stop : FastRecord::Op::Sequences;
      out.next_sa_sequence = need_number(r, "next_sa_sequence", kMaxSequence);
      out.next_policy_id = static_cast<uint32_t>(need_number(r, "next_policy_id", UINT32_MAX));
    } else {
      return false;
    }
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace ov2
