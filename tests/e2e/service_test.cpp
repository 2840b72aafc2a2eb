// The daemon as a system service: the systemd notify protocol (READY only once
// the control socket answers, STATUS, STOPPING, WATCHDOG), state that
// survives a restart and a SIGKILL with a tunnel carrying traffic, a corrupt
// state file, and SIGHUP reload with traffic flowing.  The REAL ipsecov2d,
// started the way the unit starts it (`ipsecov2d --config FILE`), in network
// namespaces ov2s<pid>*; needs root.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>
#include <regex>

#include "e2e/service_harness.h"

namespace {

using namespace ov2svc;
using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

// A NOTIFY_SOCKET as systemd provides it: AF_UNIX datagrams to a path.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    unlink(path.c_str());
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) throw std::runtime_error("bind notify socket");
  }
  ~NotifySocket() {
    close(fd_);
    unlink(path_.c_str());
  }
  // The next message, or "" after `timeout_ms`.
  std::string next(int timeout_ms) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) != 1) return "";
    char buf[4096];
    const ssize_t n = recv(fd_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  }
  // Messages until one contains `what` (returned), or "" after `timeout_ms`; all seen go to `seen`.
  std::string until(const std::string& what, int timeout_ms, std::vector<std::string>* seen = nullptr) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < deadline) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
      std::string m = next(static_cast<int>(std::max<long>(left, 1)));
      if (m.empty()) continue;
      if (seen) seen->push_back(m);
      if (m.find(what) != std::string::npos) return m;
    }
    return "";
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

// One namespace with a veth wire, for single-daemon tests.
class OneHost {
 public:
  OneHost() {
    ns_ = "ov2s" + std::to_string(getpid()) + "x";
    dir_ = "/tmp/" + ns_;
    run({"/usr/sbin/ip", "netns", "del", ns_});
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    if (run({"/usr/sbin/ip", "netns", "add", ns_}).exit_code != 0) throw std::runtime_error("ip netns add");
    run({"/usr/sbin/ip", "-n", ns_, "link", "add", "wire0", "type", "veth", "peer", "name", "wire1"});
    run({"/usr/sbin/ip", "-n", ns_, "link", "set", "wire0", "up"});
    run({"/usr/sbin/ip", "-n", ns_, "link", "set", "wire1", "up"});
    write_file(config(), config_text("wire0", socket(), state_dir()));
  }
  ~OneHost() {
    daemon.stop();
    run({"/usr/sbin/ip", "netns", "del", ns_});
    std::filesystem::remove_all(dir_);
  }
  void start(std::vector<std::string> extra = {}, const std::map<std::string, std::string>& env = {},
             bool wait = true) {
    daemon.start(ns_, config(), socket(), log(), std::move(extra), env, wait);
  }
  Result ctl(std::vector<std::string> args) { return daemon.ctl(ns_, std::move(args)); }
  std::string config() const { return dir_ + "/d.conf"; }
  std::string socket() const { return dir_ + "/run/ctl.sock"; }
  std::string state_dir() const { return dir_ + "/state"; }
  std::string log() const { return dir_ + "/d.log"; }
  const std::string& dir() const { return dir_; }
  const std::string& ns() const { return ns_; }
  Daemon daemon;

 private:
  std::string ns_, dir_;
};

// ---------------------------------------------------------------------------
// sd_notify

