// Helpers for the service tests (service_*.cpp): run commands, start the REAL
// ipsecov2d the way the systemd unit does (`ipsecov2d --config FILE`) inside a
// network namespace, and a two-host topology with an ESP tunnel between them
// (like scripts/demo.sh: hosts A and B joined by a bridge in namespace M).
//
// Namespaces are named ov2s<pid><letter>; everything is removed by the
// destructors, also when a test fails; leftovers of a crashed run with the same
// pid are removed first.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "e2e/process_run.h"

namespace ov2svc {

using ov2::e2e::kCtl;
using ov2::e2e::kDaemon;
using ov2::e2e::Result;
using ov2::e2e::run;

// Runs argv (no shell) with these environment variables set; stdout and stderr captured.
inline Result run(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env) {
  return run(argv, "", [&] {
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
  });
}

inline Result sh(const std::string& command) { return run({"/bin/sh", "-c", command}); }

inline std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

inline void write_file(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

inline bool connectable(const std::string& socket_path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_path.c_str(), sizeof addr.sun_path - 1);
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  return ok;
}

inline size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + what.size())) ++n;
  return n;
}

// A started daemon process (ipsecov2d --config FILE [args]) in namespace `ns`.
class Daemon {
 public:
  Daemon() = default;
  ~Daemon() { stop(); }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Starts it with stdout+stderr appended to `log`; `env` is added to its environment.
  void start(const std::string& ns, const std::string& config, const std::string& socket, const std::string& log,
             std::vector<std::string> extra = {}, const std::map<std::string, std::string>& env = {},
             bool wait_for_socket = true) {
    socket_ = socket;
    log_ = log;
    std::vector<std::string> argv = {"/usr/bin/nsenter", "--net=/run/netns/" + ns, kDaemon, "--config", config};
    argv.insert(argv.end(), extra.begin(), extra.end());
    pid_ = fork();
    if (pid_ == 0) {
      const int logfd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
      dup2(logfd, 1);
      dup2(logfd, 2);
      for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());  // nsenter execs the daemon: same pid
      _exit(127);
    }
    if (!wait_for_socket) return;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (std::chrono::steady_clock::now() < deadline) {
      if (connectable(socket_)) return;
      int status;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("ipsecov2d exited at startup: " + read_file(log_));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    throw std::runtime_error("ipsecov2d did not open its socket within 15 s: " + read_file(log_));
  }

  // Sends `sig` and waits up to 10 s (then SIGKILL).  Returns the exit status (128+signal if killed).
  int stop(int sig = SIGTERM) {
    if (pid_ <= 0) return -1;
    kill(pid_, sig);
    int status = 0;
    for (int i = 0; i < 1000; ++i) {
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return 137;
  }

  Result ctl(const std::string& ns, std::vector<std::string> args) const {
    std::vector<std::string> argv = {"/usr/bin/nsenter", "--net=/run/netns/" + ns, kCtl, "--socket", socket_};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv);
  }
  pid_t pid() const { return pid_; }
  std::string log() const { return read_file(log_); }

 private:
  pid_t pid_ = -1;
  std::string socket_, log_;
};

// The daemon's configuration file as the tests write it.
inline std::string config_text(const std::string& wire, const std::string& socket, const std::string& state_dir,
                               const std::string& extra = "", const std::string& log_level = "debug") {
  return "[daemon]\nlog_level = \"" + log_level + "\"\nstate_dir = \"" + state_dir + "\"\n[control]\nsocket = \"" +
         socket + "\"\n[wire]\ninterfaces = [\"" + wire + "\"]\n" + extra;
}

// Two hosts A (10.1.0.1 behind 192.0.2.1) and B (10.2.0.1 behind 192.0.2.2),
// each with its ipsecov2d, joined by a bridge in namespace M, and an
// AES-GCM-128 tunnel between 10.1.0.0/24 and 10.2.0.0/24.
class TwoHosts {
 public:
  explicit TwoHosts(const std::string& tag) {
    prefix_ = "ov2s" + std::to_string(getpid()) + tag;
    a_ = prefix_ + "a";
    b_ = prefix_ + "b";
    m_ = prefix_ + "m";
    dir_ = "/tmp/" + prefix_;
    try {
      build();
    } catch (...) {
      cleanup();
      throw;
    }
  }
  ~TwoHosts() { cleanup(); }

  void cleanup() {
    daemon_a.stop();
    daemon_b.stop();
    for (const auto& ns : {a_, b_, m_}) run({"/usr/sbin/ip", "netns", "del", ns});
    std::filesystem::remove_all(dir_);
  }

  const std::string& ns_a() const { return a_; }
  const std::string& ns_b() const { return b_; }
  const std::string& dir() const { return dir_; }
  std::string state_dir_a() const { return dir_ + "/state-a"; }
  std::string config_a() const { return dir_ + "/a.conf"; }
  std::string log_a() const { return dir_ + "/a.log"; }

  Result in_a(const std::string& command) const { return sh("nsenter --net=/run/netns/" + a_ + " " + command); }
  Result in_b(const std::string& command) const { return sh("nsenter --net=/run/netns/" + b_ + " " + command); }

