#include "config/daemon_config.h"

#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <toml.hpp>

#include "common/error.h"

namespace ov2 {

const char* to_string(LogLevel l) {
  switch (l) {
    case LogLevel::Error: return "error";
    case LogLevel::Warn: return "warn";
    case LogLevel::Info: return "info";
    case LogLevel::Debug: return "debug";
  }
  return "info";
}

const char* to_string(SaDeleteReqPolicy p) { return p == SaDeleteReqPolicy::Delete ? "delete" : "notify"; }

namespace {

// One error format everywhere: FILE:LINE: key 'section.key': message
[[noreturn]] void bad(const std::string& file, const toml::value& v, const std::string& key, const std::string& msg) {
  fail(ErrorCode::InvalidArgument,
       file + ":" + std::to_string(v.location().line()) + ": key '" + key + "': " + msg);
}

std::string get_string(const std::string& file, const toml::value& v, const std::string& key) {
  if (!v.is_string()) bad(file, v, key, "must be a string in quotes");
  return v.as_string().str;
}

uint32_t get_uint(const std::string& file, const toml::value& v, const std::string& key, uint64_t lo, uint64_t hi) {
  if (!v.is_integer()) bad(file, v, key, "must be a whole number");
  const auto n = v.as_integer();
  if (n < 0 || static_cast<uint64_t>(n) < lo || static_cast<uint64_t>(n) > hi)
    bad(file, v, key, "must be from " + std::to_string(lo) + " to " + std::to_string(hi) + ", not " + std::to_string(n));
  return static_cast<uint32_t>(n);
}

bool get_bool(const std::string& file, const toml::value& v, const std::string& key) {
  if (!v.is_boolean()) bad(file, v, key, "must be true or false");
  return v.as_boolean();
}

bool is_power_of_two(uint32_t n) { return n != 0 && (n & (n - 1)) == 0; }

using Handler = void (*)(DaemonConfig&, const std::string&, const toml::value&, const std::string&);

const std::map<std::string, std::map<std::string, Handler>>& schema() {
  static const std::map<std::string, std::map<std::string, Handler>> table = {
      {"daemon",
       {{"log_level",
         [](DaemonConfig& c, const std::string& f, const toml::value& v, const std::string& k) {
           const auto s = get_string(f, v, k);
           if (s == "error") c.log_level = LogLevel::Error;
           else if (s == "warn") c.log_level = LogLevel::Warn;
           else if (s == "info") c.log_level = LogLevel::Info;
           else if (s == "debug") c.log_level = LogLevel::Debug;
           else bad(f, v, k, "must be error, warn, info or debug, not '" + s + "'");
         }},
        {"engine",
         [](DaemonConfig& c, const std::string& f, const toml::value& v, const std::string& k) {
           c.engine = get_string(f, v, k);
           if (c.engine != "afxdp" && c.engine != "nic" && c.engine != "auto")
             bad(f, v, k, "must be afxdp, nic or auto, not '" + c.engine + "'");
         }},
        {"nic_offload",
         [](DaemonConfig& c, const std::string& f, const toml::value& v, const std::string& k) {
           c.nic_offload = get_string(f, v, k);
           if (c.nic_offload != "crypto" && c.nic_offload != "packet")
             bad(f, v, k, "must be crypto or packet, not '" + c.nic_offload + "'");
         }},
        {"state_dir",
         [](DaemonConfig& c, const std::string& f, const toml::value& v, const std::string& k) {
           c.state_dir = get_string(f, v, k);
           if (c.state_dir.empty() || c.state_dir[0] != '/') bad(f, v, k, "must be an absolute path");
         }}}},
      {"control",
       {{"socket",
         [](DaemonConfig& c, const std::string& f, const toml::value& v, const std::string& k) {
           c.socket_path = get_string(f, v, k);
           if (c.socket_path.empty() || c.socket_path[0] != '/') bad(f, v, k, "must be an absolute path");
           if (c.socket_path.size() >= 108) bad(f, v, k, "is longer than a Unix socket path may be (107 bytes)");
         }},
        {"group",
         [](DaemonConfig& c, const std::string& f, const toml::value& v, const std::string& k) {
           c.socket_group = get_string(f, v, k);
         }}}},
      {"wire",
       {{"interfaces",
         [](DaemonConfig& c, const std::string& f, const toml::value& v, const std::string& k) {
           if (!v.is_array()) bad(f, v, k, "must be a list of interface names, e.g. [\"eth0\"]");
           c.wire_interfaces.clear();
           for (const auto& e : v.as_array()) {
             const auto name = get_string(f, e, k);
             if (name.empty() || name.size() > 15) bad(f, e, k, "'" + name + "' is not a valid interface name");
             c.wire_interfaces.push_back(name);
           }
         }}}},
      {"offload_device",
       {{"name",
         [](DaemonConfig& c, const std::string& f, const toml::value& v, const std::string& k) {
           c.offload_dev = get_string(f, v, k);
           if (c.offload_dev.empty() || c.offload_dev.size() > 11)
             bad(f, v, k, "must be 1 to 11 characters (the peer is named NAME-nic)");
         }},
        {"mtu",
         [](DaemonConfig& c, const std::string& f, const toml::value& v, const std::string& k) {
           if (v.is_string() && v.as_string().str == "auto") {
             c.offload_mtu = 0;
             return;
           }
           if (!v.is_integer()) bad(f, v, k, "must be \"auto\" or a number from 1280 to 9000");
           c.offload_mtu = get_uint(f, v, k, 1280, 9000);
         }}}},
      {"worker",
       {{"queues",
         [](DaemonConfig& c, const std::string& f, const toml::value& v, const std::string& k) {
           c.queues = get_uint(f, v, k, 1, 64);
         }},
        {"cpus",
         [](DaemonConfig& c, const std::string& f, const toml::value& v, const std::string& k) {
           if (!v.is_array()) bad(f, v, k, "must be a list of CPU numbers, e.g. [2, 3]");
           c.worker_cpus.clear();
           for (const auto& e : v.as_array()) c.worker_cpus.push_back(static_cast<int>(get_uint(f, e, k, 0, 4095)));
         }},
        {"umem_frames",
         [](DaemonConfig& c, const std::string& f, const toml::value& v, const std::string& k) {
           c.umem_frames = get_uint(f, v, k, 256, 1u << 20);
           if (!is_power_of_two(c.umem_frames)) bad(f, v, k, "must be a power of two");
         }},
        {"frame_size",
         [](DaemonConfig& c, const std::string& f, const toml::value& v, const std::string& k) {
           c.frame_size = get_uint(f, v, k, 2048, 4096);
           if (!is_power_of_two(c.frame_size)) bad(f, v, k, "must be 2048 or 4096");
         }},
        {"rx_ring",
         [](DaemonConfig& c, const std::string& f, const toml::value& v, const std::string& k) {
           c.rx_ring = get_uint(f, v, k, 64, 1u << 16);
           if (!is_power_of_two(c.rx_ring)) bad(f, v, k, "must be a power of two");
         }},
        {"tx_ring",
         [](DaemonConfig& c, const std::string& f, const toml::value& v, const std::string& k) {
           c.tx_ring = get_uint(f, v, k, 64, 1u << 16);
           if (!is_power_of_two(c.tx_ring)) bad(f, v, k, "must be a power of two");
         }},
        {"fill_ring",
         [](DaemonConfig& c, const std::string& f, const toml::value& v, const std::string& k) {
           c.fill_ring = get_uint(f, v, k, 64, 1u << 16);
           if (!is_power_of_two(c.fill_ring)) bad(f, v, k, "must be a power of two");
         }},
        {"completion_ring",
         [](DaemonConfig& c, const std::string& f, const toml::value& v, const std::string& k) {
           c.completion_ring = get_uint(f, v, k, 64, 1u << 16);
           if (!is_power_of_two(c.completion_ring)) bad(f, v, k, "must be a power of two");
         }},
        {"busy_poll",
         [](DaemonConfig& c, const std::string& f, const toml::value& v, const std::string& k) {
           c.busy_poll = get_bool(f, v, k);
         }},
        {"crypto",
         [](DaemonConfig& c, const std::string& f, const toml::value& v, const std::string& k) {
           c.crypto = get_string(f, v, k);
           if (c.crypto != "openssl" && c.crypto != "ipsec-mb")
             bad(f, v, k, "must be openssl or ipsec-mb, not '" + c.crypto + "'");
         }}}},
      {"verdict",
       {{"mark",
         [](DaemonConfig& c, const std::string& f, const toml::value& v, const std::string& k) {
           c.verdict_mark = get_uint(f, v, k, 0, 0xffffffffu);
         }}}},
      {"sa_delete_req",
       {{"policy",
         [](DaemonConfig& c, const std::string& f, const toml::value& v, const std::string& k) {
           const auto s = get_string(f, v, k);
           if (s == "delete") c.sa_delete_req = SaDeleteReqPolicy::Delete;
           else if (s == "notify") c.sa_delete_req = SaDeleteReqPolicy::Notify;
           else bad(f, v, k, "must be delete or notify, not '" + s + "'");
         }}}},
      {"stats",
       {{"prometheus_listen",
         [](DaemonConfig& c, const std::string& f, const toml::value& v, const std::string& k) {
           c.prometheus_listen = get_string(f, v, k);
           if (!c.prometheus_listen.empty() && c.prometheus_listen.rfind(':') == std::string::npos)
             bad(f, v, k, "must be ADDRESS:PORT, e.g. 127.0.0.1:9781");
         }}}},
  };
  return table;
}

DaemonConfig from_toml(const toml::value& root, const std::string& file) {
  DaemonConfig c;
  for (const auto& [section, body] : root.as_table()) {
    const auto sec = schema().find(section);
    if (sec == schema().end()) {
      std::string known;
      for (const auto& [n, _] : schema()) known += (known.empty() ? "" : ", ") + n;
      bad(file, body, section, "unknown section; the sections are: " + known);
    }
    if (!body.is_table()) bad(file, body, section, "must be a [section]");
    for (const auto& [key, value] : body.as_table()) {
      const std::string full = section + "." + key;
      const auto h = sec->second.find(key);
      if (h == sec->second.end()) bad(file, value, full, "unknown key in [" + section + "]");
      h->second(c, file, value, full);
    }
  }
  if (!c.worker_cpus.empty() && c.worker_cpus.size() != c.queues)
    fail(ErrorCode::InvalidArgument, file + ": key 'worker.cpus': lists " + std::to_string(c.worker_cpus.size()) +
                                         " CPUs for " + std::to_string(c.queues) + " queues; give one per queue");
  return c;
}

}  // namespace

namespace {

// TOML files are UTF-8.  Checked before the text reaches toml11: its parser
// (3.7, Debian 12) reads past the end of a literal string that holds invalid
// UTF-8 (found by fuzz_config).  Returns the 1-based line of the first bad
// byte, or 0 if the text is valid.
size_t first_invalid_utf8_line(const std::string& text) {
  size_t line = 1;
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '\n') ++line;
    size_t len = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return line;
    }
    if (i + len > text.size()) return line;
    for (size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(text[i + k]);
      if ((cc & 0xc0) != 0x80) return line;
      cp = cp << 6 | (cc & 0x3f);
    }
    const uint32_t min = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return line;
    i += len;
  }
  return 0;
}

}  // namespace

