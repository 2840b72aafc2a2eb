// The daemon's configuration file (/etc/ipsecov2/ipsecov2d.conf, TOML).
// Command-line options override it.  Errors name the file, line and key.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ov2 {

enum class LogLevel : uint8_t { Error, Warn, Info, Debug };
enum class SaDeleteReqPolicy : uint8_t {
  Delete,  // raise the event, then delete the inbound SA and its matching outbound SA (Windows semantics)
  Notify,  // raise the event only; the key manager deletes
};

const char* to_string(LogLevel l);
const char* to_string(SaDeleteReqPolicy p);

struct DaemonConfig {
  // [daemon]
  LogLevel log_level = LogLevel::Info;
  std::string engine = "afxdp";        // afxdp | nic | auto
  std::string nic_offload = "crypto";  // crypto | packet: XFRM offload type of NIC-held SAs
  std::string state_dir = "/run/ipsecov2";
  // [control]
  std::string socket_path = "/run/ipsecov2/ipsecov2.sock";
  std::string socket_group;  // empty: root only
  // [wire]
  std::vector<std::string> wire_interfaces;
  // [offload_device]
  std::string offload_dev = "ov2";
  uint32_t offload_mtu = 0;  // 0: wire MTU minus the worst-case ESP overhead
  // [worker]
  uint32_t queues = 1;
  std::vector<int> worker_cpus;  // worker i pinned to worker_cpus[i]; empty: not pinned
  uint32_t umem_frames = 4096;
  uint32_t frame_size = 4096;
  uint32_t rx_ring = 2048;
  uint32_t tx_ring = 2048;
  uint32_t fill_ring = 2048;
  uint32_t completion_ring = 2048;
  bool busy_poll = false;
  std::string crypto = "ipsec-mb";  // ipsec-mb | openssl: the AEAD library of the worker (ipsec-mb: faster in ipsecov2-bench)
  // [verdict]
  uint32_t verdict_mark = 0;
  // [sa_delete_req]
  SaDeleteReqPolicy sa_delete_req = SaDeleteReqPolicy::Delete;
  // [stats]
  std::string prometheus_listen;  // "127.0.0.1:9781"; empty: off

  bool operator==(const DaemonConfig&) const = default;
};

// Reads and validates a configuration file.  Throws ov2::Error(InvalidArgument)
// with "FILE:LINE: key 'section.key': what is wrong" (or "FILE: ..." when the
// error has no line, e.g. a missing file).
DaemonConfig load_config(const std::string& path);

// Parses configuration text (for tests); `name` stands for the file name in messages.
DaemonConfig parse_config(const std::string& text, const std::string& name);

// What a reload (SIGHUP) can apply while traffic flows, and what needs a restart.
struct ReloadPlan {
  std::vector<std::string> applied;           // keys that change now
  std::vector<std::string> restart_required;  // keys that changed but need a restart
};
ReloadPlan plan_reload(const DaemonConfig& running, const DaemonConfig& wanted);

// The commented default file installed as /etc/ipsecov2/ipsecov2d.conf.
const char* default_config_text();

}  // namespace ov2
