// The control socket: a Unix stream socket served by one thread with epoll.
// Speaks protocol.h (newline-delimited JSON); hands each complete request line
// to a handler and writes its answer back.  Checks the peer with SO_PEERCRED
// (uid 0, or the configured group as primary or supplementary group) and
// enforces the size, time and connection limits of protocol.h.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "control/protocol.h"

namespace ov2 {

struct ControlServerOptions {
  std::string path = kDefaultSocketPath;
  std::optional<gid_t> group;  // members may connect too; the socket gets this group
  std::string group_name;      // for messages
  size_t max_request_bytes = kMaxRequestBytes;
  int read_timeout_ms = kReadTimeoutMs;
  size_t max_connections = kMaxConnections;
  // Per stream subscriber (monitor): bytes queued but not yet sent.  Beyond
  // it published lines are dropped and counted; the subscriber then gets an
  // {"event":"events-lost","count":N} line before the next line that fits.
  size_t max_stream_queue_bytes = 256 * 1024;
  // With a before-answers hook, the lines published during one loop
  // iteration wait for its verdict: up to this many bytes of them per
  // subscriber on top of the queue above (one 10 000-SA batch makes ~1.3 MB).
  size_t max_held_stream_bytes = 2 * 1024 * 1024;
};

// Looks a group name up; throws ov2::Error(InvalidArgument) if there is none.
gid_t lookup_group(const std::string& name);

class ControlServer {
 public:
  using Handler = std::function<std::string(std::string_view request_line)>;

  // Creates the socket directory (0750) if missing, removes a stale socket
  // file (refusing if another daemon answers on it), binds and listens (mode
  // 0660).  Throws ov2::Error.
  ControlServer(ControlServerOptions options, Handler handler);
  // Closes every connection and removes the socket file (and the directory
  // if this server created it).
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Also watch `fd` for input and call `on_readable` (e.g. the BPF event ring).
  void watch(int fd, std::function<void()> on_readable);
  // Stops watching `fd` (the caller closes it).  Safe from inside its own callback.
  void unwatch(int fd);

  // Decides from an answer line whether the connection that asked becomes a
  // stream subscriber (e.g. the "monitor" op): from then on its input is
  // ignored (only its closing is noticed) and publish() lines go to it.
  void set_stream_detector(std::function<bool(std::string_view answer_line)> detector) {
    stream_detector_ = std::move(detector);
  }
  // Queues `line` (with its newline) to every stream subscriber without
  // blocking; a subscriber whose queue is full loses it (counted, reported).
  void publish(std::string_view line);
  // Called once per event-loop iteration, after every request that arrived
  // in it was handled and before any of their answers (and any line
  // published in the iteration) is sent (the daemon: make the state journal
  // durable -- group commit, control/state_store.h).  Without it, answers are
  // sent as soon as they are made.
  //
  // The hook returns "" when the iteration's changes are durable, else why
  // not.  `change_count` (read before and after each request) tells which
  // requests changed something: when the hook fails, each of their answers
  // is replaced by {"ok":false,"error":{"code":"not-saved","message":<why>},
  // "applied":<the answer it would have had, without "ok">} -- the change is
  // in effect but not durable; answers of requests that changed nothing go
  // out unchanged.
  using BeforeAnswers = std::function<std::string()>;
  void set_before_answers(BeforeAnswers hook, std::function<uint64_t()> change_count = {}) {
    before_answers_ = std::move(hook);
    change_count_ = std::move(change_count);
  }
  // Tries once, without blocking, to send what subscribers have queued (before shutdown).
  void flush_streams();
  size_t stream_count() const;

  // Serves until `stop_fd` becomes readable (a signalfd or eventfd), or
  // until stop() is called (from a callback).
  void run(int stop_fd);
  // Makes run() return after the current batch of events.
  void stop() { stop_requested_ = true; }

  // For reload of control.group: gives the socket file (and the socket
  // directory, if this server created it) to `group` (nullopt: the daemon's
  // own group, so only root may connect) and admits that group's members
  // from the next connection on.  Throws ov2::Error(Kernel) if chown fails;
  // then nothing changed.
  void set_group(std::optional<gid_t> group, const std::string& group_name);

  size_t connection_count() const { return connections_.size(); }
  const std::string& path() const { return options_.path; }

 private:
  struct Connection {
    int fd = -1;
    std::string in;
    std::string out;
    std::chrono::steady_clock::time_point deadline;
    bool close_after_write = false;
    bool stream = false;  // a subscriber: gets publish() lines, input ignored
    uint64_t lost = 0;    // lines dropped since the last events-lost report
    size_t held_bytes = 0;  // published lines at the end of `out` waiting for the before-answers verdict
    // Held answers of requests that changed something: [begin, end) in `out`.
    std::vector<std::pair<size_t, size_t>> changing_answers;
  };

  void accept_all();
  // When every slot is taken: closes the oldest idle connection; false if none is idle.
  bool evict_idle_connection();
  bool peer_allowed(int fd, std::string* why) const;
  void on_readable(Connection& c);
  void on_writable(Connection& c);
  void queue(Connection& c, const std::string& line, bool then_close);
  void update_interest(Connection& c);
  void close_connection(int fd);
  void expire_slow_clients();
  int next_timeout_ms() const;
  // Runs before_answers_ and sends the answers (and published lines) held back for it.
  void send_held_answers();
  // The not-saved answer that replaces `answer` (see set_before_answers).
  static std::string not_saved_answer(std::string_view answer, const std::string& why);

  ControlServerOptions options_;
  Handler handler_;
  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  bool created_dir_ = false;
  std::string dir_;
  std::map<int, std::unique_ptr<Connection>> connections_;
  std::map<int, std::function<void()>> watched_;
  std::function<bool(std::string_view)> stream_detector_;
  BeforeAnswers before_answers_;
  std::function<uint64_t()> change_count_;
  std::vector<int> held_answers_;  // connections whose answers wait for before_answers_
  std::vector<int> held_streams_;  // subscribers whose published lines wait for it too
  bool stop_requested_ = false;
};

}  // namespace ov2
