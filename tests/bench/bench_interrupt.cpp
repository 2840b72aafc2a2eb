// Signals, leftovers and the sweep of ipsecov2-bench; see bench_interrupt.h.
#include "bench_interrupt.h"

#include <dirent.h>
#include <fcntl.h>
#include <glob.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "../e2e/dataplane_harness.h"

namespace ov2::bench {
namespace {

std::atomic<int> g_signals{0};
std::atomic<int> g_first_signal{0};
static_assert(std::atomic<int>::is_always_lock_free, "the signal handler needs a lock-free atomic");
int g_level_pipe[2] = {-1, -1};  // one byte at the first signal, never read: a level for poll
int g_force_pipe[2] = {-1, -1};  // one byte per further signal: wakes the forced-exit thread

void on_signal(int sig) {
  const int saved_errno = errno;
  int none = 0;
  g_first_signal.compare_exchange_strong(none, sig);
  const char byte = 1;
  if (g_signals.fetch_add(1) == 0)
    (void)!write(g_level_pipe[1], &byte, 1);
  else
    (void)!write(g_force_pipe[1], &byte, 1);
  errno = saved_errno;
}

std::mutex g_stage_mutex;
std::string g_stage = "start-up";

std::mutex g_leftovers_mutex;
std::map<uint64_t, std::pair<Leftover::Kind, std::string>> g_leftovers;
uint64_t g_next_leftover = 1;

const char* signal_name(int sig) { return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal"; }

// Kills every process inside namespace `ns` (all of them ours: the bench's
// and the scripts' namespaces are private), then deletes it.
void delete_namespace(const std::string& ns) {
  std::istringstream pids(e2e::sh_out("ip netns pids " + ns + " 2>/dev/null"));
  pid_t pid = 0;
  while (pids >> pid)
    if (pid != getpid()) kill(pid, SIGKILL);
  e2e::sh("ip netns del " + ns + " 2>/dev/null");
}

void remove_path(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

void remove_leftover(Leftover::Kind kind, const std::string& what) {
  switch (kind) {
    case Leftover::Kind::ProcessGroup:
      kill(-static_cast<pid_t>(std::stol(what)), SIGKILL);
      break;
    case Leftover::Kind::Namespace:
      delete_namespace(what);
      break;
    case Leftover::Kind::Path:
      remove_path(what);
      break;
    case Leftover::Kind::PathGlob: {
      glob_t g{};
      if (glob(what.c_str(), 0, nullptr, &g) == 0)
        for (size_t i = 0; i < g.gl_pathc; ++i) remove_path(g.gl_pathv[i]);
      globfree(&g);
      break;
    }
  }
}

// The forced exit after a second signal: best effort, then _exit without
// unwinding (the main thread may be anywhere).
std::atomic<bool> g_forcing{false};

[[noreturn]] void forced_exit() {
  g_forcing.store(true);
  const int sig = g_first_signal.load();
  std::string stage;
  {
    std::lock_guard lock(g_stage_mutex);
    stage = g_stage;
  }
  std::fprintf(stderr, "ipsecov2-bench: second signal during %s: forcing the exit after a best-effort cleanup\n",
               stage.c_str());
  std::vector<std::pair<Leftover::Kind, std::string>> items;
  {
    std::lock_guard lock(g_leftovers_mutex);
    for (const auto& [id, item] : g_leftovers) items.push_back(item);
  }
  // Processes first (they may hold the namespaces and write into the directories).
  std::stable_partition(items.begin(), items.end(),
                        [](const auto& item) { return item.first == Leftover::Kind::ProcessGroup; });
  for (const auto& [kind, what] : items) remove_leftover(kind, what);
  std::fprintf(stderr, "ipsecov2-bench: forced exit (%s)\n", signal_name(sig));
  std::fflush(stderr);
  _exit(128 + (sig ? sig : SIGTERM));
}

// Digits at `name[at...]`: the pid, and where the digits end; pid 0 if none.
std::pair<pid_t, size_t> pid_at(const std::string& name, size_t at) {
  size_t end = at;
  while (end < name.size() && end - at < 9 && std::isdigit(static_cast<unsigned char>(name[end]))) ++end;
  if (end == at) return {0, at};
  return {static_cast<pid_t>(std::stol(name.substr(at, end - at))), end};
}

std::string comm_of(pid_t pid) {
  std::string comm = e2e::read_file("/proc/" + std::to_string(pid) + "/comm");
  while (!comm.empty() && comm.back() == '\n') comm.pop_back();
  return comm;
}

// Why the leftovers of bench pid `pid` are stale, or "" if that bench still runs.
std::string bench_gone(pid_t pid) {
  if (pid == getpid()) return "";
  if (access(("/proc/" + std::to_string(pid)).c_str(), F_OK) != 0)
    return "its bench, pid " + std::to_string(pid) + ", is gone";
  const std::string comm = comm_of(pid);
  if (comm == "ipsecov2-bench") return "";
  return "pid " + std::to_string(pid) + " is now '" + comm + "', not the bench";
}

// The same for a tcp_*.sh script: any live process with its pid is left alone
// (scripts/bench/netns_topology.sh's own topo_reap_stale rule).
std::string script_gone(pid_t pid) {
  if (access(("/proc/" + std::to_string(pid)).c_str(), F_OK) == 0) return "";
  return "its script, pid " + std::to_string(pid) + ", is gone";
}

std::vector<std::string> entries_of(const char* dir) {
  std::vector<std::string> names;
  DIR* d = opendir(dir);
  if (!d) return names;
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') names.emplace_back(e->d_name);
  closedir(d);
  return names;
}

}  // namespace

void install_interrupt_handlers() {
  if (pipe2(g_level_pipe, O_CLOEXEC | O_NONBLOCK) != 0 || pipe2(g_force_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
    throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
  // The forced-exit thread blocks in read().
  const int flags = fcntl(g_force_pipe[0], F_GETFL);
  fcntl(g_force_pipe[0], F_SETFL, flags & ~O_NONBLOCK);
  std::thread([] {
    char byte = 0;
    while (read(g_force_pipe[0], &byte, 1) != 1) {
      if (errno != EINTR) return;
    }
    forced_exit();
  }).detach();
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

int interrupt_signal() { return g_first_signal.load(); }

void wait_if_forced_exit() {
  while (g_forcing.load()) pause();  // its thread _exits
}

int interrupt_fd() { return g_level_pipe[0]; }

void check_interrupt() {
  if (g_signals.load(std::memory_order_relaxed) != 0) throw Interrupted{};
}

void interruptible_sleep(std::chrono::duration<double> d) {
  using clock = std::chrono::steady_clock;
  const auto until = clock::now() + std::chrono::duration_cast<clock::duration>(d);
  for (;;) {
    check_interrupt();
    const auto left = std::chrono::duration<double, std::milli>(until - clock::now()).count();
    if (left <= 0) return;
    pollfd p{interrupt_fd(), POLLIN, 0};
    poll(&p, 1, static_cast<int>(std::ceil(left)));
  }
}

void set_stage(const std::string& stage, bool announce) {
  check_interrupt();  // a signal during the previous stage is reported as that stage
  {
    std::lock_guard lock(g_stage_mutex);
    g_stage = stage;
  }
  if (announce) std::fprintf(stderr, "ipsecov2-bench: %s\n", stage.c_str());
}

std::string current_stage() {
  std::lock_guard lock(g_stage_mutex);
  return g_stage;
}

std::string own_prefix() { return "ov2bench" + std::to_string(getpid()); }

Leftover::Leftover(Kind kind, std::string what) : kind_(kind), what_(std::move(what)) {
  std::lock_guard lock(g_leftovers_mutex);
  id_ = g_next_leftover++;
  g_leftovers.emplace(id_, std::make_pair(kind_, what_));
}

void Leftover::remove_now() const { remove_leftover(kind_, what_); }

Leftover::~Leftover() {
  std::lock_guard lock(g_leftovers_mutex);
  g_leftovers.erase(id_);
}

pid_t fork_child_group() {
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(122);  // the bench died before prctl
    setpgid(0, 0);
    return 0;
  }
  setpgid(pid, pid);  // also here: the parent may signal the group before the child ran
  return pid;
}

namespace {
std::string make_temp_dir(const std::string& parent, const std::string& suffix) {
  std::string tmpl = parent + "/" + own_prefix() + suffix + "XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp " + tmpl + ": " + std::strerror(errno));
  return tmpl;
}
}  // namespace

TempDir::TempDir(const std::string& parent, const std::string& suffix)
    : path_(make_temp_dir(parent, suffix)), leftover_(Leftover::Kind::Path, path_) {}

TempDir::~TempDir() { remove_path(path_); }

void sweep_stale_leftovers(FILE* log) {
  const std::string bench = "ov2bench", script = "ov2b";
  for (const auto& name : entries_of("/run/netns")) {
    std::string why;
    if (name.rfind(bench, 0) == 0) {
      const auto [pid, end] = pid_at(name, bench.size());
      if (pid > 0 && end < name.size() && name[end] == 'p') why = bench_gone(pid);
    } else if (name.rfind(script, 0) == 0) {
      const auto [pid, end] = pid_at(name, script.size());
      if (pid > 0 && end + 1 == name.size() && (name[end] == 'a' || name[end] == 'b')) why = script_gone(pid);
    }
    if (why.empty()) continue;
    delete_namespace(name);
    std::fprintf(log, "ipsecov2-bench: removed the stale namespace %s (%s)\n", name.c_str(), why.c_str());
  }
  for (const char* dir : {"/tmp", "/run"}) {
    for (const auto& name : entries_of(dir)) {
      std::string why;
      if (name.rfind(bench, 0) == 0) {
        const auto [pid, end] = pid_at(name, bench.size());
        if (pid > 0 && end < name.size() && (name[end] == '.' || name[end] == '-')) why = bench_gone(pid);
      } else if (name.rfind(script, 0) == 0 && std::strcmp(dir, "/tmp") == 0) {
        const auto [pid, end] = pid_at(name, script.size());
        if (pid > 0 && end < name.size() && name[end] == '.') why = script_gone(pid);
      }
      if (why.empty()) continue;
      const std::string path = std::string(dir) + "/" + name;
      remove_path(path);
      std::fprintf(log, "ipsecov2-bench: removed the stale %s (%s)\n", path.c_str(), why.c_str());
    }
  }
}

}  // namespace ov2::bench
