#include "xfrm/test_netns.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <thread>

namespace ov2::xfrm::test {

namespace {
constexpr const char* kPrefix = "ov2x";

void remove_dead_leftovers() {
  DIR* d = opendir("/run/netns");
  if (!d) return;
  while (dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    if (n.rfind(kPrefix, 0) != 0) continue;
    const long pid = std::strtol(n.c_str() + 4, nullptr, 10);
    if (pid > 0 && kill(static_cast<pid_t>(pid), 0) != 0) run_command("ip netns del " + n + " 2>/dev/null");
  }
  closedir(d);
}
}  // namespace

CommandResult run_command(const std::string& cmd) {
  CommandResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

TestNetns::TestNetns(const std::string& tag, const std::string& dev, const std::string& peer)
    : name_(std::string(kPrefix) + std::to_string(getpid()) + tag), dev_(dev) {
  remove_dead_leftovers();
  run_command("ip netns del " + name_ + " 2>/dev/null");
  if (run_command("ip netns add " + name_).status != 0) throw std::runtime_error("cannot create netns " + name_);
  const std::string in = "ip -n " + name_ + " ";
  if (run_command(in + "link add " + dev + " type veth peer name " + peer).status != 0 ||
      run_command(in + "link set " + dev + " up").status != 0 ||
      run_command(in + "link set " + peer + " up").status != 0) {
    run_command("ip netns del " + name_);
    throw std::runtime_error("cannot create the veth pair in " + name_);
  }
}

TestNetns::~TestNetns() { run_command("ip netns del " + name_ + " 2>/dev/null"); }

int TestNetns::ifindex(const std::string& ifname) const {
  const CommandResult r = run_command("ip -n " + name_ + " -o link show dev " + ifname);
  if (r.status != 0) return 0;
  return std::atoi(r.out.c_str());  // "3: name@peer: ..."
}

void TestNetns::run_inside(const std::function<void()>& fn) const {
  std::exception_ptr error;
  std::thread t([&] {
    try {
      const int fd = open(path().c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) throw std::runtime_error("cannot enter netns " + name_);
      close(fd);
      fn();
    } catch (...) {
      error = std::current_exception();
    }
  });
  t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace ov2::xfrm::test
