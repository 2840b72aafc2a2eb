#include "control/state_store.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "common/error.h"
#include "common/stopwatch.h"
#include "control/state_json_reader.h"
#include "control/state_json_writer.h"
#include "model/sa_json.h"

namespace ov2 {

namespace {

using nlohmann::json;

// Wipes every string inside `j` (key hex) before it is destroyed.
void wipe_json(json& j) {
  if (j.is_string()) {
    wipe_string(j.get_ref<std::string&>());
  } else if (j.is_structured()) {
    for (auto& v : j) wipe_json(v);
  }
}

[[noreturn]] void bad_state(const std::string& name, const std::string& what) {
  fail(ErrorCode::InvalidArgument, name + ": " + what);
}

const json& field(const json& j, const char* key, const std::string& where, const std::string& name) {
  auto it = j.find(key);
  if (it == j.end()) bad_state(name, where + " has no '" + key + "'");
  return *it;
}

uint64_t number(const json& j, const char* key, const std::string& where, const std::string& name, uint64_t max) {
  const json& v = field(j, key, where, name);
  if (!v.is_number_unsigned() || v.get<uint64_t>() > max)
    bad_state(name, where + ": '" + key + "' must be a number from 0 to " + std::to_string(max));
  return v.get<uint64_t>();
}

std::string utc_timestamp() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

[[noreturn]] void sys_fail(const std::string& what) { fail(ErrorCode::Kernel, what + ": " + std::strerror(errno)); }

// Makes room for `room` more bytes in `s`, which holds key hex: grown by hand,
// because a std::string reallocation would free the old bytes unwiped.
void reserve_wiped(std::string& s, size_t room) {
  if (s.capacity() - s.size() >= room) return;
  std::string bigger;
  bigger.reserve(std::max(s.capacity() * 2, s.size() + room + (size_t{64} << 10)));
  bigger.append(s);
  wipe_string(s);
  s.swap(bigger);
}

// Room for one SA or policy of the snapshot, or one journal record (an SA
// with the longest keys is about 700 bytes of text).
constexpr size_t kEntryRoom = 4096;

}  // namespace

void wipe_string(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
  s.shrink_to_fit();
}

namespace {

// serialize_state's text; false (the text wiped) as soon as `cancel` is set (checked every 1024 entries).
bool serialize_unless_cancelled(const DaemonState& state, std::string& text, const std::atomic<bool>* cancel) {
  // Hand-written (state_json_writer.h): one SA or policy per line, no json tree of the keys.
  auto cancelled = [&](size_t i) {
    if (cancel == nullptr || i % 1024 != 0 || !cancel->load(std::memory_order_relaxed)) return false;
    wipe_string(text);
    return true;
  };
  text.reserve(256 + state.sas.size() * 640 + state.policies.size() * 256);
  text += "{\"magic\":\"";
  text += kStateMagic;
  text += "\",\"version\":" + std::to_string(kStateVersion);
  text += ",\"next_sa_sequence\":" + std::to_string(state.next_sa_sequence);
  text += ",\"next_policy_id\":" + std::to_string(state.next_policy_id);
  if (!state.journal_id.empty()) text += ",\"journal_id\":" + json(state.journal_id).dump();
  text += ",\n\"sas\":[";
  for (size_t i = 0; i < state.sas.size(); ++i) {
    if (cancelled(i)) return false;
    reserve_wiped(text, kEntryRoom);
    text += i == 0 ? "\n" : ",\n";
    write_sa_entry(text, state.sas[i]);
  }
  reserve_wiped(text, kEntryRoom);
  text += "],\n\"policies\":[";
  for (size_t i = 0; i < state.policies.size(); ++i) {
    if (cancelled(i)) return false;
    reserve_wiped(text, kEntryRoom);
    text += i == 0 ? "\n" : ",\n";
    write_policy_entry(text, state.policies[i]);
  }
  text += "]}\n";
  return true;
}

}  // namespace

std::string serialize_state(const DaemonState& state) {
  std::string text;
  serialize_unless_cancelled(state, text, nullptr);
  return text;
}

DaemonState parse_state(std::string_view text, const std::string& name, bool* fast_path) {
  bool fast = false;
  DaemonState s = parse_state_unchecked(text, name, &fast, 0);
  if (fast) validate_state(s, name);  // (the reference path checked it)
  if (fast_path != nullptr) *fast_path = fast;
  return s;
}

DaemonState parse_state_unchecked(std::string_view text, const std::string& name, bool* fast_path, size_t more_sas) {
  if (fast_path != nullptr) *fast_path = false;
  // What this daemon's writer wrote: read without a json tree (state_json_reader.h); anything else,
  // and every bad file, through the reference path below (same result, same messages).
  if (std::optional<DaemonState> fast = fast_parse_state(text, more_sas)) {
    if (fast_path != nullptr) *fast_path = true;
    return std::move(*fast);
  }
  return parse_state_reference(text, name);
}

DaemonState parse_state_reference(std::string_view text, const std::string& name) {
  json j = json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded()) bad_state(name, "is not valid JSON (truncated or corrupt); it was not applied");
  struct Wiper {
    json& j;
    ~Wiper() { wipe_json(j); }
  } wiper{j};
  if (!j.is_object() || !j.contains("magic") || j["magic"] != kStateMagic)
    bad_state(name, std::string("is not an ipsecov2 state file (no \"magic\": \"") + kStateMagic + "\")");
  if (!j.contains("version") || j["version"] != kStateVersion)
    bad_state(name, "has state file version " + (j.contains("version") ? j["version"].dump() : std::string("(none)")) +
                        "; this daemon reads version " + std::to_string(kStateVersion));
  DaemonState s;
  s.next_sa_sequence = number(j, "next_sa_sequence", "the file", name, (uint64_t{1} << 40) - 1);
  s.next_policy_id = static_cast<uint32_t>(number(j, "next_policy_id", "the file", name, UINT32_MAX));
  const json& sas = field(j, "sas", "the file", name);
  const json& policies = field(j, "policies", "the file", name);
  if (!sas.is_array() || !policies.is_array()) bad_state(name, "'sas' and 'policies' must be lists");

