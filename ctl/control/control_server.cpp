#include "control/control_server.h"

#include <fcntl.h>
#include <grp.h>
#include <openssl/crypto.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "common/error.h"
#include "control/log.h"

namespace ov2 {

namespace {

std::string errno_text(int err) { return std::strerror(err); }

sockaddr_un socket_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path)
    fail(ErrorCode::InvalidArgument,
         "socket path '" + path + "' is empty or longer than " + std::to_string(sizeof addr.sun_path - 1) + " bytes");
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

// True if a server answers on `path`.
bool someone_listens(const std::string& path) {
  const sockaddr_un addr = socket_address(path);
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const bool ok = connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  return ok;
}

void wipe(std::string& s) {
  OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

}  // namespace

gid_t lookup_group(const std::string& name) {
  std::vector<char> buf(16384);
  group grp{};
  group* result = nullptr;
  const int rc = getgrnam_r(name.c_str(), &grp, buf.data(), buf.size(), &result);
  if (rc != 0 || result == nullptr)
    fail(ErrorCode::InvalidArgument, "group '" + name + "' does not exist (check --group or the config file)");
  return result->gr_gid;
}

ControlServer::ControlServer(ControlServerOptions options, Handler handler)
    : options_(std::move(options)), handler_(std::move(handler)) {
  const sockaddr_un addr = socket_address(options_.path);
  const auto slash = options_.path.rfind('/');
  dir_ = slash == std::string::npos ? "." : (slash == 0 ? "/" : options_.path.substr(0, slash));

  struct stat st {};
  if (stat(dir_.c_str(), &st) != 0) {
    if (errno != ENOENT) fail(ErrorCode::Kernel, "cannot use socket directory " + dir_ + ": " + errno_text(errno));
    if (mkdir(dir_.c_str(), 0750) != 0)
      fail(ErrorCode::Kernel, "cannot create socket directory " + dir_ + ": " + errno_text(errno));
    created_dir_ = true;
    chmod(dir_.c_str(), 0750);  // mkdir applied the umask
    if (options_.group && chown(dir_.c_str(), geteuid(), *options_.group) != 0)
      log(LogLevel::Warn, "cannot give " + dir_ + " to group " + options_.group_name + ": " + errno_text(errno));
  }

  if (lstat(options_.path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      fail(ErrorCode::InvalidArgument, options_.path + " exists and is not a socket; choose another --socket path");
    if (someone_listens(options_.path))
      fail(ErrorCode::Exists,
           "another ipsecov2d is serving " + options_.path + "; stop it or give this one another --socket path");
    unlink(options_.path.c_str());  // stale, from a daemon that did not exit cleanly
  }

  listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) fail(ErrorCode::Kernel, "socket(AF_UNIX): " + errno_text(errno));
  // Create the socket file without group/other access, then open it to the group.
  const mode_t old_umask = umask(0177);
  const int bound = bind(listen_fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  const int bind_errno = errno;
  umask(old_umask);
  if (bound != 0) {
    close(listen_fd_);
    fail(ErrorCode::Kernel, "cannot bind " + options_.path + ": " + errno_text(bind_errno));
  }
  if (options_.group && chown(options_.path.c_str(), geteuid(), *options_.group) != 0)
    log(LogLevel::Warn, "cannot give " + options_.path + " to group " + options_.group_name + ": " + errno_text(errno));
  chmod(options_.path.c_str(), 0660);
  if (listen(listen_fd_, 64) != 0) {
    close(listen_fd_);
    unlink(options_.path.c_str());
    fail(ErrorCode::Kernel, "listen on " + options_.path + ": " + errno_text(errno));
  }

  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listen_fd_;
  if (epoll_fd_ < 0 || epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev) != 0) {
    close(listen_fd_);
    unlink(options_.path.c_str());
    fail(ErrorCode::Kernel, "epoll: " + errno_text(errno));
  }
}

ControlServer::~ControlServer() {
  std::vector<int> fds;
  for (const auto& [fd, c] : connections_) fds.push_back(fd);
  for (int fd : fds) close_connection(fd);
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (listen_fd_ >= 0) close(listen_fd_);
  unlink(options_.path.c_str());
  if (created_dir_) rmdir(dir_.c_str());  // fails harmlessly if something else lives there
}

void ControlServer::watch(int fd, std::function<void()> on_readable) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) fail(ErrorCode::Kernel, "epoll_ctl: " + errno_text(errno));
  watched_[fd] = std::move(on_readable);
}

