// The "tcp" group: iperf3 TCP throughput through ipsecov2, the plain veth and
// strongSwan, each measured by its script in scripts/bench/ in the same run.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench_common.h"

namespace ov2::bench {
namespace {

struct ScriptResult {
  std::optional<double> gbps;  // the "KEY VALUE" line, if the script succeeded
  std::string why;             // the script's last ERROR line otherwise
};

// How long a script may take for its own cleanup (stopping daemons, charon,
// iperf3, deleting its namespaces) once it was passed a signal.
constexpr auto kScriptCleanup = std::chrono::seconds(60);

// One run of a script (scripts/bench/netns_topology.sh) in a process group of
// its own (fork_child_group: it gets SIGTERM if the bench dies).  Its
// namespaces are ov2b<pid>a|b and its work directory /tmp/ov2b<pid>.*: a
// forced exit, or a script that does not end after a signal, has the group
// killed and those removed.
class Script {
 public:
  // stdout into the file `out`, stderr into `log` (both exist); BUILD_DIR set.
  Script(const std::string& path, unsigned seconds, const std::string& build_dir, const std::string& out,
         const std::string& log) {
    std::vector<std::string> args = {path, std::to_string(seconds)}, env;
    for (char** e = environ; *e != nullptr; ++e)
      if (std::string(*e).rfind("BUILD_DIR=", 0) != 0) env.emplace_back(*e);
    env.push_back("BUILD_DIR=" + build_dir);
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    for (auto& e : env) envp.push_back(e.data());
    argv.push_back(nullptr);
    envp.push_back(nullptr);
    pid_ = fork_child_group();
    if (pid_ == 0) {
      // Files, not a pipe: the script is done when it exits, even if a process
      // it left behind still held its stdout.
      const int in = open("/dev/null", O_RDONLY);
      const int o = open(out.c_str(), O_WRONLY | O_TRUNC);
      const int l = open(log.c_str(), O_WRONLY | O_TRUNC);
      if (in < 0 || o < 0 || l < 0) _exit(126);
      dup2(in, STDIN_FILENO);
      dup2(o, STDOUT_FILENO);
      dup2(l, STDERR_FILENO);
      execve(path.c_str(), argv.data(), envp.data());
      _exit(127);
    }
    const std::string p = std::to_string(pid_);
    using K = Leftover::Kind;
    for (auto [kind, what] :
         {std::pair{K::ProcessGroup, p}, std::pair{K::Namespace, "ov2b" + p + "a"},
          std::pair{K::Namespace, "ov2b" + p + "b"}, std::pair{K::PathGlob, "/tmp/ov2b" + p + ".*"}})
      leftovers_.push_back(std::make_unique<Leftover>(kind, what));
  }
  ~Script() {
    if (pid_ > 0) stop(SIGTERM);
  }
  Script(const Script&) = delete;
  Script& operator=(const Script&) = delete;

  // Waits for the script and returns its wait status.  On a signal, passes
  // it on (the script's trap cleans up and exits), waits for that and throws
  // Interrupted.
  int wait() {
    for (;;) {
      if (const auto status = reap()) return *status;
      pollfd p{interrupt_fd(), POLLIN, 0};
      poll(&p, 1, 100);
      if (interrupt_signal() != 0) {
        stop(interrupt_signal());
        throw Interrupted{};
      }
    }
  }

 private:
  // Passes `sig` on and waits for the script's cleanup (bounded).
  void stop(int sig) {
    kill(pid_, sig);
    const auto until = std::chrono::steady_clock::now() + kScriptCleanup;
    while (std::chrono::steady_clock::now() < until) {
      if (reap()) return;
      poll(nullptr, 0, 100);
    }
    std::fprintf(stderr, "ipsecov2-bench: the script (pid %d) did not end within %lld s of the signal; killing it\n",
                 static_cast<int>(pid_), static_cast<long long>(kScriptCleanup.count()));
    for (const auto& l : leftovers_) l->remove_now();  // the group first
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
    leftovers_.clear();
  }

  // The script's wait status once it has exited; what it left running in its
  // process group is killed first (before the script is reaped, so that its
  // pid, the group's id, cannot be reused meanwhile).
  std::optional<int> reap() {
    siginfo_t info{};
    if (waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid != pid_)
      return std::nullopt;
    kill(-pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    leftovers_.clear();
    return status;
  }

  pid_t pid_ = -1;
  std::vector<std::unique_ptr<Leftover>> leftovers_;
};

// Runs `script SECONDS`, its stderr copied to ours (and kept), and reads the
// "KEY VALUE" line from its stdout.
ScriptResult run_script(const std::string& script, const std::string& key, unsigned seconds,
                        const std::string& build_dir) {
  const TempDir files("/tmp", "-tcp.");
  const std::string out = files.path() + "/out", log = files.path() + "/log";
  std::ofstream(out).flush();
  std::ofstream(log).flush();
  set_stage("tcp: " + script + " " + std::to_string(seconds));
  std::fprintf(stderr, "ipsecov2-bench: running %s %u\n", script.c_str(), seconds);
  int status = 0;
  try {
    Script run(script, seconds, build_dir, out, log);
    status = run.wait();
  } catch (const Interrupted&) {
    std::ifstream lines(log);
    for (std::string line; std::getline(lines, line);) std::fprintf(stderr, "  %s\n", line.c_str());
    throw;
  }
  ScriptResult result;
  {
    std::ifstream lines(out);
    std::string k;
    double v = 0;
    while (lines >> k >> v)
      if (k == key && WIFEXITED(status) && WEXITSTATUS(status) == 0) result.gbps = v;
  }
  std::ifstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    std::fprintf(stderr, "  %s\n", line.c_str());
    if (line.find("ERROR") != std::string::npos) result.why = line;
  }
  if (!result.gbps && result.why.empty()) result.why = script + " failed without an ERROR line";
  return result;
}

}  // namespace

void run_tcp_benchmarks(Report& report, const std::string& scripts_dir, const std::string& build_dir,
                        unsigned seconds) {
  const std::string note = "iperf3 TCP " + std::to_string(seconds) + " s, receiver";
  const auto ov2 = run_script(scripts_dir + "/tcp_ov2.sh", "tcp_gbps_ov2", seconds, build_dir);
  const auto plain = run_script(scripts_dir + "/tcp_plain.sh", "tcp_gbps_plain", seconds, build_dir);
  const auto swan = run_script(scripts_dir + "/tcp_strongswan.sh", "tcp_gbps_strongswan", seconds, build_dir);
  if (ov2.gbps) report.add("tcp_gbps_ov2", *ov2.gbps, "Gbit/s", note + ", ipsecov2 AES-GCM-128 tunnel");
  else report.add_note("tcp_gbps_ov2", ov2.why);
  if (plain.gbps) report.add("tcp_gbps_plain", *plain.gbps, "Gbit/s", note + ", plain veth");
  else report.add_note("tcp_gbps_plain", plain.why);
  if (swan.gbps) report.add("tcp_gbps_strongswan", *swan.gbps, "Gbit/s", note + ", strongSwan kernel-libipsec");
  else report.add_note("tcp_gbps_strongswan", swan.why);
  if (ov2.gbps && swan.gbps && *swan.gbps > 0)
    report.add("tcp_ratio_vs_strongswan", *ov2.gbps / *swan.gbps, "ratio", "ov2 / strongswan");
  else
    report.add_note("tcp_ratio_vs_strongswan", "needs both tcp_gbps_ov2 and tcp_gbps_strongswan");
}

}  // namespace ov2::bench