  if (auto id = j.find("journal_id"); id != j.end()) {
    if (!id->is_string()) bad_state(name, "'journal_id' must be a string");
    s.journal_id = id->get<std::string>();
  }

  for (size_t i = 0; i < sas.size(); ++i) {
    const std::string where = "SA #" + std::to_string(i + 1);
    const json& e = sas[i];
    if (!e.is_object()) bad_state(name, where + " is not an object");
    SavedSa sa;
    try {
      sa.handle = parse_handle(field(e, "handle", where, name).get<std::string>());
      sa.spec = sa_spec_from_json(field(e, "spec", where, name));
    } catch (const Error& err) {
      bad_state(name, where + ": " + err.what());
    } catch (const json::exception&) {
      bad_state(name, where + ": 'handle' must be a string such as \"0x1000000\"");
    }
    sa.seq_mark = number(e, "seq_mark", where, name, UINT64_MAX);
    s.sas.push_back(std::move(sa));
  }
  for (size_t i = 0; i < policies.size(); ++i) {
    const std::string where = "policy #" + std::to_string(i + 1);
    const json& e = policies[i];
    if (!e.is_object()) bad_state(name, where + " is not an object");
    PolicyRecord p;
    p.id = static_cast<uint32_t>(number(e, "id", where, name, UINT32_MAX));
    try {
      p.spec = policy_spec_from_json(field(e, "spec", where, name));
      validate_policy(p.spec);
    } catch (const Error& err) {
      bad_state(name, where + ": " + err.what());
    }
    s.policies.push_back(p);
  }
  validate_state(s, name);
  return s;
}

void validate_state(const DaemonState& s, const std::string& name) {
  // Hash tables (this runs on every SA of a restore); the first SA found wrong is the same as with ordered sets.
  std::unordered_map<uint64_t, const SavedSa*> by_handle;
  by_handle.reserve(s.sas.size());
  for (size_t i = 0; i < s.sas.size(); ++i) {
    const SavedSa& sa = s.sas[i];
    if ((sa.handle >> kHandleSlotBits) >= s.next_sa_sequence)
      bad_state(name, "SA #" + std::to_string(i + 1) + ": handle " + handle_to_string(sa.handle) +
                          " is not below the saved handle sequence (next_sa_sequence " +
                          std::to_string(s.next_sa_sequence) + "): inconsistent file");
    if (!by_handle.emplace(sa.handle, &sa).second)
      bad_state(name, "SA #" + std::to_string(i + 1) + ": handle " + handle_to_string(sa.handle) + " appears twice");
  }
  struct LookupKey {
    uint32_t spi;
    IpAddr dst;
    Direction dir;
    bool operator==(const LookupKey&) const = default;
  };
  struct LookupHash {
    size_t operator()(const LookupKey& k) const {
      uint64_t h = (uint64_t{k.spi} << 8) ^ static_cast<uint64_t>(k.dir) ^ (static_cast<uint64_t>(k.dst.family) << 4);
      for (uint8_t b : k.dst.bytes) h = (h ^ b) * 0x100000001b3ULL;
      return static_cast<size_t>(h);
    }
  };
  std::unordered_set<LookupKey, LookupHash> lookup_keys;
  lookup_keys.reserve(s.sas.size());
  std::vector<bool> slots(kHandleSlotMask + 1, false);
  std::unordered_set<uint64_t> inner_used;
  for (const SavedSa& sa : s.sas) {
    if (!lookup_keys.insert({sa.spec.spi, sa.spec.dst, sa.spec.dir}).second)
      bad_state(name, "SA " + handle_to_string(sa.handle) + ": another SA has the same SPI, destination and direction");
    if (slots[handle_slot(sa.handle)])
      bad_state(name, "SA " + handle_to_string(sa.handle) + ": another SA has the same slot");
    slots[handle_slot(sa.handle)] = true;
    if (sa.spec.inner_handle != 0) {
      auto it = by_handle.find(sa.spec.inner_handle);
      if (it == by_handle.end() || it->second->spec.mode != Mode::Transport || it->second->spec.dir != sa.spec.dir ||
          it->second->spec.inner_handle != 0 || !inner_used.insert(sa.spec.inner_handle).second)
        bad_state(name, "SA " + handle_to_string(sa.handle) + ": its bundle's inner SA " +
                            handle_to_string(sa.spec.inner_handle) +
                            " is missing, not a transport SA of the same direction, or in two bundles");
    }
  }

  std::set<uint32_t> ids;
  for (size_t i = 0; i < s.policies.size(); ++i) {
    const std::string where = "policy #" + std::to_string(i + 1);
    const PolicyRecord& p = s.policies[i];
    if (p.id == 0 || p.id >= s.next_policy_id || !ids.insert(p.id).second)
      bad_state(name, where + ": id " + std::to_string(p.id) +
                          " is 0, appears twice or is not below next_policy_id: inconsistent file");
    if (p.spec.action == PolicyAction::Protect) {
      auto it = by_handle.find(p.spec.sa_handle);
      if (it == by_handle.end() || it->second->spec.dir != p.spec.dir)
        bad_state(name, where + " (id " + std::to_string(p.id) + ") protects with SA " +
                            handle_to_string(p.spec.sa_handle) +
                            ", which is not in the file or of the other direction");
    }
  }
}

namespace {

uint32_t get_u32(std::string_view in, size_t at) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t{static_cast<unsigned char>(in[at + static_cast<size_t>(i)])} << (8 * i);
  return v;
}

bool all_zero(std::string_view bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](char c) { return c == 0; });
}

constexpr const char* kJournalMagic = "ipsecov2-journal";

}  // namespace

void seal_journal_record(std::string& buffer, size_t at) {
  const auto len = static_cast<uint32_t>(buffer.size() - at - 8);
  for (int i = 0; i < 4; ++i) buffer[at + static_cast<size_t>(i)] = static_cast<char>((len >> (8 * i)) & 0xFF);
  const std::string_view record(buffer.data() + at, buffer.size() - at);
  const uint32_t sum = crc32c(record.substr(8), crc32c(record.substr(0, 4)));
  for (int i = 0; i < 4; ++i) buffer[at + 4 + static_cast<size_t>(i)] = static_cast<char>((sum >> (8 * i)) & 0xFF);
}

