#include "control/state_store.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sys/file.h>
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
#include <map>
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

std::string serialize_state(const DaemonState& state) {
  // Hand-written (state_json_writer.h): one SA or policy per line, no json tree of the keys.
  std::string text;
  text.reserve(256 + state.sas.size() * 640 + state.policies.size() * 256);
  text += "{\"magic\":\"";
  text += kStateMagic;
  text += "\",\"version\":" + std::to_string(kStateVersion);
  text += ",\"next_sa_sequence\":" + std::to_string(state.next_sa_sequence);
  text += ",\"next_policy_id\":" + std::to_string(state.next_policy_id);
  if (!state.journal_id.empty()) text += ",\"journal_id\":" + json(state.journal_id).dump();
  text += ",\n\"sas\":[";
  for (size_t i = 0; i < state.sas.size(); ++i) {
    reserve_wiped(text, kEntryRoom);
    text += i == 0 ? "\n" : ",\n";
    write_sa_entry(text, state.sas[i]);
  }
  reserve_wiped(text, kEntryRoom);
  text += "],\n\"policies\":[";
  for (size_t i = 0; i < state.policies.size(); ++i) {
    reserve_wiped(text, kEntryRoom);
    text += i == 0 ? "\n" : ",\n";
    write_policy_entry(text, state.policies[i]);
  }
  text += "]}\n";
  return text;
}

