#include "control/state_store.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/error.h"
#include "model/sa_json.h"

namespace ov2 {

namespace {

using nlohmann::json;

std::string to_hex(const SecureBytes& bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes.span()) {
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 15]);
  }
  return out;
}

// Wipes every string inside `j` (key hex) before it is destroyed.
void wipe_json(json& j) {
  if (j.is_string()) {
    wipe_string(j.get_ref<std::string&>());
  } else if (j.is_structured()) {
    for (auto& v : j) wipe_json(v);
  }
}

json sa_json_with_keys(const SaSpec& spec) {
  json j = sa_spec_public_json(spec);
  for (const char* k : {"key-bytes", "enc-key-bytes", "auth-key-bytes"}) j.erase(k);
  if (info(spec.enc).aead) {
    j["key"] = to_hex(spec.enc_key);
  } else {
    if (!spec.enc_key.empty()) j["enc-key"] = to_hex(spec.enc_key);
    j["auth-key"] = to_hex(spec.auth_key);
  }
  return j;
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

}  // namespace

void wipe_string(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
  s.shrink_to_fit();
}

std::string serialize_state(const DaemonState& state) {
  json j;
  j["magic"] = kStateMagic;
  j["version"] = kStateVersion;
  j["next_sa_sequence"] = state.next_sa_sequence;
  j["next_policy_id"] = state.next_policy_id;
  j["sas"] = json::array();
  for (const SavedSa& sa : state.sas) {
    json e;
    e["handle"] = handle_to_string(sa.handle);
    e["seq_mark"] = sa.seq_mark;
    e["spec"] = sa_json_with_keys(sa.spec);
    j["sas"].push_back(std::move(e));
  }
  j["policies"] = json::array();
  for (const PolicyRecord& p : state.policies) j["policies"].push_back({{"id", p.id}, {"spec", policy_spec_json(p.spec)}});
  std::string text = j.dump(1) + "\n";
  wipe_json(j);
  return text;
}

DaemonState parse_state(std::string_view text, const std::string& name) {
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

  std::map<uint64_t, const SavedSa*> by_handle;
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
    if ((sa.handle >> kHandleSlotBits) >= s.next_sa_sequence)
      bad_state(name, where + ": handle " + handle_to_string(sa.handle) +
                          " is not below the saved handle sequence (next_sa_sequence " +
                          std::to_string(s.next_sa_sequence) + "): inconsistent file");
    if (by_handle.count(sa.handle)) bad_state(name, where + ": handle " + handle_to_string(sa.handle) + " appears twice");
    s.sas.push_back(std::move(sa));
    by_handle[s.sas.back().handle] = nullptr;
  }
  for (const SavedSa& sa : s.sas) by_handle[sa.handle] = &sa;
  std::set<std::tuple<uint32_t, std::string, Direction>> lookup_keys;
  std::set<uint64_t> slots, inner_used;
  for (const SavedSa& sa : s.sas) {
    const std::string where = "SA " + handle_to_string(sa.handle);
    if (!lookup_keys.insert({sa.spec.spi, sa.spec.dst.to_string(), sa.spec.dir}).second)
      bad_state(name, where + ": another SA has the same SPI, destination and direction");
    if (!slots.insert(handle_slot(sa.handle)).second) bad_state(name, where + ": another SA has the same slot");
    if (sa.spec.inner_handle != 0) {
      auto it = by_handle.find(sa.spec.inner_handle);
      if (it == by_handle.end() || it->second->spec.mode != Mode::Transport || it->second->spec.dir != sa.spec.dir ||
          it->second->spec.inner_handle != 0 || !inner_used.insert(sa.spec.inner_handle).second)
        bad_state(name, where + ": its bundle's inner SA " + handle_to_string(sa.spec.inner_handle) +
                            " is missing, not a transport SA of the same direction, or in two bundles");
    }
  }

  std::set<uint32_t> ids;
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
    if (p.id == 0 || p.id >= s.next_policy_id || !ids.insert(p.id).second)
      bad_state(name, where + ": id " + std::to_string(p.id) +
                          " is 0, appears twice or is not below next_policy_id: inconsistent file");
    if (p.spec.action == PolicyAction::Protect) {
      auto it = by_handle.find(p.spec.sa_handle);
      if (it == by_handle.end() || it->second->spec.dir != p.spec.dir)
        bad_state(name, where + " (id " + std::to_string(p.id) + ") protects with SA " +
                            handle_to_string(p.spec.sa_handle) + ", which is not in the file or of the other direction");
    }
    s.policies.push_back(p);
  }
  return s;
}

StateStore::StateStore(std::string dir) : dir_(std::move(dir)), path_(dir_ + "/state.json") {
  // Missing parents are created like `mkdir -p` would; the state directory itself is 0700.
  std::error_code ec;
  const auto parent = std::filesystem::path(dir_).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  if (mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST) sys_fail("cannot create the state directory " + dir_);
  struct stat st{};
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
  if (lock_fd_ >= 0) close(lock_fd_);
}

void StateStore::save(const DaemonState& state) const {
  std::string text = serialize_state(state);
  const std::string tmp = path_ + ".tmp";
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    wipe_string(text);
    sys_fail("cannot write the state file " + tmp);
  }
  fchmod(fd, 0600);  // an old temp file could have had another mode
  size_t done = 0;
  bool ok = true;
  while (done < text.size()) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ok = false;
      break;
    }
    done += static_cast<size_t>(n);
  }
  wipe_string(text);
  const int saved_errno = errno;
  if (!ok || fsync(fd) != 0) {
    close(fd);
    unlink(tmp.c_str());
    errno = ok ? errno : saved_errno;
    sys_fail("cannot write the state file " + tmp);
  }
  close(fd);
  if (rename(tmp.c_str(), path_.c_str()) != 0) {
    unlink(tmp.c_str());
    sys_fail("cannot rename " + tmp + " to " + path_);
  }
  // The rename itself must reach the disk (no-op on tmpfs, matters elsewhere).
  const int dfd = open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
}

std::optional<DaemonState> StateStore::load() const {
  const int fd = open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return std::nullopt;
    sys_fail("cannot read the state file " + path_);
  }
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  OPENSSL_cleanse(buf, sizeof buf);
  close(fd);
  try {
    DaemonState s = parse_state(text, path_);
    wipe_string(text);
    return s;
  } catch (...) {
    wipe_string(text);
    throw;
  }
}

std::string StateStore::move_aside() const {
  std::string aside = path_ + ".bad-" + utc_timestamp();
  if (rename(path_.c_str(), aside.c_str()) != 0) sys_fail("cannot move " + path_ + " aside to " + aside);
  return aside;
}

void StateStore::remove() const { unlink(path_.c_str()); }

}  // namespace ov2