std::string encode_journal_record(std::string_view payload) {
  std::string out;
  out.reserve(payload.size() + 8);
  out.append(8, '\0');
  out.append(payload);
  seal_journal_record(out, 0);
  return out;
}

JournalScan scan_journal(std::string_view bytes, const std::string& name) {
  JournalScan scan;
  size_t off = 0;
  while (off < bytes.size()) {
    const std::string at = name + ": offset " + std::to_string(off) + ": ";
    const size_t left = bytes.size() - off;
    if (left < 8) {
      scan.torn_warning = at + "an incomplete record header (" + std::to_string(left) + " bytes) at the end";
      break;
    }
    const uint32_t len = get_u32(bytes, off);
    if (len > left - 8) {
      // A record cut by a crash; an impossible length followed by data is damage, not a cut.
      if (len > kMaxJournalPayload && !all_zero(bytes.substr(off)))
        bad_state(name, "offset " + std::to_string(off) + ": a record length of " + std::to_string(len) +
                            " bytes is impossible: the journal is damaged; nothing was applied");
      scan.torn_warning = at + "the last record (length " + std::to_string(len) + ") runs past the end of the file (" +
                          std::to_string(left) + " bytes left)";
      break;
    }
    const std::string_view payload = bytes.substr(off + 8, len);
    const uint32_t sum = crc32c(payload, crc32c(bytes.substr(off, 4)));
    if (sum != get_u32(bytes, off + 4)) {
      const size_t end = off + 8 + len;
      if (end == bytes.size() || all_zero(bytes.substr(off))) {
        scan.torn_warning = at + "the last record (length " + std::to_string(len) + ") has a bad checksum";
        break;
      }
      bad_state(name, "offset " + std::to_string(off) + ": a record with a bad checksum, followed by " +
                          std::to_string(bytes.size() - end) +
                          " more bytes: the journal is damaged before its end; nothing was applied");
    }
    scan.payloads.push_back(payload);
    off += 8 + len;
  }
  scan.valid_bytes = off;
  return scan;
}

namespace {
// A "sequences" record reserves (the sequences go up to it at least); the "stop" record of a clean
// stop holds the exact values (the reservations before it are not needed any more).
void apply_sequences(DaemonState& state, uint64_t next_sa_sequence, uint32_t next_policy_id, bool exact) {
  state.next_sa_sequence = exact ? next_sa_sequence : std::max(state.next_sa_sequence, next_sa_sequence);
  state.next_policy_id = exact ? next_policy_id : std::max(state.next_policy_id, next_policy_id);
}
}  // namespace

namespace {

// The SAs or the policies of a replay: the loaded list, changed in place by key (no copy into a map
// and back), entries deleted only marked until finish().  The result is in key order, like the
// snapshot (a list that is not sorted yet is sorted once, at the end).
template <typename T, typename Key>
class KeyedList {
 public:
  KeyedList(std::vector<T>& items, Key T::*key, size_t more) : items_(items), key_(key), more_(more) {
    live_.assign(items_.size(), true);
  }
  T* find(Key k) {
    const auto& index = indexed();
    auto it = index.find(k);
    return it == index.end() ? nullptr : &items_[it->second];
  }
  void put(T&& item) {
    const Key k = item.*key_;
    auto& index = indexed();
    const auto it = index.find(k);
    if (it != index.end()) {
      items_[it->second] = std::move(item);
      return;
    }
    note_added(k, items_.size());
    items_.push_back(std::move(item));
    live_.push_back(true);
  }
  bool erase(Key k) {
    auto& index = indexed();
    auto it = index.find(k);
    if (it == index.end()) return false;
    items_[it->second] = T{};  // its keys are wiped now
    live_[it->second] = false;
    index.erase(it);
    ++dead_;
    return true;
  }
  void finish() {
    if (dead_ > 0) {
      size_t out = 0;
      for (size_t i = 0; i < items_.size(); ++i)
        if (live_[i]) {
          if (out != i) items_[out] = std::move(items_[i]);
          ++out;
        }
      items_.resize(out);
    }
    // (Erasing keeps the order; only an entry added below an earlier one breaks it.  Without the
    // index, nothing was looked at: the list as loaded.)
    auto less = [this](const T& a, const T& b) { return a.*key_ < b.*key_; };
    if (!indexed_) sorted_ = std::is_sorted(items_.begin(), items_.end(), less);
    if (!sorted_) std::sort(items_.begin(), items_.end(), less);
  }

 private:
  // Built at the first record that needs it (a journal of only sequence records never does).
  std::unordered_map<Key, size_t>& indexed() {
    if (!indexed_) {
      indexed_ = true;
      index_.reserve(items_.size() + more_);
      for (size_t i = 0; i < items_.size(); ++i) note_added(items_[i].*key_, i);
    }
    return index_;
  }
  void note_added(Key k, size_t at) {
    if (at > 0 && !(last_ < k)) sorted_ = false;
    last_ = k;
    index_.emplace(k, at);
  }

  std::vector<T>& items_;
  Key T::*key_;
  size_t more_;
  std::unordered_map<Key, size_t> index_;
  bool indexed_ = false;
  std::vector<bool> live_;
  size_t dead_ = 0;
  bool sorted_ = true;  // every entry added after one with a smaller key
  Key last_{};
};

// Replays journal records over a state: each record parsed where it lies (string_view into the
// bytes read), applied to the final lists directly; validate_state runs once, in finish().
class JournalReplay {
 public:
  JournalReplay(DaemonState state, size_t records)
      : state_(std::move(state)),
        sas_(state_.sas, &SavedSa::handle, records),
        policies_(state_.policies, &PolicyRecord::id, 0) {}