void ControlServer::set_group(std::optional<gid_t> group, const std::string& group_name) {
  const gid_t gid = group ? *group : getegid();
  const std::string to_group = " to group " + (group ? "'" + group_name + "'" : std::to_string(gid)) + ": ";
  struct stat before {};
  if (stat(options_.path.c_str(), &before) != 0)
    fail(ErrorCode::Kernel, "cannot read " + options_.path + ": " + errno_text(errno));
  if (chown(options_.path.c_str(), geteuid(), gid) != 0)
    fail(ErrorCode::Kernel, "cannot give " + options_.path + to_group + errno_text(errno));
  if (created_dir_ && chown(dir_.c_str(), geteuid(), gid) != 0) {
    const int err = errno;
    (void)!chown(options_.path.c_str(), before.st_uid, before.st_gid);
    fail(ErrorCode::Kernel, "cannot give " + dir_ + to_group + errno_text(err));
  }
  options_.group = group;
  options_.group_name = group ? group_name : std::string();
}

void ControlServer::unwatch(int fd) {
  if (watched_.erase(fd) > 0) epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
}

size_t ControlServer::stream_count() const {
  size_t n = 0;
  for (const auto& [fd, c] : connections_) n += c->stream ? 1 : 0;
  return n;
}

void ControlServer::publish(std::string_view line) {
  std::vector<int> fds;
  for (const auto& [fd, c] : connections_)
    if (c->stream && !c->close_after_write) fds.push_back(fd);
  for (int fd : fds) {
    auto it = connections_.find(fd);
    if (it == connections_.end()) continue;
    Connection& c = *it->second;
    std::string lost_line;
    if (c.lost > 0) lost_line = "{\"event\":\"events-lost\",\"count\":" + std::to_string(c.lost) + "}\n";
    const size_t adding = lost_line.size() + line.size() + 1;
    // Held lines (before_answers_) have their own allowance; the backlog of earlier iterations has the queue's.
    const bool full = before_answers_ ? c.out.size() - c.held_bytes > options_.max_stream_queue_bytes ||
                                            c.held_bytes + adding > options_.max_held_stream_bytes
                                      : c.out.size() + adding > options_.max_stream_queue_bytes;
    if (full) {
      ++c.lost;  // a slow subscriber must never hold the daemon up
      continue;
    }
    c.out += lost_line;
    c.lost = 0;
    c.out.append(line.data(), line.size());
    c.out += '\n';
    if (before_answers_) {
      c.held_bytes += adding;
      // An event about a change goes out only once the change is durable (send_held_answers).
      if (std::find(held_streams_.begin(), held_streams_.end(), fd) == held_streams_.end()) held_streams_.push_back(fd);
      continue;
    }
    on_writable(c);  // may close c
  }
}

void ControlServer::flush_streams() {
  for (const auto& [fd, c] : connections_)
    if (c->stream && !c->out.empty()) (void)!send(fd, c->out.data(), c->out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

bool ControlServer::peer_allowed(int fd, std::string* why) const {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    *why = "cannot read the peer's credentials";
    return false;
  }
  if (cred.uid == 0) return true;
  if (options_.group) {
    if (cred.gid == *options_.group) return true;
    // Supplementary groups as they were at connect() (Linux 4.13+).
    std::vector<gid_t> groups(64);
    socklen_t glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    int rc = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen);
    if (rc != 0 && errno == ERANGE) {
      groups.resize(glen / sizeof(gid_t));
      rc = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen);
    }
    groups.resize(rc == 0 ? glen / sizeof(gid_t) : 0);
    if (std::find(groups.begin(), groups.end(), *options_.group) != groups.end()) return true;
  }
  *why = "uid " + std::to_string(cred.uid) + " (pid " + std::to_string(cred.pid) +
         ") may not use the ipsecov2d control socket: it accepts root" +
         (options_.group ? " and members of group '" + options_.group_name + "'" : std::string()) +
         (options_.group ? "" : " (start ipsecov2d with --group NAME to admit a group)");
  return false;
}

void ControlServer::accept_all() {
  for (;;) {
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        log(LogLevel::Warn, "accept on " + options_.path + ": " + errno_text(errno));
      return;
    }
    std::string why;
    std::string refusal;
    if (!peer_allowed(fd, &why)) {
      log(LogLevel::Warn, "refused a connection: " + why);
      refusal = error_line("permission-denied", why);
    } else if (connections_.size() >= options_.max_connections && !evict_idle_connection()) {
      log(LogLevel::Warn, "refused a connection: " + std::to_string(connections_.size()) + " already open");
      refusal = error_line(
          "busy", "too many open control connections (" + std::to_string(options_.max_connections) + "); try again");
    }
    if (!refusal.empty()) {
      // Best effort: the answer is short and fits the socket buffer.
      (void)!send(fd, refusal.data(), refusal.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      close(fd);
      continue;
    }
    auto c = std::make_unique<Connection>();
    c->fd = fd;
    c->deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.read_timeout_ms);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.fd = fd;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      close(fd);
      continue;
    }
    connections_[fd] = std::move(c);
  }
}