TEST(ServiceNotify, ReadyComesOnlyOnceTheSocketAnswersThenStatusWatchdogAndStopping) {
  OneHost host;
  NotifySocket notify(host.dir() + "/notify.sock");
  host.start({}, {{"NOTIFY_SOCKET", notify.path()}, {"WATCHDOG_USEC", "200000"}}, /*wait=*/false);

  std::vector<std::string> before;
  const std::string ready = notify.until("READY=1", 15000, &before);
  ASSERT_FALSE(ready.empty()) << "no READY=1 within 15 s; daemon log:\n" << host.daemon.log();
  // At the moment READY is read the control socket accepts and answers.
  EXPECT_TRUE(connectable(host.socket()));
  Result caps = host.ctl({"caps"});
  EXPECT_EQ(caps.exit_code, 0) << caps.err;
  // READY carries the status line; nothing before it claimed readiness.
  EXPECT_THAT(ready, HasSubstr("STATUS=serving " + host.socket() + ", 0 SAs, 0 policies, engine afxdp, wire wire0"));
  for (size_t i = 0; i + 1 < before.size(); ++i) EXPECT_THAT(before[i], Not(HasSubstr("READY=1")));

  // WATCHDOG=1 every 100 ms (half of 200 ms): at least 5 in 1.2 s.
  int pings = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(1200);
  while (std::chrono::steady_clock::now() < deadline) {
    const std::string m = notify.next(200);
    if (m.find("WATCHDOG=1") != std::string::npos) ++pings;
  }
  EXPECT_GE(pings, 5);
  EXPECT_LE(pings, 20);

  // STATUS follows changes (within about a second).
  write_file(host.dir() + "/k", "00112233445566778899aabbccddeeff01020304");
  Result add = host.ctl({"sa", "add", "--dir", "out", "--mode", "tunnel", "--src", "192.0.2.1", "--dst", "192.0.2.2",
                         "--spi", "0x100", "--aead", "aes-gcm-128", "--key-file", host.dir() + "/k"});
  ASSERT_EQ(add.exit_code, 0) << add.err;
  EXPECT_FALSE(notify.until("STATUS=serving " + host.socket() + ", 1 SAs, 0 policies", 3000).empty());

  kill(host.daemon.pid(), SIGTERM);
  EXPECT_FALSE(notify.until("STOPPING=1", 5000).empty());
  EXPECT_EQ(host.daemon.stop(), 0);
}

TEST(ServiceNotify, SighupIsAnnouncedWithReloadingThenReady) {
  OneHost host;
  NotifySocket notify(host.dir() + "/notify.sock");
  host.start({}, {{"NOTIFY_SOCKET", notify.path()}}, /*wait=*/false);
  ASSERT_FALSE(notify.until("READY=1", 15000).empty()) << host.daemon.log();
  kill(host.daemon.pid(), SIGHUP);
  const std::string reloading = notify.until("RELOADING=1", 5000);
  ASSERT_FALSE(reloading.empty());
  EXPECT_THAT(reloading, HasSubstr("MONOTONIC_USEC="));
  EXPECT_THAT(notify.until("READY=1", 5000), HasSubstr("STATUS=serving " + host.socket()));
  EXPECT_THAT(host.daemon.log(), HasSubstr("reload of " + host.config() + ": applied: nothing"));
}

TEST(ServiceNotify, WithoutWatchdogUsecNoWatchdogPingsAreSent) {
  OneHost host;
  NotifySocket notify(host.dir() + "/notify.sock");
  host.start({}, {{"NOTIFY_SOCKET", notify.path()}}, /*wait=*/false);
  std::vector<std::string> seen;
  ASSERT_FALSE(notify.until("READY=1", 15000, &seen).empty()) << host.daemon.log();
  notify.until("never", 700, &seen);
  for (const auto& m : seen) EXPECT_THAT(m, Not(HasSubstr("WATCHDOG=1")));
}

// ---------------------------------------------------------------------------
// State across restarts

// `sa list --json` / `policy list --json` without counters (which change with traffic).
json listing(TwoHosts& net, const std::string& what) {
  Result r = net.daemon_a.ctl(net.ns_a(), {"--json", what, "list"});
  if (r.exit_code != 0) return json("error: " + r.err);
  json j = json::parse(r.out, nullptr, false);
  const char* member = what == "sa" ? "sas" : "policies";
  if (!j.is_object() || !j.contains(member)) return json("unexpected: " + r.out);
  j = j[member];
  if (j.is_array())
    for (auto& e : j)
      for (const char* k : {"stats", "counters", "packets", "bytes", "next_seq", "highest_seq"}) e.erase(k);
  return j;
}