  void apply(std::span<const std::string_view> payloads, size_t first, const std::string& name, bool fast_reader) {
    for (size_t i = first; i < payloads.size(); ++i) {
      // What this daemon's writer wrote (state_json_reader.h); anything else through nlohmann.
      if (fast_reader && fast_parse_record(payloads[i], fast_)) {
        apply_fast(i, name);
        fast_.sa = {};
      } else {
        apply_reference(payloads[i], "record #" + std::to_string(i + 1), name);
      }
    }
  }

  DaemonState finish(const std::string& name) {
    sas_.finish();
    policies_.finish();
    validate_state(state_, name);
    return std::move(state_);
  }

 private:
  void apply_fast(size_t i, const std::string& name) {
    const uint64_t h = fast_.sa.handle;
    switch (fast_.op) {
      case FastRecord::Op::Sa:
        sas_.put(std::move(fast_.sa));
        break;
      case FastRecord::Op::SaDeleted:
        if (!sas_.erase(h))
          bad_state(name,
                    "record #" + std::to_string(i + 1) + " deletes SA " + handle_to_string(h) + ", which is not there");
        break;
      case FastRecord::Op::Mark: {
        SavedSa* sa = sas_.find(h);
        if (sa == nullptr)
          bad_state(name,
                    "record #" + std::to_string(i + 1) + " marks SA " + handle_to_string(h) + ", which is not there");
        sa->seq_mark = std::max(sa->seq_mark, fast_.sa.seq_mark);
        break;
      }
      case FastRecord::Op::Policy:
        policies_.put(PolicyRecord(fast_.policy));
        break;
      case FastRecord::Op::PolicyDeleted:
        if (!policies_.erase(fast_.policy.id))
          bad_state(name, "record #" + std::to_string(i + 1) + " deletes policy " + std::to_string(fast_.policy.id) +
                              ", which is not there");
        break;
      case FastRecord::Op::Sequences:
      case FastRecord::Op::Stop:
        apply_sequences(state_, fast_.next_sa_sequence, fast_.next_policy_id, fast_.op == FastRecord::Op::Stop);
        break;
    }
  }

  void apply_reference(std::string_view payload, const std::string& where, const std::string& name) {
    json r = json::parse(payload.begin(), payload.end(), nullptr, false);
    struct Wiper {
      json& j;
      ~Wiper() { wipe_json(j); }
    } wiper{r};
    if (!r.is_object() || !r.contains("op") || !r["op"].is_string())
      bad_state(name, where + " is not a journal record");
    const std::string op = r["op"].get<std::string>();
    try {
      if (op == "sa") {
        SavedSa sa;
        sa.handle = parse_handle(field(r, "handle", where, name).get<std::string>());
        sa.spec = sa_spec_from_json(field(r, "spec", where, name));
        sa.seq_mark = number(r, "seq_mark", where, name, UINT64_MAX);
        sas_.put(std::move(sa));
      } else if (op == "sa-del") {
        const uint64_t h = parse_handle(field(r, "handle", where, name).get<std::string>());
        if (!sas_.erase(h)) bad_state(name, where + " deletes SA " + handle_to_string(h) + ", which is not there");
      } else if (op == "mark") {
        const uint64_t h = parse_handle(field(r, "handle", where, name).get<std::string>());
        SavedSa* sa = sas_.find(h);
        if (sa == nullptr) bad_state(name, where + " marks SA " + handle_to_string(h) + ", which is not there");
        sa->seq_mark = std::max(sa->seq_mark, number(r, "seq_mark", where, name, UINT64_MAX));
      } else if (op == "policy") {
        PolicyRecord p;
        p.id = static_cast<uint32_t>(number(r, "id", where, name, UINT32_MAX));
        p.spec = policy_spec_from_json(field(r, "spec", where, name));
        validate_policy(p.spec);
        policies_.put(std::move(p));
      } else if (op == "policy-del") {
        const auto id = static_cast<uint32_t>(number(r, "id", where, name, UINT32_MAX));
        if (!policies_.erase(id))
          bad_state(name, where + " deletes policy " + std::to_string(id) + ", which is not there");
      } else if (op == "sequences" || op == "stop") {
        apply_sequences(state_, number(r, "next_sa_sequence", where, name, (uint64_t{1} << 40) - 1),
                        static_cast<uint32_t>(number(r, "next_policy_id", where, name, UINT32_MAX)), op == "stop");
      } else {
        bad_state(name, where + " has the unknown op '" + op + "'");
      }
    } catch (const json::exception&) {
      bad_state(name, where + ": a field has the wrong type");
    } catch (const Error& e) {
      const std::string what = e.what();
      if (what.rfind(name + ": ", 0) == 0) throw;
      bad_state(name, where + ": " + what);
    }
  }

  DaemonState state_;
  KeyedList<SavedSa, uint64_t> sas_;
  KeyedList<PolicyRecord, uint32_t> policies_;
  FastRecord fast_;
};

}  // namespace

DaemonState replay_journal(DaemonState state, std::span<const std::string_view> payloads, size_t first,
                           const std::string& name, bool fast_reader) {
  JournalReplay replay(std::move(state), payloads.size());
  replay.apply(payloads, first, name, fast_reader);
  return replay.finish(name);
}

DaemonState replay_journal(DaemonState state, const std::vector<std::string>& payloads, size_t first,
                           const std::string& name, bool fast_reader) {
  const std::vector<std::string_view> views(payloads.begin(), payloads.end());
  return replay_journal(std::move(state), views, first, name, fast_reader);
}

