// The REAL ipsecov2d (`ipsecov2d --config FILE`) in one network namespace
// with a veth pair as its wire:
//
//  - --engine nic killed with SIGKILL and started again: its kernel XFRM
//    policies are taken over in place (not refused as existing), a tagged
//    entry the saved state no longer has is removed, a policy someone else
//    installed stays, and the daemon serves;
//  - SIGHUP reload of control.group, stats.prometheus_listen and
//    offload_device.mtu, each with a bad new value that is refused and
//    changes nothing.
#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <gtest/gtest.h>
#include <gmock/gmock.h>
#include <sys/stat.h>

#include <algorithm>
#include <regex>
#include <set>

#include "e2e/service_harness.h"
#include "xfrm/xfrm_messages.h"

namespace ov2svc {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// One namespace ov2s<pid><tag> with veth wire0 <-> wire1 (up) and lo up; the
// daemon's files in /tmp/ov2s<pid><tag>.
class OneHost {
 public:
  explicit OneHost(const std::string& tag) {
    ns_ = "ov2s" + std::to_string(getpid()) + tag;
    dir_ = "/tmp/" + ns_;
    cleanup();
    std::filesystem::create_directories(dir_);
    if (run({"/usr/sbin/ip", "netns", "add", ns_}).exit_code != 0) throw std::runtime_error("ip netns add failed");
    ip("link add wire0 type veth peer name wire1");
    ip("link set wire0 up");
    ip("link set wire1 up");
    ip("link set lo up");
  }
  ~OneHost() { cleanup(); }

  void cleanup() {
    daemon.stop();
    run({"/usr/sbin/ip", "netns", "del", ns_});
    std::filesystem::remove_all(dir_);
  }
  Result ip(const std::string& args) {
    std::vector<std::string> argv = {"/usr/sbin/ip", "-n", ns_};
    std::istringstream in(args);
    for (std::string w; in >> w;) argv.push_back(w);
    return run(argv);
  }
  Result sh(const std::string& cmd) { return run({"/usr/sbin/ip", "netns", "exec", ns_, "/bin/bash", "-c", cmd}); }
  std::string config() const { return dir_ + "/ipsecov2d.conf"; }
  std::string socket() const { return dir_ + "/run/ctl.sock"; }
  void write_config(const std::string& extra) {
    write_file(config(), config_text("wire0", socket(), dir_ + "/state", extra));
  }
  void start(std::vector<std::string> extra = {}) { daemon.start(ns_, config(), socket(), dir_ + "/daemon.log", extra); }
  Result ctl(std::vector<std::string> args) { return daemon.ctl(ns_, std::move(args)); }
  // SIGHUP, then wait until the daemon logged one more reload outcome.
  std::string reload() {
    const auto outcomes = [&] {
      const std::string log = daemon.log();
      return count_of(log, "reload of ") + count_of(log, "reload refused");
    };
    const size_t before = outcomes();
    kill(daemon.pid(), SIGHUP);
    for (int i = 0; i < 500 && outcomes() == before; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    const std::string log = daemon.log();
    const size_t at = std::max(log.rfind("reload of "), log.rfind("reload refused") == std::string::npos
                                                            ? size_t{0}
                                                            : log.rfind("reload refused"));
    return log.substr(at, log.find('\n', at) - at);
  }
  // GET /metrics on 127.0.0.1:port inside the namespace; "" if nothing answers.
  std::string metrics(int port) {
    return sh("exec 3<>/dev/tcp/127.0.0.1/" + std::to_string(port) +
              " || exit 1; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; timeout 2 cat <&3")
        .out;
  }
  uint32_t mtu_of(const std::string& dev) {
    const std::string out = ip("link show " + dev).out;
    std::smatch m;
    return std::regex_search(out, m, std::regex(" mtu ([0-9]+) ")) ? static_cast<uint32_t>(std::stoul(m[1])) : 0;
  }
  // The kernel's policies as a set of entries (one `src ...` block each, counters left out).
  std::set<std::string> policies() {
    std::set<std::string> out;
    std::string block;
    std::istringstream in(ip("xfrm policy").out);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("src ", 0) == 0 && !block.empty()) {
        out.insert(block);
        block.clear();
      }
      block += line + "\n";
    }
    if (!block.empty()) out.insert(block);
    return out;
  }
  const std::string& ns() const { return ns_; }
  const std::string& dir() const { return dir_; }

  Daemon daemon;

 private:
  std::string ns_, dir_;
};

// ---------------------------------------------------------------------------
// NIC engine: restart after SIGKILL.

