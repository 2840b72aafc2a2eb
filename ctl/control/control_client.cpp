#include "control/control_client.h"

#include <openssl/crypto.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"
#include "control/protocol.h"

namespace ov2 {

ControlClient::ControlClient(const std::string& socket_path, int timeout_ms) : path_(socket_path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.empty() || socket_path.size() >= sizeof addr.sun_path)
    fail(ErrorCode::InvalidArgument, "socket path '" + socket_path + "' is empty or too long");
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) fail(ErrorCode::Kernel, std::string("socket(AF_UNIX): ") + std::strerror(errno));
  if (connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    const int err = errno;
    close(fd_);
    fd_ = -1;
    const char* hint = err == EACCES || err == EPERM
                           ? " (the control socket admits root and the group given to ipsecov2d --group)"
                           : " (is ipsecov2d running?)";
    fail(ErrorCode::Kernel, "cannot connect to " + socket_path + ": " + std::strerror(err) + hint);
  }
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

ControlClient::~ControlClient() {
  if (fd_ >= 0) close(fd_);
}

nlohmann::json ControlClient::call(nlohmann::json request) {
  request["version"] = kProtocolVersion;
  std::string line = request.dump() + "\n";
  wipe_secrets(request);
  size_t sent = 0;
  int send_errno = 0;
  while (sent < line.size()) {
    const ssize_t n = send(fd_, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      send_errno = errno;
      break;
    }
    sent += static_cast<size_t>(n);
  }
  OPENSSL_cleanse(line.data(), line.size());
  // Even if sending failed, the daemon may have answered why (e.g. refused the peer).

  for (;;) {
    const size_t nl = pending_.find('\n');
    if (nl != std::string::npos) {
      std::string answer = pending_.substr(0, nl);
      pending_.erase(0, nl + 1);
      try {
        return nlohmann::json::parse(answer);
      } catch (const nlohmann::json::parse_error&) {
        fail(ErrorCode::Internal, "ipsecov2d sent an answer that is not JSON");
      }
    }
    char buf[65536];
    const ssize_t n = recv(fd_, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      fail(ErrorCode::Kernel, "ipsecov2d did not answer on " + path_ + " in time");
    if (n <= 0) {
      if (send_errno != 0)
        fail(ErrorCode::Kernel, "sending the request to " + path_ + " failed: " + std::strerror(send_errno));
      fail(ErrorCode::Kernel, "ipsecov2d closed the connection on " + path_ + " without an answer");
    }
    pending_.append(buf, static_cast<size_t>(n));
  }
}

std::optional<nlohmann::json> ControlClient::next_line(int timeout_ms) {
  timeval tv{};
  if (timeout_ms >= 0) tv = timeval{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  if (timeout_ms == 0) tv.tv_usec = 1;  // 0 would mean "forever"
  setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  for (;;) {
    const size_t nl = pending_.find('\n');
    if (nl != std::string::npos) {
      std::string line = pending_.substr(0, nl);
      pending_.erase(0, nl + 1);
      try {
        return nlohmann::json::parse(line);
      } catch (const nlohmann::json::parse_error&) {
        fail(ErrorCode::Internal, "ipsecov2d sent a line that is not JSON");
      }
    }
    char buf[65536];
    const ssize_t n = recv(fd_, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      fail(ErrorCode::Kernel, "no line from ipsecov2d on " + path_ + " in time");
    if (n <= 0) return std::nullopt;
    pending_.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace ov2