StateStore::StateStore(std::string dir)
    : dir_(std::move(dir)),
      path_(dir_ + "/state.json"),
      journal_path_(dir_ + "/state.journal"),
      next_journal_path_(dir_ + "/state.journal.next") {
  // Tests only: compact whenever the journal passes N bytes, and hold each background snapshot
  // for M ms before it is renamed into place (to kill the daemon in the middle of one).
  if (const char* v = std::getenv("OV2_TEST_COMPACT_EVERY_BYTES")) compact_every_bytes_ = std::strtoull(v, nullptr, 10);
  if (const char* v = std::getenv("OV2_TEST_COMPACT_DELAY_MS"))
    compact_delay_ms_ = static_cast<unsigned>(std::strtoul(v, nullptr, 10));
  // Missing parents are created like `mkdir -p` would; the state directory itself is 0700.
  std::error_code ec;
  const auto parent = std::filesystem::path(dir_).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  if (mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST) sys_fail("cannot create the state directory " + dir_);
  struct stat st {};
  if (stat(dir_.c_str(), &st) != 0) sys_fail("cannot stat the state directory " + dir_);
  if (!S_ISDIR(st.st_mode)) fail(ErrorCode::InvalidArgument, dir_ + " (state directory) is not a directory");
  // Keys live here: nobody but root (and at most the socket group, reading) gets in.
  if ((st.st_mode & 0027) != 0 && chmod(dir_.c_str(), st.st_mode & 0750) != 0)
    sys_fail("cannot restrict the state directory " + dir_ + " to 0750");
  const std::string lock_path = dir_ + "/state.lock";
  lock_fd_ = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (lock_fd_ < 0) sys_fail("cannot open " + lock_path);
  if (flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    close(lock_fd_);
    lock_fd_ = -1;
    if (err == EWOULDBLOCK)
      fail(ErrorCode::Exists, "another ipsecov2d uses the state directory " + dir_ + " (" + lock_path +
                                  " is locked); give each daemon its own --state-dir");
    errno = err;
    sys_fail("cannot lock " + lock_path);
  }
}

StateStore::~StateStore() {
  if (compactor_.joinable()) compactor_.join();  // what it wrote is consistent either way
  wipe_string(pending_);
  if (journal_fd_ >= 0) close(journal_fd_);
  if (lock_fd_ >= 0) close(lock_fd_);
}

namespace {

// Writes all of `text` to `fd`; false (errno set) on failure.
bool write_all(int fd, std::string_view text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

// Writes `text` to `tmp` (0600) and fsyncs it; returns the open fd.  Wipes `text`.
int write_temp(const std::string& tmp, std::string& text) {
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    wipe_string(text);
    sys_fail("cannot write the state file " + tmp);
  }
  fchmod(fd, 0600);  // an old temp file could have had another mode
  const bool ok = write_all(fd, text) && fsync(fd) == 0;
  const int saved_errno = errno;
  wipe_string(text);
  if (!ok) {
    close(fd);
    unlink(tmp.c_str());
    errno = saved_errno;
    sys_fail("cannot write the state file " + tmp);
  }
  return fd;
}

void rename_into_place(const std::string& tmp, const std::string& path) {
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    unlink(tmp.c_str());
    errno = err;
    sys_fail("cannot rename " + tmp + " to " + path);
  }
}

std::string random_id() {
  unsigned char bytes[8];
  if (RAND_bytes(bytes, sizeof bytes) != 1) fail(ErrorCode::Internal, "RAND_bytes failed");
  static const char digits[] = "0123456789abcdef";
  std::string id;
  for (unsigned char b : bytes) {
    id.push_back(digits[b >> 4]);
    id.push_back(digits[b & 15]);
  }
  return id;
}

// A state file mapped read-only, its pages mapped at once (MAP_POPULATE: no page fault per page):
// parsed where it lies, so no copy of its keys is made on the heap (nothing to wipe afterwards).
class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
      if (errno == ENOENT) return;
      sys_fail("cannot read the state file " + path);
    }
    exists_ = true;
    struct stat st {};
    if (fstat(fd, &st) != 0) {
      const int err = errno;
      close(fd);
      errno = err;
      sys_fail("cannot read the state file " + path);
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
      void* p = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
      if (p == MAP_FAILED) {
        const int err = errno;
        close(fd);
        size_ = 0;
        errno = err;
        sys_fail("cannot read the state file " + path);
      }
      data_ = static_cast<const char*>(p);
    }
    close(fd);
  }
  ~MappedFile() {
    if (data_ != nullptr) munmap(const_cast<char*>(data_), size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  bool exists() const { return exists_; }
  std::string_view bytes() const { return {data_ != nullptr ? data_ : "", size_}; }

 private:
  bool exists_ = false;
  const char* data_ = nullptr;
  size_t size_ = 0;
};

// A journal file as the loader reads it.
struct JournalFile {
  explicit JournalFile(const std::string& path);
  MappedFile file;
  JournalScan scan;      // views into `file`; payloads[0] is the header
  std::string snapshot;  // the snapshot it continues
  std::string after;     // state.journal.next: the journal it follows
  std::string folded;    // state.journal: the generation folded into it (fold_next_journal)
};

JournalFile::JournalFile(const std::string& path) : file(path) {
  if (!file.exists()) return;
  scan = scan_journal(file.bytes(), path);
  if (scan.payloads.empty()) return;
  const std::string_view first = scan.payloads[0];
  const json header = json::parse(first.begin(), first.end(), nullptr, false);
  if (!header.is_object() || header.value("journal", "") != kJournalMagic || header.value("version", 0) != 1 ||
      !header.contains("snapshot") || !header["snapshot"].is_string() ||
      (header.contains("after") && !header["after"].is_string()) ||
      (header.contains("folded") && !header["folded"].is_string()))
    bad_state(path, "offset 0: the first record is not an ipsecov2 journal header (version 1)");
  snapshot = header["snapshot"].get<std::string>();
  after = header.value("after", "");
  folded = header.value("folded", "");
}

}  // namespace

void StateStore::fsync_dir() const {
  // A rename must reach the disk itself (no-op on tmpfs, matters elsewhere).
  const int dfd = open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
}

void StateStore::save(DaemonState state) {
  // A background compaction still running is waited for: it writes the same temp file.
  try {
    finish_compaction(true);
  } catch (const Error&) {
    // Whatever it left, this save replaces it.
  }
  const std::string id = random_id();
  state.journal_id = id;
  std::string text = serialize_state(state);
  const uint64_t size = text.size();
  const std::string tmp = path_ + ".tmp";
  close(write_temp(tmp, text));
  rename_into_place(tmp, path_);
  fsync_dir();
  // The old journal continues the old snapshot: never append to it again (if the new one cannot be opened).
  if (journal_fd_ >= 0) close(journal_fd_);
  journal_fd_ = -1;
  snapshot_bytes_ = size;
  wipe_string(pending_);
  open_journal(journal_path_, id, "");
  journal_is_next_ = false;
  compaction_cancelled_ = false;
  snapshot_id_ = id;
  unlink(next_journal_path_.c_str());  // a generation of a failed or interrupted compaction: contained in `state`
}