void ControlServer::queue(Connection& c, const std::string& line, bool then_close) {
  c.out += line;
  c.close_after_write = c.close_after_write || then_close;
}

void ControlServer::update_interest(Connection& c) {
  epoll_event ev{};
  ev.events = c.out.empty() ? (EPOLLIN | EPOLLRDHUP) : EPOLLOUT;  // stop reading while an answer is pending
  // A subscriber is always read (to notice it closing) and written while it has lines queued.
  if (c.stream) ev.events = EPOLLIN | EPOLLRDHUP | (c.out.empty() ? 0u : static_cast<uint32_t>(EPOLLOUT));
  ev.data.fd = c.fd;
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
}

void ControlServer::on_readable(Connection& c) {
  char buf[16384];
  bool peer_closed = false;
  for (;;) {
    const ssize_t n = recv(c.fd, buf, sizeof buf, 0);
    if (n > 0) {
      c.in.append(buf, static_cast<size_t>(n));
      OPENSSL_cleanse(buf, static_cast<size_t>(n));
      if (c.in.size() > options_.max_request_bytes + 1) break;  // enough to know it is too big
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) peer_closed = true;  // EOF or a real error
    break;
  }

  // Answer every complete line; stop at the first pending answer's limit.
  size_t start = 0;
  for (;;) {
    if (c.stream) {  // a subscriber's input after its request means nothing
      start = c.in.size();
      break;
    }
    const size_t nl = c.in.find('\n', start);
    if (nl == std::string::npos) break;
    if (nl - start > options_.max_request_bytes) {
      queue(c,
            error_line("too-large", "the request is larger than " + std::to_string(options_.max_request_bytes) +
                                        " bytes; the connection is closed"),
            true);
      start = c.in.size();
      break;
    }
    std::string_view line(c.in.data() + start, nl - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!line.empty()) {
      const uint64_t changes_before = change_count_ ? change_count_() : 0;
      const std::string answer = handler_(line);
      if (change_count_ && change_count_() != changes_before)
        c.changing_answers.emplace_back(c.out.size(), c.out.size() + answer.size());
      queue(c, answer, false);
      if (stream_detector_ && stream_detector_(answer)) c.stream = true;
    }
    start = nl + 1;
    c.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.read_timeout_ms);
  }
  if (start > 0) {
    OPENSSL_cleanse(c.in.data(), start);
    c.in.erase(0, start);
  }
  if (!c.close_after_write && c.in.size() > options_.max_request_bytes) {
    queue(c,
          error_line("too-large", "the request is larger than " + std::to_string(options_.max_request_bytes) +
                                      " bytes; the connection is closed"),
          true);
  }
  if (c.close_after_write) wipe(c.in);
  if (peer_closed) {
    if (!c.in.empty()) {
      // A request without its newline: the client went away mid-request.
      log(LogLevel::Debug, "a client closed the connection in the middle of a request");
      wipe(c.in);
    }
    c.close_after_write = true;
  }
  if (c.out.empty() && c.close_after_write) {
    close_connection(c.fd);
    return;
  }
  if (before_answers_ && !c.out.empty() && !c.stream) {
    held_answers_.push_back(c.fd);  // sent by send_held_answers(), once the iteration's changes are durable
    return;
  }
  on_writable(c);
}

void ControlServer::send_held_answers() {
  const std::string not_saved = before_answers_ ? before_answers_() : std::string();
  std::vector<int> fds;
  fds.swap(held_answers_);
  for (int fd : fds) {
    auto it = connections_.find(fd);
    if (it == connections_.end()) continue;
    Connection& c = *it->second;
    if (!not_saved.empty() && !c.changing_answers.empty()) {
      std::string out;
      size_t done = 0;
      for (const auto& [begin, end] : c.changing_answers) {
        out.append(c.out, done, begin - done);
        out += not_saved_answer(std::string_view(c.out).substr(begin, end - begin), not_saved);
        done = end;
      }
      out.append(c.out, done, std::string::npos);
      c.out.swap(out);
    }
    c.changing_answers.clear();
    on_writable(c);
  }
  std::vector<int> streams;
  streams.swap(held_streams_);
  for (int fd : streams) {
    auto it = connections_.find(fd);
    if (it == connections_.end()) continue;
    it->second->held_bytes = 0;
    on_writable(*it->second);
  }
}