TEST(ServiceState, RestartWithTunnelUpRestoresSameHandlesAndTrafficResumesWithoutReplayDrops) {
  TwoHosts net("r");
  net.add_tunnel();
  ASSERT_TRUE(net.ping(20, "0.05")) << net.daemon_a.log();
  const json sas = listing(net, "sa");
  const json policies = listing(net, "policy");
  ASSERT_EQ(sas.size(), 2u) << sas.dump();
  ASSERT_EQ(policies.size(), 2u);

  // The state files: keys in hex (in the journal until the next compaction), mode 0600, directory not open to others.
  struct stat st{};
  for (const char* file : {"/state.json", "/state.journal"}) {
    ASSERT_EQ(stat((net.state_dir_a() + file).c_str(), &st), 0) << file;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << file;
  }
  ASSERT_EQ(stat(net.state_dir_a().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0027, 0u);
  EXPECT_THAT(read_file(net.state_dir_a() + "/state.journal"), HasSubstr("00112233445566778899aabbccddeeff01020304"));

  ASSERT_EQ(net.daemon_a.stop(SIGTERM), 0);
  net.start_a();
  EXPECT_EQ(listing(net, "sa"), sas);
  EXPECT_EQ(listing(net, "policy"), policies);
  EXPECT_THAT(net.daemon_a.log(), HasSubstr("restored 2 SAs and 2 policies from " + net.state_dir_a() + "/state.json"));
  net.route_a();
  // B's replay window has seen 1..20 from A: had A's sequence numbers restarted
  // at 1, the first 20 packets after the restart would be dropped as replays.
  EXPECT_TRUE(net.ping(10, "0.05")) << net.daemon_a.log() << net.daemon_b.log();
  // The key never reaches the log.
  EXPECT_THAT(net.daemon_a.log(), Not(HasSubstr("00112233445566778899aabbccddeeff")));

  // New handles continue after the restored ones (never reused).
  Result add = net.daemon_a.ctl(net.ns_a(), {"sa", "add", "--dir", "out", "--mode", "tunnel", "--src", "192.0.2.1",
                                             "--dst", "192.0.2.9", "--spi", "0x3001", "--aead", "aes-gcm-128",
                                             "--key-file", net.dir() + "/k_ab"});
  ASSERT_EQ(add.exit_code, 0) << add.err;
  for (const auto& sa : sas) EXPECT_NE(sa["handle"].get<std::string>() + "\n", add.out);
  EXPECT_GT(std::stoull(add.out, nullptr, 16) >> 24, std::stoull(sas[1]["handle"].get<std::string>(), nullptr, 16) >> 24);
}

TEST(ServiceState, SigkillWithTunnelUpRestartReplacesLeftoversRestoresAndTrafficResumes) {
  TwoHosts net("k");
  net.add_tunnel();
  ASSERT_TRUE(net.ping(10, "0.05"));
  const json sas = listing(net, "sa");
  // What one daemon attaches: counted before the crash, compared after the restart.
  auto attachments = [&] {
    const std::string links = net.in_a("ip -o -d link show").out;
    const std::string wire = net.in_a("ip -d link show dev wa").out;
    const std::string tc_in = net.in_a("tc filter show dev ov2 ingress").out;
    const std::string tc_out = net.in_a("tc filter show dev ov2 egress").out;
    const std::string tc_nic = net.in_a("tc filter show dev ov2-nic ingress").out;
    const std::string nic = net.in_a("ip -d link show dev ov2-nic").out;
    return std::vector<size_t>{count_of(links, ": ov2@"), count_of(links, ": ov2-nic@"), count_of(wire, "xdp"),
                               count_of(tc_in, "bpf"),    count_of(tc_out, "bpf"),     count_of(tc_nic, "bpf"),
                               count_of(nic, "xdp")};
  };
  const std::vector<size_t> before = attachments();
  EXPECT_EQ(before[0], 1u);
  EXPECT_EQ(before[1], 1u);
  EXPECT_GE(before[2], 1u);  // XDP on the wire
  EXPECT_GE(before[3], 1u);  // the TC program on the offload device
  ASSERT_EQ(net.daemon_a.stop(SIGKILL), 128 + SIGKILL);
  // The crash leaves the offload device and its programs behind.
  EXPECT_THAT(net.in_a("ip -o link show").out, HasSubstr("ov2"));

  net.start_a();
  EXPECT_EQ(listing(net, "sa"), sas);
  net.route_a();
  EXPECT_TRUE(net.ping(10, "0.05")) << net.daemon_a.log();
  // No duplicate veth, XDP or TC attachments: the same as one daemon had.
  EXPECT_EQ(attachments(), before) << net.in_a("ip -d link show").out << net.in_a("tc filter show dev ov2 ingress").out;
}

TEST(ServiceState, CorruptStateFileIsRefusedMovedAsideAndTheDaemonStartsEmptyAndServes) {
  struct Case {
    std::string name, content, message;
  };
  const std::vector<Case> cases = {
      {"truncated", "{\"magic\": \"ipsecov2-state\", \"version\": 1, \"sas\": [", "is not valid JSON"},
      {"foreign", "{\"magic\": \"something-else\", \"version\": 1}", "is not an ipsecov2 state file"},
      {"future version", "{\"magic\": \"ipsecov2-state\", \"version\": 7}", "has state file version 7"},
      {"inconsistent",
       "{\"magic\": \"ipsecov2-state\", \"version\": 1, \"next_sa_sequence\": 5, \"next_policy_id\": 3, \"sas\": [], "
       "\"policies\": [{\"id\": 1, \"spec\": {\"dir\": \"out\", \"src\": \"10.1.0.0/24\", \"dst\": \"10.2.0.0/24\", "
       "\"action\": \"protect\", \"sa\": \"0x1000000\"}}]}",
       "policy #1 (id 1) protects with SA 0x1000000, which is not in the file"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    OneHost host;
    std::filesystem::create_directories(host.state_dir());
    write_file(host.state_dir() + "/state.json", c.content);
    host.start();
    const std::string log = host.daemon.log();
    EXPECT_THAT(log, HasSubstr("refusing the saved state: " + host.state_dir() + "/state.json: " + c.message));
    EXPECT_THAT(log, HasSubstr("moved aside to " + host.state_dir() + "/state.json.bad-"));
    EXPECT_THAT(log, HasSubstr("starting empty"));
    bool aside = false;
    for (const auto& e : std::filesystem::directory_iterator(host.state_dir()))
      if (e.path().filename().string().rfind("state.json.bad-", 0) == 0)
        aside = read_file(e.path().string()) == c.content;
    EXPECT_TRUE(aside);
    Result list = host.ctl({"--json", "sa", "list"});
    EXPECT_EQ(list.exit_code, 0) << list.err;
    EXPECT_EQ(json::parse(list.out, nullptr, false), json({{"sas", json::array()}}));
    EXPECT_EQ(host.ctl({"caps"}).exit_code, 0);
  }
}

TEST(ServiceState, NoRestoreStartsEmptyAndOverwritesTheSavedState) {
  OneHost host;
  host.start();
  write_file(host.dir() + "/k", "00112233445566778899aabbccddeeff01020304");
  ASSERT_EQ(host.ctl({"sa", "add", "--dir", "out", "--mode", "tunnel", "--src", "192.0.2.1", "--dst", "192.0.2.2",
                      "--spi", "0x100", "--aead", "aes-gcm-128", "--key-file", host.dir() + "/k"})
                .exit_code,
            0);
  ASSERT_EQ(host.daemon.stop(), 0);
  host.start({"--no-restore"});
  EXPECT_EQ(json::parse(host.ctl({"--json", "sa", "list"}).out, nullptr, false), json({{"sas", json::array()}}));
  EXPECT_THAT(read_file(host.state_dir() + "/state.json"), Not(HasSubstr("0011223344")));
}

TEST(ServiceState, ASecondDaemonOnTheSameStateDirectoryIsRefusedBeforeTouchingTheFirst) {
  OneHost host;
  host.start();
  const std::string ov2_before = run({"/usr/sbin/ip", "-n", host.ns(), "-o", "link", "show", "dev", "ov2"}).out;
  ASSERT_THAT(ov2_before, HasSubstr("ov2"));
  write_file(host.dir() + "/second.conf", config_text("wire1", host.dir() + "/second.sock", host.state_dir()));
  const Result second = run({"/usr/bin/nsenter", "--net=/run/netns/" + host.ns(), kDaemon, "--config",
                             host.dir() + "/second.conf"});
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_THAT(second.err, HasSubstr("another ipsecov2d uses the state directory " + host.state_dir()));
  // The first daemon's offload device is the same one (not replaced) and it still serves.
  EXPECT_EQ(run({"/usr/sbin/ip", "-n", host.ns(), "-o", "link", "show", "dev", "ov2"}).out, ov2_before);
  EXPECT_EQ(host.ctl({"caps"}).exit_code, 0);
}

TEST(ServiceState, ADaemonWithItsOwnSocketAndNoStateDirectoryKeepsNoStateAndSharesNone) {
  OneHost host;
  // No state_dir in the file: the default /run/ipsecov2 belongs to the default socket's daemon.
  write_file(host.config(), "[control]\nsocket = \"" + host.socket() + "\"\n[wire]\ninterfaces = [\"wire0\"]\n");
  host.start();
  EXPECT_THAT(host.daemon.log(), HasSubstr("SAs and policies are not kept across restarts: --socket " + host.socket() +
                                           " is not the default one and no state directory was given"));
  EXPECT_FALSE(std::filesystem::exists(host.state_dir()));
}

// ---------------------------------------------------------------------------
// SIGHUP reload

// ov2_verdict's `verdict_mark` as the kernel has it now: the daemon's ".data"
// maps (found through /proc/<pid>/fdinfo map ids) dumped with bpftool; -1 if not found.
long verdict_mark_of(pid_t pid) {
  for (const auto& entry : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fdinfo")) {
    std::ifstream f(entry.path());
    std::string line;
    while (std::getline(f, line)) {
      if (line.rfind("map_id:", 0) != 0) continue;
      Result dump = run({"/usr/sbin/bpftool", "-j", "map", "dump", "id", line.substr(8)});
      if (dump.out.find("verdict_mark") == std::string::npos) continue;
      const std::regex value("\"verdict_mark\":\\s*([0-9]+)");
      std::smatch m;
      if (std::regex_search(dump.out, m, value)) return std::stol(m[1]);
    }
  }
  return -1;
}

TEST(ServiceReload, SighupAppliesMarkAndLogLevelWithoutLossAndNamesWhatNeedsARestart) {
  TwoHosts net("h");
  net.add_tunnel();
  ASSERT_TRUE(net.ping(3));
  ASSERT_EQ(verdict_mark_of(net.daemon_a.pid()), 0);
  // Continuous ping at 20/s for the whole reload sequence.
  std::thread pinger;
  Result ping_result;
  pinger = std::thread([&] { ping_result = net.in_a("ping -c 60 -i 0.05 -W 2 -I 10.1.0.1 10.2.0.1"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));

  write_file(net.config_a(), config_text("wa", net.dir() + "/a.sock", net.state_dir_a(),
                                         "[verdict]\nmark = 0x2a\n[worker]\nqueues = 2\n", "info"));
  kill(net.daemon_a.pid(), SIGHUP);
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  // A bad file: refused with file:line, the running configuration stays.
  write_file(net.config_a(), config_text("wa", net.dir() + "/a.sock", net.state_dir_a(), "[verdict]\nmark = \"x\n"));
  kill(net.daemon_a.pid(), SIGHUP);
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  pinger.join();

  EXPECT_EQ(ping_result.exit_code, 0) << ping_result.out;
  EXPECT_THAT(ping_result.out, HasSubstr(" 0% packet loss")) << ping_result.out;
  const std::string log = net.daemon_a.log();
  EXPECT_THAT(log, HasSubstr("reload of " + net.config_a() +
                             ": applied: daemon.log_level, verdict.mark; needs a restart: worker.queues"));
  EXPECT_THAT(log, HasSubstr("reload refused, the running configuration stays: " + net.config_a() + ":"));
  EXPECT_TRUE(std::regex_search(log, std::regex("reload refused.*" + net.config_a() + ":[0-9]+:")));
  EXPECT_EQ(verdict_mark_of(net.daemon_a.pid()), 0x2a);  // applied, and the bad file changed nothing
  EXPECT_EQ(net.daemon_a.ctl(net.ns_a(), {"caps"}).exit_code, 0);
  EXPECT_TRUE(net.ping(3));
}

}  // namespace
