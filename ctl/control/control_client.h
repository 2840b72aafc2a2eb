// The client side of the control protocol (protocol.h), for ipsecov2ctl and
// tests: one connection, one request at a time.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace ov2 {

class ControlClient {
 public:
  // Connects; throws ov2::Error(Kernel) "cannot connect to PATH: REASON (is
  // ipsecov2d running?)" (for EACCES the hint names the access rule instead).
  explicit ControlClient(const std::string& socket_path, int timeout_ms = 30000);
  ~ControlClient();
  ControlClient(const ControlClient&) = delete;
  ControlClient& operator=(const ControlClient&) = delete;

  // Sends one request (adds "version") and returns the daemon's answer
  // object as is ({"ok":true,...} or {"ok":false,"error":{...}}).  The
  // serialized request is wiped after sending (it may carry keys).  Throws
  // ov2::Error on I/O failure or a malformed answer.
  nlohmann::json call(nlohmann::json request);

  // After a streaming request (op "monitor"): waits for the next line and
  // returns it parsed; std::nullopt when the daemon closed the connection.
  // `timeout_ms` < 0 waits forever; on timeout throws ov2::Error(Kernel).
  std::optional<nlohmann::json> next_line(int timeout_ms = -1);

 private:
  std::string path_;
  int fd_ = -1;
  std::string pending_;  // bytes after the last answer line
};

}  // namespace ov2