DaemonConfig parse_config(const std::string& text, const std::string& name) {
  if (const size_t bad = first_invalid_utf8_line(text))
    fail(ErrorCode::InvalidArgument, name + ":" + std::to_string(bad) + ": not valid TOML: the file is not UTF-8");
  std::istringstream in(text);
  toml::value root;
  try {
    root = toml::parse(in, name);
  } catch (const toml::exception& e) {
    fail(ErrorCode::InvalidArgument, name + ":" + std::to_string(e.location().line()) + ": not valid TOML: " +
                                         [&] {
                                           // toml11's message is multi-line with ANSI art; keep its first line.
                                           std::string w = e.what();
                                           if (auto nl = w.find('\n'); nl != std::string::npos) w.resize(nl);
                                           if (w.rfind("[error] ", 0) == 0) w = w.substr(8);
                                           return w;
                                         }());
  }
  return from_toml(root, name);
}

DaemonConfig load_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorCode::InvalidArgument, path + ": cannot open the configuration file");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), path);
}

ReloadPlan plan_reload(const DaemonConfig& a, const DaemonConfig& b) {
  ReloadPlan plan;
  auto check = [&](bool changed, const char* key, bool live) {
    if (changed) (live ? plan.applied : plan.restart_required).push_back(key);
  };
  check(a.log_level != b.log_level, "daemon.log_level", true);
  check(a.engine != b.engine, "daemon.engine", false);
  check(a.nic_offload != b.nic_offload, "daemon.nic_offload", false);
  check(a.state_dir != b.state_dir, "daemon.state_dir", false);
  check(a.socket_path != b.socket_path, "control.socket", false);
  check(a.socket_group != b.socket_group, "control.group", true);
  check(a.wire_interfaces != b.wire_interfaces, "wire.interfaces", false);
  check(a.offload_dev != b.offload_dev, "offload_device.name", false);
  check(a.offload_mtu != b.offload_mtu, "offload_device.mtu", true);
  check(a.queues != b.queues, "worker.queues", false);
  check(a.worker_cpus != b.worker_cpus, "worker.cpus", false);
  check(a.umem_frames != b.umem_frames || a.frame_size != b.frame_size || a.rx_ring != b.rx_ring ||
            a.tx_ring != b.tx_ring || a.fill_ring != b.fill_ring || a.completion_ring != b.completion_ring,
        "worker.umem/rings", false);
  check(a.busy_poll != b.busy_poll, "worker.busy_poll", false);
  check(a.crypto != b.crypto, "worker.crypto", false);
  check(a.verdict_mark != b.verdict_mark, "verdict.mark", true);
  check(a.sa_delete_req != b.sa_delete_req, "sa_delete_req.policy", true);
  check(a.prometheus_listen != b.prometheus_listen, "stats.prometheus_listen", true);
  return plan;
}

const char* default_config_text() {
  // The shipped file ctl/config/ipsecov2d.conf, embedded at build time.
  static const char text[] =
#include "default_config.inc"
      ;
  return text;
}

}  // namespace ov2