TEST(ServiceNicRestart, AfterSigkillTheRestartTakesItsKernelPoliciesOverRemovesStaleOnesAndLeavesForeignOnes) {
  OneHost host("k");
  host.write_config("");
  host.start({"--engine", "nic"});
  ASSERT_EQ(host.ctl({"policy", "add", "--dir", "out", "--src", "0.0.0.0/0", "--dst", "0.0.0.0/0", "--proto", "udp",
                      "--dport", "500", "--action", "bypass", "--priority", "10"})
                .exit_code,
            0);
  const Result block = host.ctl({"policy", "add", "--dir", "in", "--src", "10.9.0.0/16", "--dst", "10.1.0.0/24",
                                 "--action", "discard", "--priority", "2000"});
  ASSERT_EQ(block.exit_code, 0) << block.err;
  // Somebody else's policy (an IKE daemon's, an admin's) in the same namespace.
  ASSERT_EQ(host.ip("xfrm policy add src 10.7.0.0/24 dst 10.8.0.0/24 dir out priority 5").exit_code, 0);
  const std::set<std::string> expected = host.policies();
  ASSERT_EQ(expected.size(), 3u);

  EXPECT_EQ(host.daemon.stop(SIGKILL), 128 + SIGKILL);
  EXPECT_EQ(host.policies(), expected) << "SIGKILL: nothing removed the daemon's kernel policies";
  // A policy the killed daemon had put in the kernel but not yet in its
  // state file (killed between the two): it carries the daemon's index tag.
  const uint32_t stale = ov2::xfrm::ov2_policy_index(99, ov2::xfrm::XfrmPolicyDir::Out);
  ASSERT_EQ(host.ip("xfrm policy add src 10.1.0.0/24 dst 10.5.0.0/24 dir out priority 50 index " +
                    std::to_string(stale))
                .exit_code,
            0);

  host.start({"--engine", "nic"});  // throws if it does not come up
  const std::string log = host.daemon.log();
  EXPECT_THAT(log, HasSubstr("restored 0 SAs and 2 policies"));
  EXPECT_THAT(log, HasSubstr("removed 1 kernel XFRM policies that a previous ipsecov2d left behind"));
  EXPECT_THAT(log, Not(HasSubstr("refusing the saved state")));
  EXPECT_EQ(host.policies(), expected) << "exactly the restored policies and the foreign one";
  const Result caps = host.ctl({"caps"});
  EXPECT_EQ(caps.exit_code, 0) << caps.err;
  // It listens for the kernel's SA events: a NETLINK_XFRM (6) socket in this namespace
  // joined to XFRMNLGRP_EXPIRE (2) and XFRMNLGRP_SA (3), i.e. group bits 0x2 | 0x4.
  const std::string netlink = host.sh("cat /proc/net/netlink").out;
  EXPECT_TRUE(std::regex_search(netlink, std::regex("\\n[0-9a-f]+ +6 +-?[0-9]+ +00000006 ")))
      << netlink;

  // The restored policies are the daemon's again: `policy del` removes the kernel entry.
  const std::string block_id = block.out.substr(0, block.out.find('\n'));
  ASSERT_EQ(host.ctl({"policy", "del", block_id}).exit_code, 0);
  EXPECT_EQ(host.policies().size(), 2u);
  EXPECT_EQ(host.daemon.stop(), 0);
  const std::set<std::string> left = host.policies();
  ASSERT_EQ(left.size(), 1u) << "a normal stop removes the daemon's own, and only those";
  EXPECT_THAT(*left.begin(), HasSubstr("src 10.7.0.0/24 dst 10.8.0.0/24"));
}

// ---------------------------------------------------------------------------
// Reload.