void StateStore::open_journal(const std::string& path, const std::string& snapshot_id, const std::string& after) {
  json h = {{"journal", kJournalMagic}, {"version", 1}, {"snapshot", snapshot_id}};
  if (!after.empty()) h["after"] = after;
  std::string header = encode_journal_record(h.dump());
  const uint64_t size = header.size();
  const std::string tmp = path + ".tmp";
  const int fd = write_temp(tmp, header);
  rename_into_place(tmp, path);
  fsync_dir();
  if (journal_fd_ >= 0) close(journal_fd_);
  journal_fd_ = fd;
  if (lseek(journal_fd_, 0, SEEK_END) < 0) sys_fail("cannot seek in " + path);
  journal_bytes_ = size;
  journal_records_ = 0;
}

void StateStore::start_compaction(DaemonState state) {
  if (journal_is_next_ || compactor_.joinable() || journal_fd_ < 0 || snapshot_id_.empty()) {
    // A generation after the current one is taken (or nothing is open): only a full save is safe.
    save(std::move(state));
    return;
  }
  begin_background_snapshot(std::move(state));
}

bool StateStore::compact_after_load(DaemonState state) {
  const Loaded loaded = std::exchange(loaded_, Loaded{});
  struct stat st {};
  if (loaded.snapshot_id.empty() || journal_fd_ >= 0 || compactor_.joinable() || journal_is_next_ ||
      lstat(next_journal_path_.c_str(), &st) == 0 || errno != ENOENT) {
    save(std::move(state));
    return false;
  }
  snapshot_id_ = loaded.snapshot_id;
  snapshot_bytes_ = loaded.snapshot_bytes;
  // state.journal.next will say it follows state.journal: that must be the loaded snapshot's journal.
  // A missing or stale one is replaced by an empty one continuing the snapshot (a few bytes).
  if (loaded.journal_continues) {
    journal_bytes_ = loaded.journal_bytes;
    journal_records_ = loaded.journal_records;
  } else {
    open_journal(journal_path_, snapshot_id_, "");
  }
  begin_background_snapshot(std::move(state));
  return true;
}

void StateStore::begin_background_snapshot(DaemonState state) {
  if (!pending_.empty()) fail(ErrorCode::Internal, "start_compaction with uncommitted journal records");
  const std::string id = random_id();
  state.journal_id = id;
  // What a cancelled compaction folds together (fold_next_journal): the current journal as it is now.
  previous_journal_bytes_ = journal_bytes_;
  previous_journal_records_ = journal_records_;
  // First the new generation: from here on changes go to state.journal.next, which continues the
  // snapshot being written ("snapshot": id) and, until that is in place, the current journal ("after").
  open_journal(next_journal_path_, id, snapshot_id_);
  journal_is_next_ = true;
  compaction_id_ = id;
  compaction_result_ = {};
  compaction_done_.store(false, std::memory_order_relaxed);
  compaction_cancel_.store(false, std::memory_order_relaxed);
  compactor_ = std::thread([this, state = std::move(state)]() mutable {
    // Below the control thread: answering requests matters more than finishing the snapshot soon.
    setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), 10);
    CompactionResult result;
    try {
      std::string text;
      const bool whole = serialize_unless_cancelled(state, text, &compaction_cancel_);
      state = {};  // the keys of the copy go as soon as they are text
      const std::string tmp = path_ + ".tmp";
      if (whole) {
        result.bytes = text.size();
        close(write_temp(tmp, text));
        for (unsigned waited = 0; waited < compact_delay_ms_ && !compaction_cancel_.load(std::memory_order_relaxed);
             waited += 10)
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      // The last moment a cancel (cancel_compaction) takes effect: after it, the snapshot is in place.
      if (!whole || compaction_cancel_.load(std::memory_order_acquire)) {
        unlink(tmp.c_str());
        result.cancelled = true;
      } else {
        rename_into_place(tmp, path_);
        fsync_dir();
      }
    } catch (const Error& e) {
      result.error = e.what();
    } catch (const std::exception& e) {
      result.error = std::string("cannot write the snapshot ") + path_ + ": " + e.what();
    }
    compaction_result_ = std::move(result);
    compaction_done_.store(true, std::memory_order_release);
  });
}

bool StateStore::finish_compaction(bool wait) {
  if (!compactor_.joinable()) return false;
  if (!wait && !compaction_done_.load(std::memory_order_acquire)) return false;
  compactor_.join();
  complete_compaction();
  return true;
}

void StateStore::complete_compaction() {
  CompactionResult result = std::move(compaction_result_);
  compaction_result_ = {};
  if (!result.error.empty())
    // The current snapshot, its journal and state.journal.next (after it) still hold everything;
    // the next compaction is a full save (start_compaction), which also removes state.journal.next.
    fail(ErrorCode::Kernel, "background compaction: " + result.error);
  // The new snapshot is durable: its journal becomes state.journal (the one it replaces is stale now).
  if (rename(next_journal_path_.c_str(), journal_path_.c_str()) != 0)
    sys_fail("background compaction: cannot rename " + next_journal_path_ + " to " + journal_path_ +
             " (it stays the journal of " + path_ + ")");
  fsync_dir();
  journal_is_next_ = false;
  snapshot_id_ = compaction_id_;
  snapshot_bytes_ = result.bytes;
}

bool StateStore::cancel_compaction() {
  if (!compactor_.joinable() || previous_journal_bytes_ + journal_bytes_ > std::max(snapshot_bytes_, kMinCompactBytes))
    return false;
  compaction_cancel_.store(true, std::memory_order_release);
  compactor_.join();
  if (!compaction_result_.cancelled) {
    complete_compaction();  // it was past its last check: the snapshot is in place
    return false;
  }
  compaction_result_ = {};
  compaction_cancelled_ = true;
  return true;
}

