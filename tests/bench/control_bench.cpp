// The "control" group: SA installation rate and memory of a real ipsecov2d.
// One control connection, requests pipelined (newline-delimited JSON, see
// ctl/control/protocol.h); outbound and inbound SAs are measured separately
// because an inbound SA also writes an entry into the data plane's BPF map.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../proc_status.h"
#include "bench_common.h"

namespace ov2::bench {
namespace {

using nlohmann::json;
using test::vm_rss_bytes;

// CPU time (user + system, all threads) a process has used, in seconds.
double cpu_seconds(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return 0;
  std::istringstream rest(stat.substr(paren + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {  // fields 14 and 15: utime, stime (clock ticks)
    if (i == 14) utime = std::stod(field);
    if (i == 15) stime = std::stod(field);
  }
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// The CPU a process uses over `seconds` of wall time, in % of one core,
// after a second's pause (so that the tail of what it just did, answers and
// housekeeping, is not counted).
double idle_percent(pid_t pid, double seconds) {
  interruptible_sleep(std::chrono::seconds(1));
  const double cpu0 = cpu_seconds(pid);
  const auto t0 = std::chrono::steady_clock::now();
  interruptible_sleep(std::chrono::duration<double>(seconds));
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return wall > 0 ? 100.0 * (cpu_seconds(pid) - cpu0) / wall : 0;
}

// A real ipsecov2d started by the bench and stopped (SIGTERM, then SIGKILL)
// when this object goes.  With a wire, the daemon runs in a private network
// namespace (unshare, so it disappears with the daemon) on one end of a
// fresh veth pair.  Its own process group (fork_child_group): it dies with the
// bench, a ^C on the terminal reaches the bench only, and a forced exit kills
// the group.
class Daemon {
 public:
  // `state_dir` empty: no state file (a non-default --socket keeps none).  `restore`: restore what
  // `state_dir` holds (else --no-restore).  `log_path`: the daemon's log (debug level) goes there.
  Daemon(const std::string& binary, const std::string& socket_path, bool with_wire, const std::string& state_dir = "",
         bool restore = false, const std::string& log_path = "") {
    std::vector<std::string> args = {binary, "--socket", socket_path, "--log-level",
                                     log_path.empty() ? "warning" : "debug"};
    if (!restore) args.push_back("--no-restore");
    if (with_wire) args.insert(args.end(), {"--wire", "ov2bw0"});
    if (!state_dir.empty()) args.insert(args.end(), {"--state-dir", state_dir});
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = fork_child_group();
    if (pid_ == 0) {
      if (with_wire) {
        if (unshare(CLONE_NEWNET) != 0) _exit(120);
        if (std::system("ip link add ov2bw0 type veth peer name ov2bw1 && ip link set lo up && "
                        "ip link set ov2bw0 up && ip link set ov2bw1 up") != 0)
          _exit(121);
      }
      const int devnull = open("/dev/null", O_RDWR);
      if (devnull >= 0) dup2(devnull, STDIN_FILENO);
      if (!log_path.empty()) {
        const int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (log >= 0) dup2(log, STDERR_FILENO);
      }
      execv(binary.c_str(), argv.data());
      _exit(127);
    }
    group_ = std::make_unique<Leftover>(Leftover::Kind::ProcessGroup, std::to_string(pid_));
    try {
      wait_for_socket(socket_path, restore ? 60 : 15);
    } catch (...) {
      stop();
      throw;
    }
  }
  ~Daemon() { stop(); }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;
  pid_t pid() const { return pid_; }
  // SIGTERM and the time until it has exited (its clean stop).
  double stop_timed() {
    const auto t0 = std::chrono::steady_clock::now();
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
    pid_ = -1;
    group_.reset();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

 private:
  // Up to `seconds` (restoring a large state takes longer); a signal ends the wait.
  void wait_for_socket(const std::string& socket_path, int seconds) {
    for (int i = 0; i < seconds * 100; ++i) {
      struct stat st{};
      if (stat(socket_path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) return;
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        check_interrupt();
        throw std::runtime_error("ipsecov2d exited before creating its socket (status " + std::to_string(status) +
                                 "); run the bench as root and build ipsecov2d");
      }
      interruptible_sleep(std::chrono::milliseconds(10));
    }
    throw std::runtime_error("ipsecov2d did not create " + socket_path + " within " + std::to_string(seconds) + " s");
  }
  void stop() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      bool gone = false;
      for (int i = 0; i < 100 && !gone; ++i) {
        gone = waitpid(pid_, nullptr, WNOHANG) == pid_;
        if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      if (!gone) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
      }
    }
    pid_ = -1;
    group_.reset();
  }

  pid_t pid_ = -1;
  std::unique_ptr<Leftover> group_;
};

// One control connection that sends many requests before reading the
// answers (the daemon answers in order), never blocking on either side.
class PipelinedClient {
 public:
  explicit PipelinedClient(const std::string& socket_path) {
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", socket_path.c_str());
    if (fd_ < 0 || connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
      throw std::runtime_error("cannot connect to " + socket_path + ": " + std::strerror(errno));
  }
  ~PipelinedClient() {
    if (fd_ >= 0) close(fd_);
  }
  PipelinedClient(const PipelinedClient&) = delete;
  PipelinedClient& operator=(const PipelinedClient&) = delete;

  // Sends every request line (each ends with '\n') and returns the answers
  // in order.  Throws on a closed connection or no progress for 30 s, and
  // Interrupted on a signal (looked for at each wake-up, and at least every
  // 200 ms: this loop is timed, so no second descriptor in its poll).
  std::vector<json> exchange(const std::vector<std::string>& requests) {
    std::vector<json> answers;
    answers.reserve(requests.size());
    size_t next = 0, offset = 0;
    std::string in;
    int idle_ms = 0;
    while (answers.size() < requests.size()) {
      pollfd p{fd_, static_cast<short>(POLLIN | (next < requests.size() ? POLLOUT : 0)), 0};
      const int ready = poll(&p, 1, 200);
      check_interrupt();
      if (ready <= 0) {
        if ((idle_ms += 200) >= 30000) throw std::runtime_error("the daemon stopped answering (30 s)");
        continue;
      }
      idle_ms = 0;
      if (p.revents & POLLOUT) {
        // Coalesce up to ~64 KiB of requests per send.
        std::string chunk;
        size_t n = next, o = offset;
        while (n < requests.size() && chunk.size() < 65536) {
          chunk.append(requests[n], o, std::string::npos);
          o = 0;
          ++n;
        }
        const ssize_t sent = send(fd_, chunk.data(), chunk.size(), MSG_NOSIGNAL);
        if (sent < 0 && errno != EAGAIN && errno != EINTR) throw std::runtime_error("send failed");
        size_t left = sent > 0 ? static_cast<size_t>(sent) : 0;
        while (left > 0) {
          const size_t rest = requests[next].size() - offset;
          if (left >= rest) {
            left -= rest;
            ++next;
            offset = 0;
          } else {
            offset += left;
            left = 0;
          }
        }
      }
      if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
        char buf[65536];
        const ssize_t got = recv(fd_, buf, sizeof buf, 0);
        if (got == 0) throw std::runtime_error("the daemon closed the connection");
        if (got < 0 && errno != EAGAIN && errno != EINTR) throw std::runtime_error("recv failed");
        if (got > 0) in.append(buf, static_cast<size_t>(got));
        size_t start = 0, nl;
        while ((nl = in.find('\n', start)) != std::string::npos) {
          answers.push_back(json::parse(in.begin() + static_cast<std::ptrdiff_t>(start),
                                        in.begin() + static_cast<std::ptrdiff_t>(nl)));
          start = nl + 1;
        }
        in.erase(0, start);
      }
    }
    return answers;
  }

 private:
  int fd_ = -1;
};

std::string hex_key(uint32_t i) {
  char buf[41];
  // Not secret (a benchmark SA that protects nothing); distinct per SA.
  std::snprintf(buf, sizeof buf, "%08x00112233445566778899aabbccddeeff", i);
  return std::string(buf, 40);
}

// SAs per batched sa.add request.
constexpr uint32_t kPerBatch = 1000;

// `seconds_lifetime`: with lifetime-seconds [3000, 3600] (as an IKE daemon sets them).
std::vector<std::string> sa_add_requests(const char* dir, uint32_t first_spi, uint32_t count,
                                         bool seconds_lifetime = false) {
  std::vector<std::string> lines;
  lines.reserve(count);
  const bool out = std::strcmp(dir, "out") == 0;
  for (uint32_t i = 0; i < count; ++i) {
    json sa = {{"dir", dir},
               {"mode", "tunnel"},
               {"src", out ? "192.0.2.1" : "192.0.2.2"},
               {"dst", out ? "192.0.2.2" : "192.0.2.1"},
               {"spi", first_spi + i},
               {"aead", "aes-gcm-128"},
               {"key", hex_key(i)}};
    if (seconds_lifetime) sa["lifetime-seconds"] = {3000, 3600};
    lines.push_back(json{{"version", 1}, {"op", "sa.add"}, {"sa", std::move(sa)}}.dump() + "\n");
  }
  return lines;
}

// The same SAs as sa_add_requests, `per_request` to one batch sa.add request.
std::vector<std::string> sa_add_batch_requests(const char* dir, uint32_t first_spi, uint32_t count,
                                               uint32_t per_request, bool seconds_lifetime = false) {
  const auto singles = sa_add_requests(dir, first_spi, count, seconds_lifetime);
  std::vector<std::string> lines;
  for (size_t i = 0; i < singles.size(); i += per_request) {
    json sas = json::array();
    for (size_t k = i; k < std::min(singles.size(), i + per_request); ++k)
      sas.push_back(json::parse(singles[k]).at("sa"));
    lines.push_back(json{{"version", 1}, {"op", "sa.add"}, {"sas", std::move(sas)}}.dump() + "\n");
  }
  return lines;
}

// Sends the requests over `connections` pipelined connections at once (request i
// on connection i % connections); returns the handles (in request order) and the rate.
std::vector<std::string> exchange_sa_adds(const std::string& socket_path, const std::vector<std::string>& requests,
                                          unsigned connections, double& seconds) {
  std::vector<std::vector<std::string>> per(connections);
  for (size_t i = 0; i < requests.size(); ++i) per[i % connections].push_back(requests[i]);
  std::vector<std::unique_ptr<PipelinedClient>> clients;
  for (unsigned c = 0; c < connections; ++c) clients.push_back(std::make_unique<PipelinedClient>(socket_path));
  std::vector<std::vector<json>> answers(connections);
  std::vector<std::exception_ptr> errors(connections);  // Interrupted too
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (unsigned c = 0; c < connections; ++c)
    threads.emplace_back([&, c] {
      try {
        answers[c] = clients[c]->exchange(per[c]);
      } catch (...) {
        errors[c] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  check_interrupt();
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
  std::vector<std::string> handles;
  for (size_t i = 0; i < requests.size(); ++i) {
    const json& a = answers[i % connections][i / connections];
    if (!a.value("ok", false)) throw std::runtime_error("sa.add refused: " + a.dump().substr(0, 400));
    if (a.contains("handles"))
      for (const auto& h : a["handles"]) handles.push_back(h.get<std::string>());
    else
      handles.push_back(a.at("handle").get<std::string>());
  }
  return handles;
}

// The file system type of `path` ("tmpfs", "ext4", ...).
std::string filesystem_of(const std::string& path) {
  struct statfs st{};
  if (statfs(path.c_str(), &st) != 0) return "unknown";
  switch (static_cast<unsigned long>(st.f_type)) {
    case 0x01021994: return "tmpfs";
    case 0xEF53: return "ext4";
    case 0x58465342: return "xfs";
    case 0x9123683E: return "btrfs";
    case 0x794C7630: return "overlayfs";
    default: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "fs 0x%lx", static_cast<unsigned long>(st.f_type));
      return buf;
    }
  }
}

// Sends the sa.add `requests` (of direction `dir`), returns the handles and
// the rate in SAs/s.
std::vector<std::string> add_sas(PipelinedClient& client, const char* dir, const std::vector<std::string>& requests,
                                 double& rate) {
  const auto count = static_cast<double>(requests.size());
  const auto t0 = std::chrono::steady_clock::now();
  const auto answers = client.exchange(requests);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<std::string> handles;
  handles.reserve(requests.size());
  for (const auto& a : answers) {
    if (!a.value("ok", false))
      throw std::runtime_error(std::string("sa.add (") + dir + ") refused: " + a.dump());
    handles.push_back(a.at("handle").get<std::string>());
  }
  rate = count / s;
  return handles;
}

double delete_sas(PipelinedClient& client, const std::vector<std::string>& handles) {
  constexpr size_t kPerRequest = 1000;  // ~20 KB per line, under the 64 KiB request limit
  std::vector<std::string> requests;
  for (size_t i = 0; i < handles.size(); i += kPerRequest) {
    json list = json::array();
    for (size_t k = i; k < std::min(handles.size(), i + kPerRequest); ++k) list.push_back(handles[k]);
    requests.push_back(json{{"version", 1}, {"op", "sa.del"}, {"handles", std::move(list)}, {"force", true}}.dump() +
                       "\n");
  }
  const auto t0 = std::chrono::steady_clock::now();
  const auto answers = client.exchange(requests);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (const auto& a : answers)
    if (!a.value("ok", false)) throw std::runtime_error("sa.del refused: " + a.dump());
  return static_cast<double>(handles.size()) / s;
}

}  // namespace

void run_control_benchmarks(Report& report, const ControlOptions& options) {
  double out_rate = 0, in_rate = 0, del_rate = 0, out_cpu = 0, in_cpu = 0, idle = 0, idle_life = 0;
  uint64_t rss0 = 0, rss_out = 0, rss_in = 0, rss_del = 0;
  std::string error;
  {
    set_stage("control: ipsecov2d without a state file, " + std::to_string(options.sa_count) + " SAs per direction",
              true);
    const TempDir dir("/tmp", ".");
    const std::string socket_path = dir.path() + "/ctl.sock";
    try {
      // Built before connecting: the daemon closes a connection that sends no
      // complete request for 5 s, and building 100 000 requests between the
      // two phases took that long on the loaded machine ("send failed").
      const auto out_requests = sa_add_requests("out", 0x100000, options.sa_count);
      const auto in_requests = sa_add_requests("in", 0x100000, options.sa_count);
      Daemon daemon(options.daemon_binary, socket_path, options.with_wire);
      PipelinedClient client(socket_path);
      // Warm the connection and the daemon's first allocations.
      const auto caps = client.exchange({json{{"version", 1}, {"op", "caps"}}.dump() + "\n"});
      if (!caps.at(0).value("ok", false)) throw std::runtime_error("caps refused: " + caps.at(0).dump());
      rss0 = vm_rss_bytes(daemon.pid());
      const double cpu0 = cpu_seconds(daemon.pid());
      auto out = add_sas(client, "out", out_requests, out_rate);
      rss_out = vm_rss_bytes(daemon.pid());
      const double cpu1 = cpu_seconds(daemon.pid());
      auto in = add_sas(client, "in", in_requests, in_rate);
      rss_in = vm_rss_bytes(daemon.pid());
      out_cpu = cpu1 - cpu0;
      in_cpu = cpu_seconds(daemon.pid()) - cpu1;
      // The daemon holding them with nothing to do (no traffic, no lifetimes):
      // what its periodic work costs.
      idle = idle_percent(daemon.pid(), options.idle_seconds);
      // The daemon closed that connection, silent for more than 5 s: a new one.
      PipelinedClient fresh(socket_path);
      out.insert(out.end(), in.begin(), in.end());
      del_rate = delete_sas(fresh, out);
      // The data plane frees deleted SAs (keys wiped, key storage chunks
      // unmapped) after the workers' next quiescent point and then trims the
      // heap, in 50 ms housekeeping ticks: wait until the key storage holds
      // no slot (at most 10 s), then a few ticks for the trim.
      for (int i = 0; i < 100; ++i) {
        const auto stats = fresh.exchange({json{{"version", 1}, {"op", "stats"}}.dump() + "\n"});
        const json& ks = stats.at(0).at("stats").at("key_storage");
        if (ks.at("keys").at("slots_in_use") == 0 && ks.at("schedules").at("slots_in_use") == 0) break;
        interruptible_sleep(std::chrono::milliseconds(100));
      }
      interruptible_sleep(std::chrono::milliseconds(500));
      rss_del = vm_rss_bytes(daemon.pid());
      // The same idle with SAs that all carry a lifetime in seconds (what IKE
      // daemons set): each is read when a limit is due, not at every tick.
      {
        double s = 0;
        exchange_sa_adds(socket_path, sa_add_batch_requests("out", 0x600000, options.sa_count, kPerBatch, true), 1, s);
        exchange_sa_adds(socket_path, sa_add_batch_requests("in", 0x600000, options.sa_count, kPerBatch, true), 1, s);
      }
      idle_life = idle_percent(daemon.pid(), options.idle_seconds);
    } catch (const std::exception& e) {
      check_interrupt();
      error = e.what();
    }
  }
  if (!error.empty()) throw std::runtime_error("control group: " + error);

  // The same with the daemon's state file on, in a fresh directory next to
  // the default one (/run/ipsecov2): journal + group commit (state_store.h).
  set_stage("control: ipsecov2d with its state file, " + std::to_string(options.sa_count) + " SAs per direction", true);
  double batch_out = 0, batch_in = 0, single_out = 0, single_in = 0, state_del = 0, batch_cpu = 0, single_cpu = 0;
  double stop_s = 0, restore_s = 0, restore_cpu = 0, restored = 0, restart_stop_s = 0;
  double stop_journal_bytes = 0, stop_snapshot_bytes = 0;
  std::string restore_log;
  // The restore after a stop that ended the journal (no snapshot at stop): the journal replay path.
  double restart_stop_state_ms = 0, restart_stop_state_cpu_ms = 0;
  std::string restart_stop_state_log;
  double journal_stop_s = 0, journal_stop_bytes = 0, journal_restore_s = 0, journal_restore_cpu = 0;
  std::string journal_restore_log;
  constexpr unsigned kSingleConnections = 4;
  std::string fs;
  {
    const TempDir state("/run", "-state.");
    const std::string& state_parent = state.path();
    fs = filesystem_of(state_parent);
    try {
      Daemon daemon(options.daemon_binary, state_parent + "/ctl.sock", options.with_wire, state_parent + "/state");
      double s = 0;
      const double cpu0 = cpu_seconds(daemon.pid());
      auto handles = exchange_sa_adds(state_parent + "/ctl.sock",
                                      sa_add_batch_requests("out", 0x100000, options.sa_count, kPerBatch), 1, s);
      batch_out = options.sa_count / s;
      auto in = exchange_sa_adds(state_parent + "/ctl.sock",
                                 sa_add_batch_requests("in", 0x100000, options.sa_count, kPerBatch), 1, s);
      batch_in = options.sa_count / s;
      batch_cpu = cpu_seconds(daemon.pid()) - cpu0;
      handles.insert(handles.end(), in.begin(), in.end());
      {
        PipelinedClient client(state_parent + "/ctl.sock");
        state_del = delete_sas(client, handles);
      }
      const double cpu1 = cpu_seconds(daemon.pid());
      auto kept = exchange_sa_adds(state_parent + "/ctl.sock", sa_add_requests("out", 0x300000, options.sa_count),
                                   kSingleConnections, s);
      single_out = options.sa_count / s;
      auto kept_in = exchange_sa_adds(state_parent + "/ctl.sock", sa_add_requests("in", 0x300000, options.sa_count),
                                      kSingleConnections, s);
      kept.insert(kept.end(), kept_in.begin(), kept_in.end());
      single_in = options.sa_count / s;
      single_cpu = cpu_seconds(daemon.pid()) - cpu1;
      // Restart with the 2 N SAs just added (their slots reused in the deletes' reverse order): the clean
      // stop (its snapshot), then the start up to the socket (restore of state.json + journal, install).
      stop_s = daemon.stop_timed();
      // What the stop left: a snapshot and a header-only journal, or (journal not larger than the snapshot)
      // the snapshot of the last compaction and the journal ending with a "stop" record.
      std::error_code ec;
      stop_journal_bytes = static_cast<double>(std::filesystem::file_size(state_parent + "/state/state.journal", ec));
      stop_snapshot_bytes = static_cast<double>(std::filesystem::file_size(state_parent + "/state/state.json", ec));
      const auto t0 = std::chrono::steady_clock::now();
      Daemon again(options.daemon_binary, state_parent + "/ctl.sock", options.with_wire, state_parent + "/state", true,
                   state_parent + "/restart.log");
      restore_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      restore_cpu = cpu_seconds(again.pid());
      // Spot checks: every 997th SA is there under its handle.
      PipelinedClient client(state_parent + "/ctl.sock");
      std::vector<std::string> shows;
      for (size_t i = 0; i < kept.size(); i += 997)
        shows.push_back(json{{"version", 1}, {"op", "sa.show"}, {"handle", kept[i]}}.dump() + "\n");
      for (const json& a : client.exchange(shows))
        if (!a.value("ok", false)) throw std::runtime_error("a saved SA is missing after the restart: " + a.dump());
      std::ifstream log(state_parent + "/restart.log");
      for (std::string line; std::getline(log, line);) {
        if (line.find("restored ") != std::string::npos)
          restored = std::atof(line.c_str() + line.find("restored ") + 9);
        if (line.find("restored ") != std::string::npos || line.find("start-up snapshot") != std::string::npos)
          restore_log += (restore_log.empty() ? "" : " | ") + line;
      }
      restart_stop_s = again.stop_timed();
      // The state's part of that stop, from its log line ("state kept in ... in W ms (CPU C ms)", or
      // "state saved to ... at stop (snapshot) in ...").
      std::ifstream stop_log(state_parent + "/restart.log");
      for (std::string line; std::getline(stop_log, line);)
        if (line.find("state kept in ") != std::string::npos || line.find("state saved to ") != std::string::npos) {
          restart_stop_state_log = line;
          if (const size_t at = line.rfind(" in "); at != std::string::npos)
            std::sscanf(line.c_str() + at + 4, "%lf ms (CPU %lf ms)", &restart_stop_state_ms,
                        &restart_stop_state_cpu_ms);
        }

      // The journal replay path: a daemon on those files (its start-up snapshot let finish) replaces the
      // N inbound SAs with N new ones (batched: N deletes and N adds journaled, less than the snapshot),
      // so that its clean stop ends the journal instead of writing a snapshot; then the start again.
      const std::string state_dir = state_parent + "/state";
      {
        Daemon third(options.daemon_binary, state_parent + "/ctl.sock", options.with_wire, state_dir, true);
        for (int i = 0; i < 600 && std::filesystem::exists(state_dir + "/state.journal.next"); ++i)
          interruptible_sleep(std::chrono::milliseconds(100));
        {
          PipelinedClient churn(state_parent + "/ctl.sock");
          delete_sas(churn, kept_in);
        }
        double churn_s = 0;
        kept_in = exchange_sa_adds(state_parent + "/ctl.sock",
                                   sa_add_batch_requests("in", 0x500000, options.sa_count, kPerBatch), 1, churn_s);
        journal_stop_s = third.stop_timed();
      }
      journal_stop_bytes = static_cast<double>(std::filesystem::file_size(state_dir + "/state.journal", ec));
      const auto t1 = std::chrono::steady_clock::now();
      Daemon fourth(options.daemon_binary, state_parent + "/ctl.sock", options.with_wire, state_dir, true,
                    state_parent + "/restart-journal.log");
      journal_restore_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
      journal_restore_cpu = cpu_seconds(fourth.pid());
      std::vector<std::string> new_shows;
      for (size_t i = 0; i < kept_in.size(); i += 997)
        new_shows.push_back(json{{"version", 1}, {"op", "sa.show"}, {"handle", kept_in[i]}}.dump() + "\n");
      for (const json& a : PipelinedClient(state_parent + "/ctl.sock").exchange(new_shows))
        if (!a.value("ok", false)) throw std::runtime_error("a journaled SA is missing after the restart: " + a.dump());
      std::ifstream journal_log(state_parent + "/restart-journal.log");
      for (std::string line; std::getline(journal_log, line);)
        if (line.find("restored ") != std::string::npos) journal_restore_log = line;
      fourth.stop_timed();
    } catch (const std::exception& e) {
      check_interrupt();
      error = e.what();
    }
  }
  if (!error.empty()) throw std::runtime_error("control group (state file on): " + error);
  const double n = options.sa_count;
  const std::string where = options.with_wire ? "daemon with a veth wire" : "daemon without --wire";
  const std::string state_where = where + ", state file on " + fs + " (/run, where the default /run/ipsecov2 is)";
  report.add("sa_install_per_s", std::min(batch_out, batch_in), "SAs/s",
             "batched sa.add (" + std::to_string(kPerBatch) + " SAs per request, 1 connection, pipelined), the slower of "
             "outbound/inbound, " + std::to_string(options.sa_count) + " each, " + state_where);
  report.add("sa_install_per_s_batch_out", batch_out, "SAs/s", "batched, outbound, " + state_where);
  report.add("sa_install_per_s_batch_in", batch_in, "SAs/s", "batched, inbound, " + state_where);
  report.add("sa_install_per_s_single", std::min(single_out, single_in), "SAs/s",
             "one sa.add per SA on " + std::to_string(kSingleConnections) +
                 " pipelined connections at once, the slower of outbound/inbound, " + state_where);
  report.add("sa_install_per_s_single_out", single_out, "SAs/s", "one request per SA, outbound, " + state_where);
  report.add("sa_install_per_s_single_in", single_in, "SAs/s", "one request per SA, inbound, " + state_where);
  report.add("sa_delete_per_s_state", state_del, "SAs/s", "sa.del, 1000 handles per request, " + state_where);
  report.add("sa_install_per_s_nostate", std::min(out_rate, in_rate), "SAs/s",
             "one sa.add per SA, 1 connection pipelined, the slower of outbound/inbound, " + where +
                 ", no state file (non-default --socket)");
  const double n2 = 2.0 * options.sa_count;
  report.add("sa_install_per_daemon_cpu_s_batch", batch_cpu > 0 ? n2 / batch_cpu : 0, "SAs/s",
             "batched, state file on: SAs per second of daemon CPU time (all threads; independent of other load)");
  report.add("sa_install_per_daemon_cpu_s_single", single_cpu > 0 ? n2 / single_cpu : 0, "SAs/s",
             "one request per SA, state file on: SAs per second of daemon CPU time");
  report.add("sa_install_per_daemon_cpu_s_nostate", out_cpu + in_cpu > 0 ? n2 / (out_cpu + in_cpu) : 0, "SAs/s",
             "one request per SA, no state file: SAs per second of daemon CPU time");
  const double nostate = std::min(out_rate, in_rate);
  report.add("sa_install_state_batch_vs_nostate", nostate > 0 ? std::min(batch_out, batch_in) / nostate : 0, "ratio",
             "sa_install_per_s / sa_install_per_s_nostate, same run (the state file's cost, batched)");
  report.add("sa_install_state_single_vs_nostate", nostate > 0 ? std::min(single_out, single_in) / nostate : 0,
             "ratio", "sa_install_per_s_single / sa_install_per_s_nostate, same run");
  report.add("sa_install_per_s_out", out_rate, "SAs/s", "outbound, 1 connection pipelined, " + where);
  report.add("sa_install_per_s_in", in_rate, "SAs/s",
             std::string(options.with_wire ? "inbound (BPF map entry each), " : "inbound (no data plane, no BPF map), ") +
                 where);
  report.add("sa_install_per_daemon_cpu_s_out", out_cpu > 0 ? n / out_cpu : 0, "SAs/s",
             "outbound SAs per second of daemon CPU time (all threads; independent of other load)");
  report.add("sa_install_per_daemon_cpu_s_in", in_cpu > 0 ? n / in_cpu : 0, "SAs/s",
             "inbound SAs per second of daemon CPU time (all threads, incl. workers and ticks)");
  report.add("sa_delete_per_s", del_rate, "SAs/s", "sa.del, 1000 handles per request");
  report.add("daemon_idle_cpu_percent", idle, "%",
             "of one core: daemon CPU time (all threads) / wall time over " +
                 std::to_string(static_cast<int>(options.idle_seconds)) + " s while it holds all " +
                 std::to_string(2 * options.sa_count) +
                 " SAs with no traffic and no lifetime limits (its 500 ms check, the 50 ms housekeeping, the "
                 "workers' polls), " +
                 where + "; CPU time is counted in 10 ms ticks");
  report.add("daemon_idle_cpu_percent_seconds_lifetimes", idle_life, "%",
             "the same with " + std::to_string(2 * options.sa_count) +
                 " other SAs that all have lifetime-seconds 3000,3600 (added in batches after the first were deleted)");
  report.add("daemon_rss_before_bytes", static_cast<double>(rss0), "bytes", "VmRSS before adding");
  report.add("daemon_rss_bytes_per_sa_out", (static_cast<double>(rss_out) - static_cast<double>(rss0)) / n, "bytes",
             "VmRSS growth / N outbound");
  report.add("daemon_rss_bytes_per_sa_in", (static_cast<double>(rss_in) - static_cast<double>(rss_out)) / n, "bytes",
             "VmRSS growth / N inbound");
  report.add("daemon_rss_bytes_per_sa", (static_cast<double>(rss_in) - static_cast<double>(rss0)) / (2 * n), "bytes",
             "VmRSS growth / all " + std::to_string(2 * options.sa_count) + " SAs");
  report.add("daemon_rss_after_delete_bytes", static_cast<double>(rss_del) - static_cast<double>(rss0), "bytes",
             "VmRSS after deleting all " + std::to_string(2 * options.sa_count) +
                 " SAs minus VmRSS before adding them (what the daemon did not give back)");
  report.add("daemon_rss_after_delete_total_bytes", static_cast<double>(rss_del), "bytes", "VmRSS after deleting all");
  report.add("control_sa_count", n, "SAs", "N per direction");
  const std::string total = std::to_string(2 * options.sa_count);
  report.add("state_stop_s_" + total, stop_s, "s",
             "clean stop (SIGTERM to exit: the journal made durable, or a synchronous snapshot when the journal is "
             "larger than the snapshot) with " +
                 total + " SAs, " + state_where);
  report.add("state_stop_journal_bytes", stop_journal_bytes, "bytes",
             "state.journal after that stop (a few bytes: the stop wrote a snapshot; more: it ended the journal)");
  report.add("state_stop_snapshot_bytes", stop_snapshot_bytes, "bytes", "state.json after that stop");
  report.add("state_restore_s_" + total, restore_s, "s",
             "start with " + total +
                 " saved SAs until the control socket answers (restore: snapshot + journal read, "
                 "checked, installed; start-up snapshot in the background), " +
                 state_where + "; daemon log: " + restore_log);
  report.add("state_restore_sa_per_s", restore_s > 0 ? n2 / restore_s : 0, "SAs/s",
             "SAs restored per second of start-up, same run");
  report.add("state_restore_daemon_cpu_s_" + total, restore_cpu, "s",
             "daemon CPU time (all threads) from exec until the socket answers, same restart");
  report.add("state_restored_sas", restored, "SAs", "SAs the restarted daemon holds (expected " + total + ")");
  // Where the start went, from the daemon's own log line (wall ms, CPU ms of the control thread).
  const std::pair<const char*, const char*> phases[] = {
      {"state_restore_snapshot", "snapshot read, parsed and checked in "},
      {"state_restore_install", "installed in "},
      {"state_restore_startup_snapshot_control_thread", "sequence marks journaled; "}};
  for (const auto& [key, marker] : phases) {
    const size_t at = restore_log.find(marker);
    double wall = 0, cpu = 0;
    if (at != std::string::npos)
      std::sscanf(restore_log.c_str() + at + std::strlen(marker), "%lf ms (CPU %lf ms)", &wall, &cpu);
    report.add(std::string(key) + "_ms", wall, "ms",
               "wall, from the restarted daemon's log (" + std::string(marker) + ")");
    report.add(std::string(key) + "_cpu_ms", cpu, "ms", "CPU time of the daemon's control thread for the same");
  }
  report.add("state_restart_stop_s_" + total, restart_stop_s, "s",
             "clean stop of the restarted daemon right after its start (its start-up snapshot, if still being "
             "written, is cancelled when the journals are small enough, else waited for)");
  report.add("state_restart_stop_state_ms", restart_stop_state_ms, "ms",
             "the state's part of that stop (cancelling or waiting for the start-up snapshot, the stop record, the "
             "fold), wall, from its log: " +
                 restart_stop_state_log);
  report.add("state_restart_stop_state_cpu_ms", restart_stop_state_cpu_ms, "ms", "control-thread CPU for the same");
  // The journal replay path (a stop that ended the journal, then the start).
  auto logged = [](const std::string& log, const char* marker, double& wall, double& cpu) {
    wall = cpu = 0;
    const size_t at = log.find(marker);
    if (at != std::string::npos)
      std::sscanf(log.c_str() + at + std::strlen(marker), "%lf ms (CPU %lf ms)", &wall, &cpu);
  };
  double replay_wall = 0, replay_cpu = 0, snap_wall = 0, snap_cpu = 0, install_wall = 0, install_cpu = 0;
  logged(journal_restore_log, ", journal ", replay_wall, replay_cpu);
  logged(journal_restore_log, "snapshot read, parsed and checked in ", snap_wall, snap_cpu);
  logged(journal_restore_log, "installed in ", install_wall, install_cpu);
  double records = 0;
  if (const size_t at = journal_restore_log.find(" journal records"); at != std::string::npos) {
    const size_t from = journal_restore_log.rfind(" and ", at);
    if (from != std::string::npos) records = std::atof(journal_restore_log.c_str() + from + 5);
  }
  report.add("state_journal_stop_s_" + total, journal_stop_s, "s",
             "clean stop that ends the journal (after " + std::to_string(options.sa_count) +
                 " inbound SAs were replaced by new ones, batched), " + state_where);
  report.add("state_journal_stop_journal_bytes", journal_stop_bytes, "bytes", "state.journal after that stop");
  report.add("state_restore_journal_s_" + total, journal_restore_s, "s",
             "start with " + total +
                 " SAs until the control socket answers, from the snapshot plus that journal; "
                 "daemon log: " +
                 journal_restore_log);
  report.add("state_restore_journal_daemon_cpu_s_" + total, journal_restore_cpu, "s",
             "daemon CPU time (all threads) from exec until the socket answers, same restart");
  report.add("state_restore_journal_records", records, "records", "journal records replayed by that start");
  report.add("state_restore_journal_replay_ms", replay_wall, "ms",
             "wall: reading, scanning, replaying, checking the journal");
  report.add("state_restore_journal_replay_cpu_ms", replay_cpu, "ms", "control-thread CPU time for the same");
  report.add("state_restore_journal_ns_per_record", records > 0 ? replay_cpu * 1e6 / records : 0, "ns",
             "replay CPU time per journal record (mapping, scanning, parsing, applying; the final check of the whole "
             "state included)");
  double first_snapshot_wall = 0, first_snapshot_cpu = 0;
  logged(restore_log, "snapshot read, parsed and checked in ", first_snapshot_wall, first_snapshot_cpu);
  report.add("state_restore_snapshot_ns_per_sa", restored > 0 ? first_snapshot_cpu * 1e6 / restored : 0, "ns",
             "the first restart's snapshot CPU time per SA (reading, parsing, checking), to compare with the above");
  report.add("state_restore_journal_snapshot_cpu_ms", snap_cpu, "ms", "control-thread CPU: that start's snapshot");
  report.add("state_restore_journal_install_cpu_ms", install_cpu, "ms", "control-thread CPU: that start's install");
}

}  // namespace ov2::bench