// Runs ipsecov2ctl caps as uid nobody with primary group `gid`; its exit code.
int caps_as_nobody(const std::string& ns, const std::string& socket, gid_t gid) {
  const pid_t pid = fork();
  if (pid == 0) {
    const int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    dup2(devnull, 2);
    const int nsfd = open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
    if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) != 0) _exit(120);
    // The client binary from a world-readable place (the build tree may not be).
    const std::string copy = "/tmp/" + ns + "-ctl";
    if (setgroups(0, nullptr) != 0 || setgid(gid) != 0 || setuid(65534) != 0) _exit(121);
    execl(copy.c_str(), copy.c_str(), "--socket", socket.c_str(), "caps", static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(ServiceReload, ControlGroupIsAppliedToTheSocketAndItsMembersAndAnUnknownGroupIsRefused) {
  OneHost host("g");
  host.write_config("");
  host.start();
  const std::string copy = "/tmp/" + host.ns() + "-ctl";
  std::filesystem::copy_file(kCtl, copy, std::filesystem::copy_options::overwrite_existing);
  chmod(copy.c_str(), 0755);
  chmod(host.dir().c_str(), 0755);
  const gid_t adm = getgrnam("adm")->gr_gid;
  EXPECT_NE(caps_as_nobody(host.ns(), host.socket(), adm), 0) << "root only before the reload";

  // config_text already has a [control] table: the key goes into it.
  write_file(host.config(), std::regex_replace(read_file(host.config()), std::regex("\\[control\\]\\n"),
                                               "[control]\ngroup = \"adm\"\n", std::regex_constants::format_first_only));
  const std::string applied = host.reload();
  EXPECT_THAT(applied, HasSubstr("applied: control.group")) << host.daemon.log();
  struct stat st {};
  ASSERT_EQ(stat(host.socket().c_str(), &st), 0);
  EXPECT_EQ(st.st_gid, adm);
  EXPECT_EQ(caps_as_nobody(host.ns(), host.socket(), adm), 0) << "members of the new group get in";

  write_file(host.config(), std::regex_replace(read_file(host.config()), std::regex("group = \"adm\""),
                                               "group = \"ov2-no-such-group\""));
  const std::string refused = host.reload();
  EXPECT_THAT(refused, HasSubstr("reload refused, the running configuration stays"));
  EXPECT_THAT(refused, HasSubstr("group 'ov2-no-such-group' does not exist"));
  ASSERT_EQ(stat(host.socket().c_str(), &st), 0);
  EXPECT_EQ(st.st_gid, adm) << "a refused reload changes nothing";
  EXPECT_EQ(caps_as_nobody(host.ns(), host.socket(), adm), 0);
  std::filesystem::remove(copy);
}

TEST(ServiceReload, PrometheusListenerMovesToTheNewAddressAndABadAddressKeepsTheOldOne) {
  OneHost host("p");
  host.write_config("[stats]\nprometheus_listen = \"127.0.0.1:19781\"\n");
  host.start();
  EXPECT_THAT(host.metrics(19781), HasSubstr("200 OK"));

  host.write_config("[stats]\nprometheus_listen = \"127.0.0.1:19782\"\n");
  EXPECT_THAT(host.reload(), HasSubstr("applied: stats.prometheus_listen"));
  EXPECT_THAT(host.metrics(19782), HasSubstr("ipsecov2_"));
  EXPECT_EQ(host.metrics(19781), "") << "the old listener is closed";

  // Another address on the same port: the running listener holds the port and must make room.
  host.write_config("[stats]\nprometheus_listen = \"0.0.0.0:19782\"\n");
  EXPECT_THAT(host.reload(), HasSubstr("applied: stats.prometheus_listen")) << host.daemon.log();
  EXPECT_THAT(host.metrics(19782), HasSubstr("200 OK"));

  // 192.0.2.77 is no address of this host: cannot be bound.
  host.write_config("[stats]\nprometheus_listen = \"192.0.2.77:19783\"\n");
  const std::string refused = host.reload();
  EXPECT_THAT(refused, HasSubstr("reload refused, the running configuration stays"));
  EXPECT_THAT(refused, HasSubstr("cannot listen on stats.prometheus_listen 192.0.2.77:19783"));
  EXPECT_THAT(host.metrics(19782), HasSubstr("200 OK")) << "the old listener still serves";

  host.write_config("");
  EXPECT_THAT(host.reload(), HasSubstr("applied: stats.prometheus_listen"));
  EXPECT_EQ(host.metrics(19782), "") << "empty: no listener";
  EXPECT_EQ(host.ctl({"caps"}).exit_code, 0);
}

TEST(ServiceReload, OffloadDeviceMtuSetsBothEndsAndAnMtuTheDeviceRefusesChangesNothing) {
  OneHost host("m");
  host.write_config("");
  host.start();
  // auto: route MTU 1500 - 105 = 1395; the device MTU is the wire's (1500).
  EXPECT_EQ(host.mtu_of("ov2"), 1500u);
  EXPECT_EQ(host.mtu_of("ov2-nic"), 1500u);

  host.write_config("[offload_device]\nmtu = 1490\n");
  const std::string applied = host.reload();
  EXPECT_THAT(applied, HasSubstr("applied: offload_device.mtu")) << host.daemon.log();
  EXPECT_THAT(host.daemon.log(), HasSubstr("route MTU 1490, device MTU 1514"));
  EXPECT_EQ(host.mtu_of("ov2"), 1514u) << "route MTU + the 24-byte shim";
  EXPECT_EQ(host.mtu_of("ov2-nic"), 1514u);

  // Beyond what a veth with an XDP program takes (one page per frame).
  host.write_config("[offload_device]\nmtu = 9000\n");
  const std::string refused = host.reload();
  EXPECT_THAT(refused, HasSubstr("reload refused, the running configuration stays"));
  EXPECT_THAT(refused, HasSubstr("cannot set the MTU of"));
  EXPECT_EQ(host.mtu_of("ov2"), 1514u) << "a refused reload changes nothing";
  EXPECT_EQ(host.mtu_of("ov2-nic"), 1514u);

  host.write_config("[offload_device]\nmtu = 100\n");  // below 1280: the file itself is refused
  EXPECT_THAT(host.reload(), HasSubstr("reload refused"));
  EXPECT_EQ(host.mtu_of("ov2"), 1514u);

  host.write_config("");  // back to auto
  EXPECT_THAT(host.reload(), HasSubstr("applied: offload_device.mtu"));
  EXPECT_EQ(host.mtu_of("ov2"), 1500u);
  EXPECT_EQ(host.ctl({"caps"}).exit_code, 0);
}

}  // namespace
}  // namespace ov2svc
