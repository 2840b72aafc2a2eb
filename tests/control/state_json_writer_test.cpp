// The state file's hand-written JSON (control/state_json_writer.h): for every
// cipher/auth kind, tunnel/transport, IPv4/IPv6, NAT-T, ESN, lifetimes,
// replay window and bundles, the text is byte for byte what the former
// nlohmann::json dump gave, and it parses back (sa_spec_from_json /
// policy_spec_from_json, the loader's own functions) to the same SA or
// policy, every field.  Also the CRC32C of the journal records, on both of
// its implementations, against RFC 3720 B.4.
//
// And the loader's fast reader (control/state_json_reader.h): the writer's
// snapshot and records are read by it to exactly what the nlohmann reference
// reads; older shapes (the pretty-printed nlohmann snapshot, no journal_id,
// numbers as strings, escapes) still load through the reference; and every
// cut and every damaged byte of a file gets the same answer -- the same state
// or the same error message -- as from the reference.
#include "control/state_json_writer.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <optional>

#include "common/crc32c.h"
#include "common/error.h"
#include "control/state_json_reader.h"
#include "model/sa_json.h"
#include "policy_builder.h"

namespace ov2 {
namespace {

using nlohmann::json;

std::string hex(const SecureBytes& b) {
  static const char d[] = "0123456789abcdef";
  std::string s;
  for (uint8_t x : b.span()) {
    s.push_back(d[x >> 4]);
    s.push_back(d[x & 15]);
  }
  return s;
}

// What state_store.cpp wrote before the hand-written writer (nlohmann::json).
json reference_sa_spec(const SaSpec& spec) {
  json j = sa_spec_public_json(spec);
  for (const char* k : {"key-bytes", "enc-key-bytes", "auth-key-bytes"}) j.erase(k);
  if (info(spec.enc).aead) {
    j["key"] = hex(spec.enc_key);
  } else {
    if (!spec.enc_key.empty()) j["enc-key"] = hex(spec.enc_key);
    j["auth-key"] = hex(spec.auth_key);
  }
  return j;
}

SecureBytes pattern_key(size_t n, uint8_t seed) {
  std::vector<uint8_t> b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + i * 7);
  return SecureBytes(std::span<const uint8_t>(b));
}

bool same_bytes(const SecureBytes& a, const SecureBytes& b) {
  return a.size() == b.size() && std::equal(a.span().begin(), a.span().end(), b.span().begin());
}

void expect_same_sa(const SaSpec& a, const SaSpec& b, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(a.dir, b.dir);
  EXPECT_EQ(a.mode, b.mode);
  EXPECT_EQ(a.src, b.src);
  EXPECT_EQ(a.dst, b.dst);
  EXPECT_EQ(a.spi, b.spi);
  EXPECT_EQ(a.enc, b.enc);
  EXPECT_EQ(a.auth, b.auth);
  EXPECT_TRUE(same_bytes(a.enc_key, b.enc_key));
  EXPECT_TRUE(same_bytes(a.auth_key, b.auth_key));
  EXPECT_EQ(a.esn, b.esn);
  EXPECT_EQ(a.seq_hi, b.seq_hi);
  EXPECT_EQ(a.udp_encap, b.udp_encap);
  if (a.udp_encap) {
    EXPECT_EQ(a.encap_sport, b.encap_sport);
    EXPECT_EQ(a.encap_dport, b.encap_dport);
  }
  EXPECT_EQ(a.replay_window, b.replay_window);
  EXPECT_EQ(a.life_packets, b.life_packets);
  EXPECT_EQ(a.life_bytes, b.life_bytes);
  EXPECT_EQ(a.life_seconds, b.life_seconds);
  EXPECT_EQ(a.inner_handle, b.inner_handle);
}

// Every algorithm combination validate_sa accepts, in several shapes.
std::vector<SaSpec> every_kind_of_sa() {
  std::vector<SaSpec> out;
  uint32_t spi = 0x1000;
  for (const EncAlgInfo& enc : enc_algorithms()) {
    std::vector<const AuthAlgInfo*> auths;
    if (enc.aead) {
      auths.push_back(&info(AuthAlg::None));
    } else {
      for (const AuthAlgInfo& a : auth_algorithms())
        if (a.alg != AuthAlg::None) auths.push_back(&a);
    }
    for (const AuthAlgInfo* auth : auths) {
      for (int shape = 0; shape < 4; ++shape) {
        SaSpec sa;
        const bool v6 = shape == 1 || shape == 3;
        sa.dir = shape % 2 == 0 ? Direction::Out : Direction::In;
        sa.mode = shape < 2 ? Mode::Tunnel : Mode::Transport;
        sa.src = IpAddr::parse(v6 ? "2001:db8::1" : "192.0.2.1");
        sa.dst = IpAddr::parse(v6 ? "2001:db8:0:ff::2" : "198.51.100.2");
        sa.spi = ++spi;
        sa.enc = enc.alg;
        sa.auth = auth->alg;
        sa.enc_key = pattern_key(size_t{enc.key_len} + enc.salt_len, static_cast<uint8_t>(spi));
        if (!enc.aead) sa.auth_key = pattern_key(size_t{auth->key_len} + auth->salt_len, static_cast<uint8_t>(spi * 3));
        if (shape == 0 || shape == 2) {  // NAT-T (IPv4 only)
          sa.udp_encap = true;
          sa.encap_sport = static_cast<uint16_t>(4500 + shape);
          sa.encap_dport = 61000;
        }
        if (shape != 2) {
          sa.esn = true;
          sa.seq_hi = 0x80000000u + spi;
        }
        sa.replay_window = shape == 3 ? 0 : 1024;
        sa.life_packets = {1000u + spi, 2000u + spi};
        sa.life_bytes = {shape == 1 ? 0 : uint64_t{1} << 40, UINT64_MAX};
        sa.life_seconds = {3000, 3600};
        if (sa.mode == Mode::Tunnel && shape == 0) sa.inner_handle = (uint64_t{12345} << 24) | 0xabcdef;
        try {
          validate_sa(sa);
        } catch (const Error&) {
          continue;  // a combination the project does not accept
        }
        out.push_back(std::move(sa));
      }
    }
  }
  return out;
}

TEST(StateJsonWriter, EverySaKindIsTheFormerDumpByteForByteAndParsesBackToTheSameSa) {
  const std::vector<SaSpec> sas = every_kind_of_sa();
  ASSERT_GE(sas.size(), 30u);  // every cipher, every HMAC/GMAC, both families, both modes
  bool saw_aead = false, saw_hmac = false, saw_null = false, saw_v6 = false, saw_bundle = false;
  for (const SaSpec& spec : sas) {
    const std::string what =
        std::string(info(spec.enc).name) + "/" + info(spec.auth).name + " spi " + std::to_string(spec.spi);
    std::string text;
    write_sa_spec(text, spec);
    EXPECT_EQ(text, reference_sa_spec(spec).dump()) << what;
    const SaSpec back = sa_spec_from_json(json::parse(text));
    expect_same_sa(spec, back, what);

    const SavedSa saved{(uint64_t{77} << 24) | spec.spi, spec, uint64_t{5} << 16};
    std::string record;
    write_sa_record(record, saved);
    const json ref = {{"op", "sa"},
                      {"handle", handle_to_string(saved.handle)},
                      {"seq_mark", saved.seq_mark},
                      {"spec", reference_sa_spec(spec)}};
    EXPECT_EQ(record, ref.dump()) << what;
    std::string entry;
    write_sa_entry(entry, saved);
    EXPECT_EQ(entry, (json{{"handle", handle_to_string(saved.handle)},
                           {"seq_mark", saved.seq_mark},
                           {"spec", reference_sa_spec(spec)}})
                         .dump())
        << what;

    saw_aead |= info(spec.enc).aead;
    saw_hmac |= spec.auth == AuthAlg::HmacSha256;
    saw_null |= spec.enc == EncAlg::Null;
    saw_v6 |= spec.src.family == Family::V6;
    saw_bundle |= spec.inner_handle != 0;
  }
  EXPECT_TRUE(saw_aead && saw_hmac && saw_null && saw_v6 && saw_bundle);
}

std::vector<PolicySpec> some_policies() {
  std::vector<PolicySpec> policies;
  policies.push_back(test::protect(Direction::Out, "10.1.0.0/24", "10.2.0.0/16", (uint64_t{3} << 24) | 5));
  PolicySpec tcp = test::policy(Direction::In, "2001:db8::/32", "2001:db8:1::/48", PolicyAction::Bypass, 0, 7);
  tcp.proto = 6;
  tcp.sport = {1024, 65535};
  tcp.dport = {443, 443};
  policies.push_back(tcp);
  PolicySpec udp = test::policy(Direction::Out, "0.0.0.0/0", "192.0.2.7/32", PolicyAction::Discard, 0, 0);
  udp.proto = 17;
  udp.dport = {53, 53};
  policies.push_back(udp);
  PolicySpec gre = test::policy(Direction::In, "::/0", "::/0", PolicyAction::Discard, 0, UINT32_MAX);
  gre.proto = 47;
  policies.push_back(gre);
  PolicySpec icmp = test::protect(Direction::In, "192.0.2.0/24", "198.51.100.0/24", uint64_t{1} << 24);
  icmp.proto = 1;
  policies.push_back(icmp);
  return policies;
}

TEST(StateJsonWriter, PoliciesAndSmallRecordsAreTheFormerDumpAndParseBack) {
  const std::vector<PolicySpec> policies = some_policies();
  uint32_t id = 1;
  for (const PolicySpec& p : policies) {
    validate_policy(p);
    std::string text;
    write_policy_spec(text, p);
    EXPECT_EQ(text, policy_spec_json(p).dump());
    const PolicySpec back = policy_spec_from_json(json::parse(text));
    EXPECT_EQ(back.dir, p.dir);
    EXPECT_EQ(back.src, p.src);
    EXPECT_EQ(back.dst, p.dst);
    EXPECT_EQ(back.proto, p.proto);
    EXPECT_EQ(back.sport, p.sport);
    EXPECT_EQ(back.dport, p.dport);
    EXPECT_EQ(back.action, p.action);
    EXPECT_EQ(back.sa_handle, p.sa_handle);
    EXPECT_EQ(back.priority, p.priority);
    const PolicyRecord rec{++id * 1000, p};
    std::string record;
    write_policy_record(record, rec);
    EXPECT_EQ(record, (json{{"op", "policy"}, {"id", rec.id}, {"spec", policy_spec_json(p)}}).dump());
    std::string entry;
    write_policy_entry(entry, rec);
    EXPECT_EQ(entry, (json{{"id", rec.id}, {"spec", policy_spec_json(p)}}).dump());
  }

  std::string s;
  write_sa_deleted_record(s, 0x1234567890abcdefu);
  EXPECT_EQ(s, (json{{"op", "sa-del"}, {"handle", handle_to_string(0x1234567890abcdefu)}}).dump());
  s.clear();
  write_policy_deleted_record(s, UINT32_MAX);
  EXPECT_EQ(s, (json{{"op", "policy-del"}, {"id", UINT32_MAX}}).dump());
  s.clear();
  write_seq_mark_record(s, 0x1000000, UINT64_MAX);
  EXPECT_EQ(s, (json{{"op", "mark"}, {"handle", "0x1000000"}, {"seq_mark", UINT64_MAX}}).dump());
  s.clear();
  write_sequences_record(s, (uint64_t{1} << 40) - 1, 4096);
  EXPECT_EQ(
      s, (json{{"op", "sequences"}, {"next_sa_sequence", (uint64_t{1} << 40) - 1}, {"next_policy_id", 4096}}).dump());
  s.clear();
  write_stop_record(s, 12, UINT32_MAX);
  EXPECT_EQ(s, (json{{"op", "stop"}, {"next_sa_sequence", 12}, {"next_policy_id", UINT32_MAX}}).dump());
}

// RFC 3720 B.4 (the CRC bytes there are the little-endian wire order) and the usual check value.
struct CrcVector {
  std::string data;
  uint32_t crc;
};

std::vector<CrcVector> rfc3720_vectors() {
  std::vector<CrcVector> v;
  v.push_back({std::string(32, '\0'), 0x8A9136AAu});
  v.push_back({std::string(32, '\xff'), 0x62A8AB43u});
  std::string up, down;
  for (int i = 0; i < 32; ++i) {
    up.push_back(static_cast<char>(i));
    down.push_back(static_cast<char>(31 - i));
  }
  v.push_back({up, 0x46DD794Eu});
  v.push_back({down, 0x113FDB5Cu});
  const uint8_t pdu[48] = {0x01, 0xc0, 0, 0,    0, 0, 0, 0,    0,    0, 0, 0, 0, 0, 0, 0, 0x14, 0, 0, 0, 0, 0, 0x04, 0,
                           0,    0,    0, 0x14, 0, 0, 0, 0x18, 0x28, 0, 0, 0, 0, 0, 0, 0, 0x02, 0, 0, 0, 0, 0, 0,    0};
  v.push_back({std::string(reinterpret_cast<const char*>(pdu), sizeof pdu), 0xD9963A56u});
  v.push_back({"123456789", 0xE3069283u});
  return v;
}

TEST(Crc32c, Rfc3720VectorsOnTheTableAndTheSse42Paths) {
  for (const CrcVector& t : rfc3720_vectors()) {
    EXPECT_EQ(crc32c_table(t.data), t.crc) << t.data.size() << " bytes";
    EXPECT_EQ(crc32c(t.data), t.crc);
    if (crc32c_hardware_available()) {
      EXPECT_EQ(crc32c_hardware(t.data), t.crc) << t.data.size() << " bytes";
    }
  }
#if defined(__x86_64__)
  EXPECT_TRUE(crc32c_hardware_available()) << "this machine has SSE4.2; the hardware path must be taken";
#endif
}

TEST(Crc32c, BothPathsAgreeOnEveryLengthAndSplitAndContinue) {
  std::string data;
  for (int i = 0; i < 300; ++i) data.push_back(static_cast<char>(i * 131 + 7));
  for (size_t len = 0; len <= data.size(); ++len) {
    const std::string_view d(data.data(), len);
    const uint32_t want = crc32c_table(d);
    if (crc32c_hardware_available()) {
      ASSERT_EQ(crc32c_hardware(d), want) << len;
    }
    const size_t half = len / 3;
    ASSERT_EQ(crc32c(d.substr(half), crc32c(d.substr(0, half))), want) << len;
    ASSERT_EQ(crc32c_table(d.substr(half), crc32c_table(d.substr(0, half))), want) << len;
  }
}

// A consistent state of every SA kind (a bundle, policies naming SAs of their direction).
DaemonState every_kind_of_state() {
  DaemonState s;
  uint64_t seq = 1;
  for (SaSpec& spec : every_kind_of_sa()) {
    spec.inner_handle = 0;
    const uint64_t handle = (seq << kHandleSlotBits) | (seq * 3);
    ++seq;
    const uint64_t mark = spec.dir == Direction::Out ? seq << 16 : 0;
    s.sas.push_back(SavedSa{handle, std::move(spec), mark});
  }
  const SavedSa* inner = nullptr;
  for (const SavedSa& sa : s.sas)
    if (inner == nullptr && sa.spec.mode == Mode::Transport && sa.spec.dir == Direction::Out && !sa.spec.udp_encap)
      inner = &sa;
  for (SavedSa& sa : s.sas)
    if (inner != nullptr && sa.spec.mode == Mode::Tunnel && sa.spec.dir == Direction::Out) {
      sa.spec.inner_handle = inner->handle;
      break;
    }
  s.next_sa_sequence = seq + 5;
  uint32_t id = 0;
  for (PolicySpec p : some_policies()) {
    if (p.action == PolicyAction::Protect)
      for (const SavedSa& sa : s.sas)
        if (sa.spec.dir == p.dir && sa.spec.inner_handle == 0 && &sa != inner) p.sa_handle = sa.handle;
    s.policies.push_back(PolicyRecord{id += 3, p});
  }
  s.next_policy_id = id + 1;
  s.journal_id = "0123456789abcdef";
  validate_state(s, "test");
  return s;
}

void expect_same_state(const DaemonState& a, const DaemonState& b, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(a.next_sa_sequence, b.next_sa_sequence);
  EXPECT_EQ(a.next_policy_id, b.next_policy_id);
  EXPECT_EQ(a.journal_id, b.journal_id);
  ASSERT_EQ(a.sas.size(), b.sas.size());
  for (size_t i = 0; i < a.sas.size(); ++i) {
    EXPECT_EQ(a.sas[i].handle, b.sas[i].handle);
    EXPECT_EQ(a.sas[i].seq_mark, b.sas[i].seq_mark);
    expect_same_sa(a.sas[i].spec, b.sas[i].spec, "SA #" + std::to_string(i + 1));
  }
  ASSERT_EQ(a.policies.size(), b.policies.size());
  for (size_t i = 0; i < a.policies.size(); ++i) {
    EXPECT_EQ(a.policies[i].id, b.policies[i].id);
    std::string ta, tb;
    write_policy_spec(ta, a.policies[i].spec);
    write_policy_spec(tb, b.policies[i].spec);
    EXPECT_EQ(ta, tb);
  }
}

// parse_state (fast reader first) and the reference give the same state, or both refuse with the same message.
// Returns true when they accepted it.
bool expect_same_answer(std::string_view text, const std::string& what) {
  std::string fast_error, ref_error;
  std::optional<DaemonState> fast, ref;
  try {
    fast = parse_state(text, "state.json");
  } catch (const Error& e) {
    fast_error = e.what();
  }
  try {
    ref = parse_state_reference(text, "state.json");
  } catch (const Error& e) {
    ref_error = e.what();
  }
  EXPECT_EQ(fast_error, ref_error) << what;
  EXPECT_EQ(fast.has_value(), ref.has_value()) << what;
  if (fast && ref) expect_same_state(*fast, *ref, what);
  return fast.has_value() && ref.has_value();
}

TEST(StateJsonReader, TheWritersSnapshotIsReadByTheFastPathToWhatTheReferenceReads) {
  const DaemonState state = every_kind_of_state();
  ASSERT_GE(state.sas.size(), 30u);
  std::string text = serialize_state(state);
  ASSERT_TRUE(fast_parse_state(text).has_value());
  bool fast = false;
  const DaemonState back = parse_state(text, "state.json", &fast);
  EXPECT_TRUE(fast);
  expect_same_state(back, state, "fast path vs the saved state");
  expect_same_state(parse_state_reference(text, "state.json"), state, "reference vs the saved state");
  // An empty state, too.
  EXPECT_TRUE(fast_parse_state(serialize_state(DaemonState{})).has_value());
  wipe_string(text);
}

TEST(StateJsonReader, OlderAndHandWrittenShapesStillLoadThroughTheReference) {
  const DaemonState state = every_kind_of_state();
  // The snapshot as nlohmann wrote it before the hand-written writer (dump(1), keys sorted), with and
  // without a journal_id (before the journal).
  json old = {{"magic", kStateMagic},
              {"version", kStateVersion},
              {"next_sa_sequence", state.next_sa_sequence},
              {"next_policy_id", state.next_policy_id},
              {"sas", json::array()},
              {"policies", json::array()}};
  for (const SavedSa& sa : state.sas)
    old["sas"].push_back(
        {{"handle", handle_to_string(sa.handle)}, {"seq_mark", sa.seq_mark}, {"spec", reference_sa_spec(sa.spec)}});
  for (const PolicyRecord& p : state.policies)
    old["policies"].push_back({{"id", p.id}, {"spec", policy_spec_json(p.spec)}});
  DaemonState no_journal = parse_state(old.dump(1), "old");
  EXPECT_EQ(no_journal.journal_id, "");
  no_journal.journal_id = state.journal_id;
  expect_same_state(no_journal, state, "pre-journal nlohmann dump(1)");
  old["journal_id"] = state.journal_id;
  for (int indent : {-1, 1, 4}) {
    expect_same_state(parse_state(old.dump(indent), "old"), state, "nlohmann dump(" + std::to_string(indent) + ")");
    expect_same_answer(old.dump(indent), "nlohmann dump");
  }

  // Shapes the fast reader leaves to the reference: numbers as strings, an unknown top-level field, escapes.
  json odd = old;
  odd["sas"][0]["spec"]["spi"] = "0x" + std::to_string(state.sas[0].spec.spi);  // hex text of decimal digits
  odd["comment"] = "written by hand";
  std::string text = odd.dump();
  const std::string handle = "\"" + handle_to_string(state.sas[1].handle) + "\"";
  text.replace(text.find(handle), handle.size(), "\"\\u0030x" + handle_to_string(state.sas[1].handle).substr(2) + "\"");
  EXPECT_FALSE(fast_parse_state(text).has_value());
  bool fast = true;
  const DaemonState back = parse_state(text, "odd", &fast);
  EXPECT_FALSE(fast);
  EXPECT_EQ(back.sas[0].spec.spi, std::stoul(std::to_string(state.sas[0].spec.spi), nullptr, 16));
  EXPECT_EQ(back.sas[1].handle, state.sas[1].handle);
  expect_same_answer(text, "hand-written shapes");
}

TEST(StateJsonReader, EveryCutAndEveryDamagedByteGetsTheReferencesAnswer) {
  // A small state of several kinds: every prefix of its text, and every byte replaced by a few others.
  const DaemonState all = every_kind_of_state();
  DaemonState s;
  s.next_sa_sequence = all.next_sa_sequence;
  s.next_policy_id = all.next_policy_id;
  s.journal_id = all.journal_id;
  for (size_t i : {size_t{0}, all.sas.size() - 1}) {  // an AEAD SA with NAT-T, an enc + auth SA
    SavedSa copy{all.sas[i].handle, all.sas[i].spec, all.sas[i].seq_mark};
    copy.spec.inner_handle = 0;
    s.sas.push_back(std::move(copy));
  }
  s.policies.push_back(all.policies[1]);  // a bypass with ports
  validate_state(s, "small");
  const std::string text = serialize_state(s);
  size_t accepted = 0, cases = 0;
  for (size_t cut = 0; cut < text.size(); ++cut) {
    accepted += expect_same_answer(text.substr(0, cut), "cut at " + std::to_string(cut));
    ++cases;
  }
  for (size_t at = 0; at < text.size(); ++at)
    for (char c : {'9', 'x', '"', ',', '.', '\\'}) {
      if (text[at] == c) continue;
      std::string damaged = text;
      damaged[at] = c;
      accepted += expect_same_answer(damaged, std::string("byte ") + std::to_string(at) + " -> " + std::to_string(c));
      ++cases;
    }
  // Some damage still makes a valid state (another SPI, a whitespace): both take it the same way.
  EXPECT_GT(accepted, 0u);
  EXPECT_GT(cases, 5000u);
}

// A clean stop's record sets the sequences to its exact values (the reservations before it go); a
// reservation after it raises them again.  Fast path and reference alike.
TEST(StateJsonReader, TheStopRecordSetsTheExactSequences) {
  DaemonState base;
  base.next_sa_sequence = 5;
  base.next_policy_id = 3;
  std::vector<std::string> records = {"{\"journal\":\"header\"}", "", "", ""};
  write_sequences_record(records[1], 5 + 4096, 3 + 4096);
  write_stop_record(records[2], 6, 4);
  FastRecord one;
  ASSERT_TRUE(fast_parse_record(records[2], one));
  EXPECT_EQ(one.op, FastRecord::Op::Stop);
  for (const bool fast : {true, false}) {
    SCOPED_TRACE(fast);
    const DaemonState stopped = replay_journal(base, {records.begin(), records.begin() + 3}, 1, "j", fast);
    EXPECT_EQ(stopped.next_sa_sequence, 6u);
    EXPECT_EQ(stopped.next_policy_id, 4u);
    write_sequences_record(records[3] = "", 6 + 4096, 4 + 4096);
    const DaemonState again = replay_journal(base, records, 1, "j", fast);
    EXPECT_EQ(again.next_sa_sequence, 6u + 4096);
    EXPECT_EQ(again.next_policy_id, 4u + 4096);
  }
}

TEST(StateJsonReader, JournalRecordsReplayToWhatTheReferenceReplays) {
  const DaemonState all = every_kind_of_state();
  DaemonState base;
  base.next_sa_sequence = all.next_sa_sequence;
  base.next_policy_id = all.next_policy_id;
  std::vector<std::string> records = {"{\"journal\":\"header\"}"};
  auto add = [&](auto write) {
    std::string r;
    write(r);
    records.push_back(std::move(r));
  };
  for (const SavedSa& sa : all.sas) add([&](std::string& r) { write_sa_record(r, sa); });
  for (const PolicyRecord& p : all.policies) add([&](std::string& r) { write_policy_record(r, p); });
  add([&](std::string& r) { write_seq_mark_record(r, all.sas[0].handle, uint64_t{9} << 40); });
  add([&](std::string& r) { write_sequences_record(r, all.next_sa_sequence + 4096, all.next_policy_id + 4096); });
  add([&](std::string& r) { write_policy_deleted_record(r, all.policies[1].id); });
  add([&](std::string& r) { write_sa_deleted_record(r, all.sas[3].handle); });
  FastRecord one;
  for (size_t i = 1; i < records.size(); ++i) EXPECT_TRUE(fast_parse_record(records[i], one)) << records[i];

  const DaemonState fast = replay_journal(base, records, 1, "state.journal");
  const DaemonState ref = replay_journal(base, records, 1, "state.journal", false);
  expect_same_state(fast, ref, "fast vs reference replay");
  EXPECT_EQ(fast.sas.size(), all.sas.size() - 1);
  EXPECT_EQ(fast.sas[0].seq_mark, uint64_t{9} << 40);
  EXPECT_EQ(fast.next_sa_sequence, all.next_sa_sequence + 4096);

  // Records of every kind damaged at every byte (a few replacements), each replayed over the state the
  // records before it made: the same state or the same error.
  size_t cases = 0;
  for (size_t r : {size_t{1}, size_t{2}, records.size() - 7, records.size() - 5, records.size() - 4, records.size() - 3,
                   records.size() - 2, records.size() - 1}) {
    const std::vector<std::string> before(records.begin(), records.begin() + static_cast<std::ptrdiff_t>(r));
    const DaemonState over = replay_journal(base, before, 1, "state.journal", false);
    for (size_t at = 0; at < records[r].size(); ++at)
      for (char c : {'0', '"', '}', '-'}) {
        if (records[r][at] == c) continue;
        std::vector<std::string> damaged = {records[0], records[r]};
        damaged[1][at] = c;
        std::string fast_error, ref_error;
        std::optional<DaemonState> f, g;
        try {
          f = replay_journal(over, damaged, 1, "state.journal");
        } catch (const Error& e) {
          fast_error = e.what();
        }
        try {
          g = replay_journal(over, damaged, 1, "state.journal", false);
        } catch (const Error& e) {
          ref_error = e.what();
        }
        ASSERT_EQ(fast_error, ref_error) << "record " << r << " byte " << at;
        ASSERT_EQ(f.has_value(), g.has_value());
        if (f && g) expect_same_state(*f, *g, "record " + std::to_string(r) + " byte " + std::to_string(at));
        ++cases;
      }
  }
  EXPECT_GT(cases, 1000u);
}

}  // namespace
}  // namespace ov2
