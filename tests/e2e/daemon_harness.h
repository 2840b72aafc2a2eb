// The real ipsecov2d in its own network namespace (a veth pair as the wire),
// driven by the real ipsecov2ctl as a subprocess: the harness the daemon
// end-to-end tests share (control, security).  Needs root.
#pragma once

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "e2e/process_run.h"
#include "ov2_abi.h"

namespace ov2::daemon_test {

using e2e::kCtl;
using e2e::kDaemon;
using e2e::read_fd;
using e2e::Result;
using e2e::run;

inline std::string temp_file(const std::string& dir, const std::string& name, const std::string& content) {
  const std::string path = dir + "/" + name;
  std::ofstream(path) << content;
  return path;
}

// An fd of the BPF map with this name and sizes that process `pid` holds, or -1.
inline int bpf_map_fd_of(pid_t pid, const std::string& name, uint32_t key_size, uint32_t value_size) {
  for (const auto& entry : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fdinfo")) {
    std::ifstream f(entry.path());
    std::string line;
    while (std::getline(f, line)) {
      if (line.rfind("map_id:", 0) != 0) continue;
      const uint32_t id = static_cast<uint32_t>(std::stoul(line.substr(7)));
      const int fd = bpf_map_get_fd_by_id(id);
      if (fd < 0) continue;
      bpf_map_info info{};
      uint32_t len = sizeof info;
      if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && std::string(info.name) == name && info.key_size == key_size &&
          info.value_size == value_size)
        return fd;
      close(fd);
    }
  }
  return -1;
}

// One daemon in its own network namespace with a veth pair as the wire.
class DaemonInNamespace {
 public:
  explicit DaemonInNamespace(char letter, std::vector<std::string> extra_args = {}) {
    try {
      start(letter, std::move(extra_args));
    } catch (...) {
      cleanup();  // the destructor does not run for a half-built object
      throw;
    }
  }

  ~DaemonInNamespace() { cleanup(); }

  void cleanup() {
    stop();
    if (netns_created_) run({"/usr/sbin/ip", "netns", "del", ns_});
    netns_created_ = false;
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

 private:
  void start(char letter, std::vector<std::string> extra_args) {
    ns_ = "ov2t" + std::to_string(getpid()) + letter;
    dir_ = "/tmp/" + ns_;
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_ + "/keys");
    socket_ = dir_ + "/run/ctl.sock";  // run/ is created by the daemon (0750)
    log_ = dir_ + "/daemon.log";
    run({"/usr/sbin/ip", "netns", "del", ns_});  // leftover of a crashed run with the same pid
    if (run({"/usr/sbin/ip", "netns", "add", ns_}).exit_code != 0) throw std::runtime_error("ip netns add failed");
    netns_created_ = true;
    run({"/usr/sbin/ip", "-n", ns_, "link", "add", "wire0", "type", "veth", "peer", "name", "wire1"});
    run({"/usr/sbin/ip", "-n", ns_, "link", "set", "wire0", "up"});
    run({"/usr/sbin/ip", "-n", ns_, "link", "set", "wire1", "up"});

    std::vector<std::string> argv = {"/usr/sbin/ip", "netns",    "exec",  ns_,           kDaemon, "--wire",
                                     "wire0",        "--socket", socket_, "--log-level", "debug"};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    pid_ = fork();
    if (pid_ == 0) {
      const int logfd = open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      dup2(logfd, 1);
      dup2(logfd, 2);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());  // ip execs the daemon: same pid
      _exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      if (connectable()) return;
      int status;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("ipsecov2d exited at startup: " + log());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    throw std::runtime_error("ipsecov2d did not open its socket within 10 s: " + log());
  }

 public:
  // SIGTERM, wait up to 5 s (then SIGKILL).  Returns the exit status.
  int stop() {
    if (pid_ <= 0) return exit_status_;
    kill(pid_, SIGTERM);
    int status = 0;
    for (int i = 0; i < 500; ++i) {
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return exit_status_;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
    pid_ = -1;
    exit_status_ = 137;
    return exit_status_;
  }

  bool connectable() const {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_.c_str(), sizeof addr.sun_path - 1);
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    close(fd);
    return ok;
  }

  // ipsecov2ctl --socket S ARGS...  With `in_child` (e.g. dropping to nobody)
  // the client runs from a copy in the test's own world-readable directory:
  // the build tree may sit below a directory only root can enter.
  Result ctl(std::vector<std::string> args, const std::string& input = "", const std::function<void()>& in_child = {}) {
    std::string binary = kCtl;
    if (in_child) {
      binary = dir_ + "/bin/ipsecov2ctl";
      if (!std::filesystem::exists(binary)) {
        std::filesystem::create_directories(dir_ + "/bin");
        std::filesystem::copy_file(kCtl, binary);
        chmod((dir_ + "/bin").c_str(), 0755);
        chmod(binary.c_str(), 0755);
      }
    }
    std::vector<std::string> argv = {binary, "--socket", socket_};
    argv.insert(argv.end(), args.begin(), args.end());
    Result r = run(argv, input, in_child);
    transcript_ += r.out + r.err;
    return r;
  }

  std::string key_file(const std::string& name, const std::string& hex) { return temp_file(dir_ + "/keys", name, hex); }
  std::string log() const {
    std::ifstream f(log_);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  }
  const std::string& socket_path() const { return socket_; }
  const std::string& netns() const { return ns_; }
  const std::string& transcript() const { return transcript_; }
  pid_t pid() const { return pid_; }

  // The fd of this daemon's sa_map (found through its fdinfo), or -1.
  int sa_map_fd() const { return map_fd("sa_map", sizeof(ov2_sa_key), sizeof(ov2_sa_value)); }

  // The fd of this daemon's map with this name and sizes, or -1.
  int map_fd(const std::string& name, uint32_t key_size, uint32_t value_size) const {
    return bpf_map_fd_of(pid_, name, key_size, value_size);
  }

  std::vector<uint32_t> map_ids() const {
    std::vector<uint32_t> ids;
    for (const auto& entry : std::filesystem::directory_iterator("/proc/" + std::to_string(pid_) + "/fdinfo")) {
      std::ifstream f(entry.path());
      std::string line;
      while (std::getline(f, line))
        if (line.rfind("map_id:", 0) == 0) ids.push_back(static_cast<uint32_t>(std::stoul(line.substr(7))));
    }
    return ids;
  }

 private:
  std::string ns_, dir_, socket_, log_, transcript_;
  pid_t pid_ = -1;
  int exit_status_ = -1;
  bool netns_created_ = false;
};

}  // namespace ov2::daemon_test