void StateStore::fold_next_journal() {
  if (!compaction_cancelled_ || !journal_is_next_ || compactor_.joinable() || !pending_.empty())
    fail(ErrorCode::Internal, "fold_next_journal without a cancelled compaction, or with uncommitted records");
  // Mapped, as the loader reads them: the only copy of their keys on the heap is `text` below.
  const MappedFile current(journal_path_), next(next_journal_path_);
  // Everything after each file's header: the records that were durable (a torn tail is left out).
  auto body = [](std::string_view bytes, uint64_t valid) -> std::string_view {
    if (bytes.size() < 8 || valid > bytes.size()) return {};
    const size_t header = 8 + size_t{get_u32(bytes, 0)};
    return header <= valid ? bytes.substr(header, valid - header) : std::string_view{};
  };
  const std::string_view old_records = body(current.bytes(), previous_journal_bytes_);
  const std::string_view new_records = body(next.bytes(), journal_bytes_);
  if (!current.exists() || !next.exists() || old_records.data() == nullptr || new_records.data() == nullptr)
    fail(ErrorCode::Kernel, journal_path_ + " or " + next_journal_path_ + " is not what this daemon wrote; both kept");
  // The header says which generation it holds: if state.journal.next is still there after a crash
  // (the rename below done, its unlink not), the loader ignores it.
  const json h = {{"journal", kJournalMagic}, {"version", 1}, {"snapshot", snapshot_id_}, {"folded", compaction_id_}};
  std::string text = encode_journal_record(h.dump());
  text.reserve(text.size() + old_records.size() + new_records.size());  // grown before it holds keys
  text.append(old_records);
  text.append(new_records);
  const uint64_t size = text.size();
  const std::string tmp = journal_path_ + ".tmp";
  const int fd = write_temp(tmp, text);
  rename_into_place(tmp, journal_path_);
  fsync_dir();
  unlink(next_journal_path_.c_str());
  fsync_dir();
  if (journal_fd_ >= 0) close(journal_fd_);
  journal_fd_ = fd;
  if (lseek(journal_fd_, 0, SEEK_END) < 0) sys_fail("cannot seek in " + journal_path_);
  journal_bytes_ = size;
  journal_records_ += previous_journal_records_;
  journal_is_next_ = false;
  compaction_cancelled_ = false;
}

template <typename Write>
void StateStore::append(Write&& write) {
  // Written in place after an 8-byte header, then sealed: no temporary copy of the keys.
  reserve_wiped(pending_, kEntryRoom);
  const size_t at = pending_.size();
  pending_.append(8, '\0');
  write(pending_);
  seal_journal_record(pending_, at);
  ++journal_records_;
}

void StateStore::append_sa(const SavedSa& sa) {
  append([&](std::string& out) { write_sa_record(out, sa); });
}

void StateStore::append_sa_deleted(uint64_t handle) {
  append([&](std::string& out) { write_sa_deleted_record(out, handle); });
}

void StateStore::append_policy(const PolicyRecord& policy) {
  append([&](std::string& out) { write_policy_record(out, policy); });
}

void StateStore::append_policy_deleted(uint32_t id) {
  append([&](std::string& out) { write_policy_deleted_record(out, id); });
}

void StateStore::append_seq_mark(uint64_t handle, uint64_t seq_mark) {
  append([&](std::string& out) { write_seq_mark_record(out, handle, seq_mark); });
}

void StateStore::append_sequences(uint64_t next_sa_sequence, uint32_t next_policy_id) {
  append([&](std::string& out) { write_sequences_record(out, next_sa_sequence, next_policy_id); });
}

void StateStore::append_stop(uint64_t next_sa_sequence, uint32_t next_policy_id) {
  append([&](std::string& out) { write_stop_record(out, next_sa_sequence, next_policy_id); });
}

void StateStore::commit() {
  if (pending_.empty()) return;
  if (journal_fd_ < 0) {
    wipe_string(pending_);
    fail(ErrorCode::Kernel, "the journal " + journal_path_ + " is not open (no snapshot written yet)");
  }
  const bool ok = write_all(journal_fd_, pending_) && fdatasync(journal_fd_) == 0;
  const int err = errno;
  const uint64_t size = pending_.size();
  // Wiped, but the buffer is kept for the next batch (no regrowing, no page faults) unless it is huge.
  OPENSSL_cleanse(pending_.data(), pending_.size());
  pending_.clear();
  if (pending_.capacity() > (size_t{16} << 20)) pending_.shrink_to_fit();
  if (!ok) {
    // Never leave half a record in front of later ones (that would read as damage).
    (void)!ftruncate(journal_fd_, static_cast<off_t>(journal_bytes_));
    lseek(journal_fd_, 0, SEEK_END);
    errno = err;
    sys_fail("cannot append to the journal " + (journal_is_next_ ? next_journal_path_ : journal_path_));
  }
  journal_bytes_ += size;
}

bool StateStore::needs_compaction() const {
  if (compactor_.joinable()) return false;
  if (compact_every_bytes_ > 0) return journal_bytes_ > compact_every_bytes_;
  return journal_records_ > kMaxJournalRecords ||
         journal_bytes_ > std::max(kCompactFactor * snapshot_bytes_, kMinCompactBytes);
}

bool StateStore::journal_too_large_for_a_stop() const {
  return journal_bytes_ > std::max(snapshot_bytes_, kMinCompactBytes);
}

bool StateStore::journal_can_end_a_stop() const {
  return !compactor_.joinable() && !journal_is_next_ && journal_fd_ >= 0 && !journal_too_large_for_a_stop();
}