std::string ControlServer::not_saved_answer(std::string_view answer, const std::string& why) {
  nlohmann::json applied = nlohmann::json::parse(answer, nullptr, false);
  if (applied.is_object()) applied.erase("ok");
  nlohmann::json line = {{"ok", false}, {"error", {{"code", "not-saved"}, {"message", why}}}};
  if (!applied.is_discarded()) line["applied"] = std::move(applied);
  return answer_line(line);
}

void ControlServer::on_writable(Connection& c) {
  const bool had_output = !c.out.empty();
  while (!c.out.empty()) {
    const ssize_t n = send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c.out.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    close_connection(c.fd);  // peer gone
    return;
  }
  if (c.out.empty() && c.close_after_write) {
    close_connection(c.fd);
    return;
  }
  // The next request has its own time from the moment its answer is out.
  // Only then: bytes of a request trickling in do not buy more time (a client
  // sending a byte a second would otherwise hold its slot for ever).
  if (had_output && c.out.empty())
    c.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.read_timeout_ms);
  update_interest(c);
}

void ControlServer::close_connection(int fd) {
  auto it = connections_.find(fd);
  if (it == connections_.end()) return;
  wipe(it->second->in);
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  close(fd);
  connections_.erase(it);
}

bool ControlServer::evict_idle_connection() {
  // The oldest connection that has sent nothing and waits for nothing: a
  // caller holding slots open without speaking must not lock others out.  A
  // connection in the middle of a request, or a monitor stream, is kept.
  int victim = -1;
  auto oldest = std::chrono::steady_clock::time_point::max();
  for (const auto& [fd, c] : connections_)
    if (!c->stream && c->in.empty() && c->out.empty() && !c->close_after_write && c->deadline < oldest) {
      oldest = c->deadline;
      victim = fd;
    }
  if (victim < 0) return false;
  const std::string line = error_line("busy", "closed to make room for another caller: this connection sent nothing");
  (void)!send(victim, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  log(LogLevel::Debug, "closed an idle control connection to make room");
  close_connection(victim);
  return true;
}

void ControlServer::expire_slow_clients() {
  const auto now = std::chrono::steady_clock::now();
  std::vector<int> late;
  for (const auto& [fd, c] : connections_)
    if (!c->stream && c->out.empty() && !c->close_after_write && now >= c->deadline) late.push_back(fd);
  for (int fd : late) {
    Connection& c = *connections_.at(fd);
    log(LogLevel::Debug, "closing a control connection that sent no complete request in time");
    wipe(c.in);
    queue(c,
          error_line("timeout", "no complete request within " + std::to_string(options_.read_timeout_ms) +
                                    " ms; the connection is closed"),
          true);
    on_writable(c);
  }
}

int ControlServer::next_timeout_ms() const {
  if (connections_.empty()) return -1;
  auto earliest = std::chrono::steady_clock::time_point::max();
  for (const auto& [fd, c] : connections_)
    if (!c->stream) earliest = std::min(earliest, c->deadline);  // subscribers have no deadline
  if (earliest == std::chrono::steady_clock::time_point::max()) return -1;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(earliest - std::chrono::steady_clock::now());
  return static_cast<int>(std::clamp<int64_t>(left.count() + 1, 0, 60000));
}

void ControlServer::run(int stop_fd) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = stop_fd;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, stop_fd, &ev) != 0)
    fail(ErrorCode::Kernel, "epoll_ctl: " + errno_text(errno));
  epoll_event events[32];
  for (;;) {
    const int n = epoll_wait(epoll_fd_, events, 32, next_timeout_ms());
    if (n < 0 && errno != EINTR) fail(ErrorCode::Kernel, "epoll_wait: " + errno_text(errno));
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == stop_fd) {
        send_held_answers();
        epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, stop_fd, nullptr);
        return;
      }
      if (fd == listen_fd_) {
        accept_all();
        continue;
      }
      if (auto w = watched_.find(fd); w != watched_.end()) {
        const auto callback = w->second;  // a copy: the callback may unwatch itself
        callback();
        continue;
      }
      auto it = connections_.find(fd);
      if (it == connections_.end()) continue;  // closed earlier in this batch
      Connection& c = *it->second;
      if (c.stream) {
        if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) on_readable(c);
        if (auto again = connections_.find(fd); again != connections_.end() && (events[i].events & EPOLLOUT))
          on_writable(*again->second);
        continue;
      }
      if (events[i].events & EPOLLOUT)
        on_writable(c);
      else
        on_readable(c);
    }
    send_held_answers();
    expire_slow_clients();
    if (stop_requested_) {
      stop_requested_ = false;
      epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, stop_fd, nullptr);
      return;
    }
  }
}

}  // namespace ov2
