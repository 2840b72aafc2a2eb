// Two hosts joined by a wire, for the data-path end-to-end tests (root only).
//
//   ns A (host a)             ns M (the wire)             ns B (host b)
//   lo 10.1.0.1           br0: mida, midb  <- tcpdump     lo 10.2.0.1
//   wire 192.0.2.1 ---------- mida    midb ------------- wire 192.0.2.2
//        fd00:2::1                                             fd00:2::2
//   ov2/ov2-nic + worker                                  ov2/ov2-nic + worker
//
// The capture sits in the middle because neither end can see the ESP: AF_XDP
// TX bypasses packet taps on the sender, and XDP redirects before them on the
// receiver.  Everything is torn down by RAII, also when an assertion fails;
// leftovers of dead test processes (ov2t<pid> with no such pid) are removed.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace ov2::e2e {

// Runs a shell command; returns its exit status (-1 if it did not exit).
// Not std::system: that ignores SIGINT in the caller while the command runs,
// so a ^C (or ipsecov2-bench's handler, which shares this harness) would
// lose it.
inline int sh(const std::string& cmd) {
  const char* argv[] = {"sh", "-c", cmd.c_str(), nullptr};
  pid_t pid = 0;
  if (posix_spawn(&pid, "/bin/sh", nullptr, nullptr, const_cast<char* const*>(argv), environ) != 0) return -1;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Runs a shell command and returns its stdout.
inline std::string sh_out(const std::string& cmd) {
  std::string out;
  FILE* f = popen(cmd.c_str(), "r");
  if (!f) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  pclose(f);
  return out;
}

inline void must(const std::string& cmd) {
  if (sh(cmd) != 0) throw std::runtime_error("setup command failed: " + cmd);
}

// Removes namespaces named ov2t<pid><x> whose test process is gone.
inline void remove_stale_namespaces() {
  DIR* d = opendir("/run/netns");
  if (!d) return;
  std::vector<std::string> stale;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name.rfind("ov2t", 0) != 0) continue;
    size_t i = 4;
    while (i < name.size() && isdigit(static_cast<unsigned char>(name[i]))) ++i;
    if (i == 4) continue;
    pid_t pid = static_cast<pid_t>(std::stol(name.substr(4, i - 4)));
    if (kill(pid, 0) != 0 && errno == ESRCH) stale.push_back(name);
  }
  closedir(d);
  for (const auto& n : stale) sh("ip netns del " + n + " 2>/dev/null");
}

// A network namespace that exists for the lifetime of this object.
class Netns {
 public:
  explicit Netns(std::string name) : name_(std::move(name)) {
    sh("ip netns del " + name_ + " 2>/dev/null");
    must("ip netns add " + name_);
  }
  ~Netns() { sh("ip netns del " + name_ + " 2>/dev/null"); }
  const std::string& name() const { return name_; }
  std::string exec(const std::string& cmd) const { return "ip netns exec " + name_ + " " + cmd; }
  Netns(const Netns&) = delete;
  Netns& operator=(const Netns&) = delete;

 private:
  std::string name_;
};

// Moves the calling thread into a namespace until destroyed.
class InNetns {
 public:
  explicit InNetns(const Netns& ns) {
    self_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    int fd = open(("/run/netns/" + ns.name()).c_str(), O_RDONLY | O_CLOEXEC);
    if (self_ < 0 || fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
      if (fd >= 0) close(fd);
      throw std::runtime_error("cannot enter namespace " + ns.name());
    }
    close(fd);
  }
  ~InNetns() {
    if (setns(self_, CLONE_NEWNET) != 0) std::abort();  // never continue in the wrong namespace
    close(self_);
  }
  InNetns(const InNetns&) = delete;
  InNetns& operator=(const InNetns&) = delete;

 private:
  int self_ = -1;
};

// A background process, killed (SIGINT, then SIGKILL) when destroyed.
class Child {
 public:
  // Runs `cmd` through /bin/sh with stdout+stderr to `log`.
  Child(const std::string& cmd, const std::string& log) {
    pid_ = fork();
    if (pid_ == 0) {
      int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      setpgid(0, 0);
      execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  ~Child() { stop(); }
  // Interrupts the process group and waits (bounded); returns the exit status or -1.
  int stop() {
    if (pid_ <= 0) return status_;
    kill(-pid_, SIGINT);
    kill(pid_, SIGINT);
    for (int i = 0; i < 50; ++i) {
      int st;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        status_ = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        return status_;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    kill(-pid_, SIGKILL);
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
    return status_;
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

 private:
  pid_t pid_ = -1;
  int status_ = -1;
};

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Polls `pred` every 50 ms for up to `ms` milliseconds.
template <typename Pred>
bool wait_for(Pred pred, int ms) {
  for (int t = 0; t < ms; t += 50) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return pred();
}

// A private temporary directory, removed with its files.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/ov2dpXXXXXX";
    if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() { sh("rm -rf '" + path_ + "'"); }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Classic pcap (what tcpdump -w writes): the frames, in order.
inline std::vector<std::string> pcap_frames(const std::string& path) {
  std::string data = read_file(path);
  std::vector<std::string> frames;
  size_t off = 24;
  while (off + 16 <= data.size()) {
    uint32_t incl;
    std::memcpy(&incl, data.data() + off + 8, 4);
    off += 16;
    if (off + incl > data.size()) break;
    frames.push_back(data.substr(off, incl));
    off += incl;
  }
  return frames;
}

}  // namespace ov2::e2e