std::optional<DaemonState> StateStore::load(LoadReport* report) const {
  LoadReport local;
  LoadReport& rep = report != nullptr ? *report : local;
  rep = {};
  loaded_ = {};
  const Stopwatch snapshot_watch;
  const MappedFile snapshot(path_);
  if (!snapshot.exists()) {
    if (MappedFile(journal_path_).exists())  // only to say so
      rep.warning = journal_path_ + " has no snapshot " + path_ + " to continue; it was ignored";
    return std::nullopt;
  }
  const uint64_t snapshot_bytes = snapshot.bytes().size();
  const uint64_t map_wall_us = snapshot_watch.wall_us(), map_cpu_us = snapshot_watch.cpu_us();
  // The journal that continues the snapshot: state.journal, or state.journal.next when a crash came
  // after a background compaction's snapshot was renamed into place, before its journal was; plus
  // state.journal.next after state.journal when the crash came during the compaction.  Mapped and
  // scanned first: their record counts size the snapshot's SA list once for the replay.
  const Stopwatch scan_watch;
  const JournalFile current(journal_path_);
  const JournalFile next(next_journal_path_);
  const uint64_t scan_wall_us = scan_watch.wall_us(), scan_cpu_us = scan_watch.cpu_us();
  const size_t all_records = current.scan.payloads.size() + next.scan.payloads.size();
  // Checked once: the snapshot alone when no journal record applies, else the state after the replay.
  const Stopwatch parse_watch;
  DaemonState s = parse_state_unchecked(snapshot.bytes(), path_, &rep.fast_path, all_records);
  const uint64_t parse_wall_us = parse_watch.wall_us(), parse_cpu_us = parse_watch.cpu_us();
  std::vector<std::string> notes;
  auto note_torn = [&](const JournalFile& f) {
    if (!f.scan.torn_warning.empty())
      notes.push_back(f.scan.torn_warning + "; that record was discarded (never acknowledged)");
  };
  // The plain shape (compact_after_load continues it): the snapshot, its journal or none, no next generation.
  if (!s.journal_id.empty() && !next.file.exists()) {
    loaded_.snapshot_id = s.journal_id;
    loaded_.snapshot_bytes = snapshot_bytes;
    loaded_.journal_continues = current.snapshot == s.journal_id;
    if (loaded_.journal_continues) {
      loaded_.journal_bytes = current.scan.valid_bytes;
      loaded_.journal_records = current.scan.payloads.size() - 1;
    }
  }
  // The journals to replay, in order.
  std::vector<std::pair<const JournalFile*, const std::string*>> replay;
  if (!current.snapshot.empty() && current.snapshot == s.journal_id) {
    note_torn(current);
    replay.emplace_back(&current, &journal_path_);
    // A generation folded into state.journal at a stop (fold_next_journal) is in it already.
    const bool folded = !current.folded.empty() && current.folded == next.snapshot;
    if (folded) notes.push_back(next_journal_path_ + " is folded into " + journal_path_ + " already; ignored");
    if (next.file.exists() && !next.after.empty() && next.after == s.journal_id && !folded) {
      note_torn(next);
      replay.emplace_back(&next, &next_journal_path_);
      notes.push_back(next_journal_path_ +
                      " (a compaction interrupted before its snapshot was in place) replayed after " + journal_path_);
    }
  } else if (!next.snapshot.empty() && next.snapshot == s.journal_id) {
    note_torn(next);
    replay.emplace_back(&next, &next_journal_path_);
    notes.push_back(next_journal_path_ + " continues " + path_ +
                    " (a compaction interrupted before its journal was renamed)");
  } else if (current.file.exists() && !current.snapshot.empty()) {
    // A crash after the snapshot was written, before the journal was replaced: the snapshot holds it all.
    notes.push_back(journal_path_ + " continues another snapshot than " + path_ + " (left from a compaction); ignored");
  } else {
    note_torn(current);
  }
  for (const auto& [f, name] : replay) rep.journal_records += f->scan.payloads.size() - 1;
  const Stopwatch replay_watch;
  if (rep.journal_records == 0) {
    validate_state(s, path_);
  } else {
    JournalReplay replayed(std::move(s), rep.journal_records);
    for (const auto& [f, name] : replay) replayed.apply(f->scan.payloads, 1, *name, true);
    s = replayed.finish(path_ + " after replaying " + *replay.back().second);
  }
  const uint64_t replay_wall_us = replay_watch.wall_us(), replay_cpu_us = replay_watch.cpu_us();
  for (const std::string& n : notes) rep.warning += (rep.warning.empty() ? "" : "; ") + n;
  // Reading and parsing the snapshot (and checking it, when no journal applies); mapping, scanning
  // and replaying the journals (and checking the result).
  auto text = [](uint64_t wall_us, uint64_t cpu_us) {
    return std::to_string(wall_us / 1000) + " ms (CPU " + std::to_string(cpu_us / 1000) + " ms)";
  };
  const bool checked_with_snapshot = rep.journal_records == 0;
  rep.snapshot_time = text(map_wall_us + parse_wall_us + (checked_with_snapshot ? replay_wall_us : 0),
                           map_cpu_us + parse_cpu_us + (checked_with_snapshot ? replay_cpu_us : 0));
  rep.journal_time = text(scan_wall_us + (checked_with_snapshot ? 0 : replay_wall_us),
                          scan_cpu_us + (checked_with_snapshot ? 0 : replay_cpu_us));
  return s;
}

std::string StateStore::move_aside() const {
  loaded_ = {};  // nothing loaded to continue
  const std::string stamp = ".bad-" + utc_timestamp();
  std::string aside = path_ + stamp;
  if (rename(path_.c_str(), aside.c_str()) != 0 && errno != ENOENT)
    sys_fail("cannot move " + path_ + " aside to " + aside);
  const std::string journal_aside = journal_path_ + stamp;
  if (rename(journal_path_.c_str(), journal_aside.c_str()) == 0) aside += " and " + journal_aside;
  const std::string next_aside = next_journal_path_ + stamp;
  if (rename(next_journal_path_.c_str(), next_aside.c_str()) == 0) aside += " and " + next_aside;
  return aside;
}

void StateStore::remove() const {
  loaded_ = {};
  unlink(path_.c_str());
  unlink(journal_path_.c_str());
  unlink(next_journal_path_.c_str());
}

}  // namespace ov2