DaemonState parse_state(std::string_view text, const std::string& name, bool* fast_path) {
  if (fast_path != nullptr) *fast_path = false;
  // What this daemon's writer wrote: read without a json tree (state_json_reader.h); anything else,
  // and every bad file, through the reference path below (same result, same messages).
  if (std::optional<DaemonState> fast = fast_parse_state(text)) {
    validate_state(*fast, name);
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
    scan.payloads.emplace_back(payload);
    off += 8 + len;
  }
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

DaemonState replay_journal(DaemonState state, const std::vector<std::string>& payloads, size_t first,
                           const std::string& name, bool fast_reader) {
  std::map<uint64_t, SavedSa> sas;
  std::map<uint32_t, PolicyRecord> policies;
  for (SavedSa& sa : state.sas) sas.insert_or_assign(sas.end(), sa.handle, std::move(sa));
  for (PolicyRecord& p : state.policies) policies.insert_or_assign(policies.end(), p.id, p);
  FastRecord fast;
  for (size_t i = first; i < payloads.size(); ++i) {
    // What this daemon's writer wrote (state_json_reader.h); anything else through nlohmann below.
    if (fast_reader && fast_parse_record(payloads[i], fast)) {
      const uint64_t h = fast.sa.handle;
      switch (fast.op) {
        case FastRecord::Op::Sa:
          sas.insert_or_assign(h, std::move(fast.sa));
          break;
        case FastRecord::Op::SaDeleted:
          if (sas.erase(h) == 0)
            bad_state(name, "record #" + std::to_string(i + 1) + " deletes SA " + handle_to_string(h) +
                                ", which is not there");
          break;
        case FastRecord::Op::Mark: {
          auto it = sas.find(h);
          if (it == sas.end())
            bad_state(name,
                      "record #" + std::to_string(i + 1) + " marks SA " + handle_to_string(h) + ", which is not there");
          it->second.seq_mark = std::max(it->second.seq_mark, fast.sa.seq_mark);
          break;
        }
        case FastRecord::Op::Policy:
          policies[fast.policy.id] = fast.policy;
          break;
        case FastRecord::Op::PolicyDeleted:
          if (policies.erase(fast.policy.id) == 0)
            bad_state(name, "record #" + std::to_string(i + 1) + " deletes policy " + std::to_string(fast.policy.id) +
                                ", which is not there");
          break;
        case FastRecord::Op::Sequences:
        case FastRecord::Op::Stop:
          apply_sequences(state, fast.next_sa_sequence, fast.next_policy_id, fast.op == FastRecord::Op::Stop);
          break;
      }
      fast.sa = {};
      continue;
    }
    const std::string where = "record #" + std::to_string(i + 1);
    json r = json::parse(payloads[i], nullptr, false);
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
        sas[sa.handle] = std::move(sa);
      } else if (op == "sa-del") {
        const uint64_t h = parse_handle(field(r, "handle", where, name).get<std::string>());
        if (sas.erase(h) == 0) bad_state(name, where + " deletes SA " + handle_to_string(h) + ", which is not there");
      } else if (op == "mark") {
        const uint64_t h = parse_handle(field(r, "handle", where, name).get<std::string>());
        auto it = sas.find(h);
        if (it == sas.end()) bad_state(name, where + " marks SA " + handle_to_string(h) + ", which is not there");
        it->second.seq_mark = std::max(it->second.seq_mark, number(r, "seq_mark", where, name, UINT64_MAX));
      } else if (op == "policy") {
        PolicyRecord p;
        p.id = static_cast<uint32_t>(number(r, "id", where, name, UINT32_MAX));
        p.spec = policy_spec_from_json(field(r, "spec", where, name));
        validate_policy(p.spec);
        policies[p.id] = p;
      } else if (op == "policy-del") {
        const auto id = static_cast<uint32_t>(number(r, "id", where, name, UINT32_MAX));
        if (policies.erase(id) == 0)
          bad_state(name, where + " deletes policy " + std::to_string(id) + ", which is not there");
      } else if (op == "sequences" || op == "stop") {
        apply_sequences(state, number(r, "next_sa_sequence", where, name, (uint64_t{1} << 40) - 1),
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
  state.sas.clear();
  state.policies.clear();
  state.sas.reserve(sas.size());
  for (auto& [h, sa] : sas) state.sas.push_back(std::move(sa));
  for (auto& [id, p] : policies) state.policies.push_back(p);
  validate_state(state, name);
  return state;
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

std::string read_whole(const std::string& path, bool* exists) {
  *exists = false;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return {};
    sys_fail("cannot read the state file " + path);
  }
  *exists = true;
  struct stat st {};
  std::string text;
  if (fstat(fd, &st) == 0 && st.st_size > 0)
    text.reserve(static_cast<size_t>(st.st_size));  // no reallocation copies of keys
  char buf[65536];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  OPENSSL_cleanse(buf, sizeof buf);
  close(fd);
  return text;
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
  if (!loaded.journal_continues) open_journal(journal_path_, snapshot_id_, "");
  begin_background_snapshot(std::move(state));
  return true;
}

void StateStore::begin_background_snapshot(DaemonState state) {
  if (!pending_.empty()) fail(ErrorCode::Internal, "start_compaction with uncommitted journal records");
  const std::string id = random_id();
  state.journal_id = id;
  // First the new generation: from here on changes go to state.journal.next, which continues the
  // snapshot being written ("snapshot": id) and, until that is in place, the current journal ("after").
  open_journal(next_journal_path_, id, snapshot_id_);
  journal_is_next_ = true;
  compaction_id_ = id;
  compaction_result_ = {};
  compaction_done_.store(false, std::memory_order_relaxed);
  compactor_ = std::thread([this, state = std::move(state)]() mutable {
    // Below the control thread: answering requests matters more than finishing the snapshot soon.
    setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), 10);
    CompactionResult result;
    try {
      std::string text = serialize_state(state);
      state = {};  // the keys of the copy go as soon as they are text
      result.bytes = text.size();
      const std::string tmp = path_ + ".tmp";
      close(write_temp(tmp, text));
      if (compact_delay_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(compact_delay_ms_));
      rename_into_place(tmp, path_);
      fsync_dir();
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
  return true;
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
  bool exists = false;
  std::string text = read_whole(path_, &exists);
  bool journal_exists = false;
  if (!exists) {
    std::string orphan = read_whole(journal_path_, &journal_exists);  // only to say so
    wipe_string(orphan);
    if (journal_exists) rep.warning = journal_path_ + " has no snapshot " + path_ + " to continue; it was ignored";
    return std::nullopt;
  }
  // What was read holds keys: wiped however this ends.
  struct WipeOnExit {
    std::string& s;
    ~WipeOnExit() { wipe_string(s); }
  };
  const uint64_t snapshot_bytes = text.size();
  DaemonState s;
  {
    WipeOnExit wipe_text{text};
    s = parse_state(text, path_, &rep.fast_path);
  }
  rep.snapshot_time = snapshot_watch.text();
  const Stopwatch journal_watch;
  // The journal that continues the snapshot: state.journal, or state.journal.next when a crash came
  // after a background compaction's snapshot was renamed into place, before its journal was; plus
  // state.journal.next after state.journal when the crash came during the compaction.
  JournalFile current = read_journal_file(journal_path_);
  JournalFile next = read_journal_file(next_journal_path_);
  struct Wiper {
    JournalFile& a;
    JournalFile& b;
    ~Wiper() {
      for (auto* f : {&a, &b})
        for (auto& p : f->scan.payloads) wipe_string(p);
    }
  } wiper{current, next};
  std::vector<std::string> notes;
  auto note_torn = [&](const JournalFile& f) {
    if (!f.scan.torn_warning.empty())
      notes.push_back(f.scan.torn_warning + "; that record was discarded (never acknowledged)");
  };
  // The plain shape (compact_after_load continues it): the snapshot, its journal or none, no next generation.
  loaded_ = {};
  if (!s.journal_id.empty() && !next.exists) {
    loaded_.snapshot_id = s.journal_id;
    loaded_.snapshot_bytes = snapshot_bytes;
    loaded_.journal_continues = current.snapshot == s.journal_id;
  }
  if (!current.snapshot.empty() && current.snapshot == s.journal_id) {
    note_torn(current);
    rep.journal_records = current.scan.payloads.size() - 1;
    // (A journal of only its header leaves the checked snapshot as it is.)
    if (rep.journal_records > 0) s = replay_journal(std::move(s), current.scan.payloads, 1, journal_path_);
    if (next.exists && !next.after.empty() && next.after == s.journal_id) {
      note_torn(next);
      rep.journal_records += next.scan.payloads.size() - 1;
      s = replay_journal(std::move(s), next.scan.payloads, 1, next_journal_path_);
      notes.push_back(next_journal_path_ +
                      " (a compaction interrupted before its snapshot was in place) replayed after " + journal_path_);
    }
  } else if (!next.snapshot.empty() && next.snapshot == s.journal_id) {
    note_torn(next);
    rep.journal_records = next.scan.payloads.size() - 1;
    s = replay_journal(std::move(s), next.scan.payloads, 1, next_journal_path_);
    notes.push_back(next_journal_path_ + " continues " + path_ +
                    " (a compaction interrupted before its journal was renamed)");
  } else if (current.exists && !current.snapshot.empty()) {
    // A crash after the snapshot was written, before the journal was replaced: the snapshot holds it all.
    notes.push_back(journal_path_ + " continues another snapshot than " + path_ + " (left from a compaction); ignored");
  } else {
    note_torn(current);
  }
  for (const std::string& n : notes) rep.warning += (rep.warning.empty() ? "" : "; ") + n;
  rep.journal_time = journal_watch.text();
  return s;
}

StateStore::JournalFile StateStore::read_journal_file(const std::string& path) const {
  JournalFile f;
  std::string bytes = read_whole(path, &f.exists);
  if (!f.exists) return f;
  try {
    f.scan = scan_journal(bytes, path);
  } catch (...) {
    wipe_string(bytes);
    throw;
  }
  wipe_string(bytes);
  if (f.scan.payloads.empty()) return f;
  const json header = json::parse(f.scan.payloads[0], nullptr, false);
  if (!header.is_object() || header.value("journal", "") != kJournalMagic || header.value("version", 0) != 1 ||
      !header.contains("snapshot") || !header["snapshot"].is_string() ||
      (header.contains("after") && !header["after"].is_string())) {
    for (auto& p : f.scan.payloads) wipe_string(p);
    bad_state(path, "offset 0: the first record is not an ipsecov2 journal header (version 1)");
  }
  f.snapshot = header["snapshot"].get<std::string>();
  f.after = header.value("after", "");
  return f;
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