  void start_a(std::vector<std::string> extra = {}) {
    daemon_a.start(a_, config_a(), dir_ + "/a.sock", log_a(), std::move(extra));
  }
  // Routes into the offload device go with it; the admin (here: the test) adds them back after a restart.
  void route_a() { in_a("ip route replace 10.2.0.0/24 dev ov2 src 10.1.0.1 mtu " + std::to_string(route_mtu_)); }

  // Adds the SAs and policies on both hosts (keys from files in dir_).
  void add_tunnel() {
    add_pair(daemon_a, a_, "192.0.2.1", "192.0.2.2", "0x1001", "0x2001", "10.1.0.0/24", "10.2.0.0/24");
    add_pair(daemon_b, b_, "192.0.2.2", "192.0.2.1", "0x2001", "0x1001", "10.2.0.0/24", "10.1.0.0/24");
    route_a();
    in_b("ip route replace 10.1.0.0/24 dev ov2 src 10.2.0.1 mtu " + std::to_string(route_mtu_));
  }

  // ping from A's 10.1.0.1 to B's 10.2.0.1: true if all `count` replies came.
  bool ping(int count, const std::string& interval = "0.1") const {
    return in_a("ping -q -c " + std::to_string(count) + " -i " + interval + " -W 2 -I 10.1.0.1 10.2.0.1").exit_code ==
           0;
  }

  Daemon daemon_a, daemon_b;

 private:
  void build() {
    for (const auto& ns : {a_, b_, m_}) run({"/usr/sbin/ip", "netns", "del", ns});
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    std::filesystem::permissions(dir_, std::filesystem::perms::owner_all);
    auto must = [](const Result& r, const std::string& what) {
      if (r.exit_code != 0) throw std::runtime_error(what + ": " + r.err);
    };
    for (const auto& ns : {a_, b_, m_}) must(run({"/usr/sbin/ip", "netns", "add", ns}), "ip netns add " + ns);
    must(sh("ip link add wa netns " + a_ + " type veth peer name pa netns " + m_), "veth a");
    must(sh("ip link add wb netns " + b_ + " type veth peer name pb netns " + m_), "veth b");
    const std::string m = "nsenter --net=/run/netns/" + m_ + " ";
    must(sh(m + "ip link add br0 type bridge && " + m + "ip link set pa master br0 && " + m +
            "ip link set pb master br0 && " + m + "ip link set pa up && " + m + "ip link set pb up && " + m +
            "ip link set br0 up"),
         "bridge");
    for (const auto& ns : {a_, b_}) {
      const std::string n = "nsenter --net=/run/netns/" + ns + " ";
      must(sh(n + "ip link set lo up && " + n +
              "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"),
           "lo");
    }
    must(in_a("ip addr add 192.0.2.1/24 dev wa && ip -n " + a_ + " link set wa up && ip -n " + a_ +
              " addr add 10.1.0.1/32 dev lo"),
         "addresses a");
    must(in_b("ip addr add 192.0.2.2/24 dev wb && ip -n " + b_ + " link set wb up && ip -n " + b_ +
              " addr add 10.2.0.1/32 dev lo"),
         "addresses b");
    write_file(dir_ + "/k_ab", "00112233445566778899aabbccddeeff01020304");
    write_file(dir_ + "/k_ba", "ffeeddccbbaa99887766554433221100a0b0c0d0");
    write_file(config_a(), config_text("wa", dir_ + "/a.sock", state_dir_a()));
    write_file(dir_ + "/b.conf", config_text("wb", dir_ + "/b.sock", dir_ + "/state-b"));
    start_a();
    daemon_b.start(b_, dir_ + "/b.conf", dir_ + "/b.sock", dir_ + "/b.log");
  }

  void add_pair(Daemon& d, const std::string& ns, const std::string& me, const std::string& peer,
                const std::string& spi_out, const std::string& spi_in, const std::string& mine,
                const std::string& theirs) {
    const std::string key_out = dir_ + (spi_out == "0x1001" ? "/k_ab" : "/k_ba");
    const std::string key_in = dir_ + (spi_in == "0x1001" ? "/k_ab" : "/k_ba");
    Result out = d.ctl(ns, {"sa", "add", "--dir", "out", "--mode", "tunnel", "--src", me, "--dst", peer, "--spi",
                            spi_out, "--aead", "aes-gcm-128", "--key-file", key_out});
    Result in = d.ctl(ns, {"sa", "add", "--dir", "in", "--mode", "tunnel", "--src", peer, "--dst", me, "--spi", spi_in,
                           "--aead", "aes-gcm-128", "--key-file", key_in});
    if (out.exit_code != 0 || in.exit_code != 0) throw std::runtime_error("sa add: " + out.err + in.err);
    auto trim = [](std::string s) {
      while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
      return s;
    };
    Result p1 = d.ctl(ns, {"policy", "add", "--dir", "out", "--src", mine, "--dst", theirs, "--action", "protect",
                           "--sa", trim(out.out)});
    Result p2 = d.ctl(ns, {"policy", "add", "--dir", "in", "--src", theirs, "--dst", mine, "--action", "protect",
                           "--sa", trim(in.out)});
    if (p1.exit_code != 0 || p2.exit_code != 0) throw std::runtime_error("policy add: " + p1.err + p2.err);
  }

  std::string prefix_, a_, b_, m_, dir_;
  int route_mtu_ = 1500 - 105;  // veth MTU minus the worst-case ESP overhead
};

}  // namespace ov2svc
