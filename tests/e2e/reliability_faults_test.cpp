// Faults injected under traffic into real ipsecov2d daemons (two hosts in
// network namespaces, a sequence-numbered UDP stream between them): the wire
// link going down and up, the offload device deleted from outside, and a
// locked-memory limit too small for the UMEM at start.  For each: what was
// lost, what the daemon said, and that nothing leaked (file descriptors, XDP
// attachments, devices, socket files).  SIGKILL and restart are in
// service_test.cpp.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <iostream>

#include "e2e/reliability_harness.h"
#include "e2e/service_harness.h"

namespace {

using namespace ov2svc;
using namespace ov2::reliability;
using nlohmann::json;
using ::testing::HasSubstr;

size_t fd_count(pid_t pid) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd"))
    ++n;
  return n;
}

// How many XDP programs are attached to `dev` in namespace `ns` (0 or 1 on this kernel).
int xdp_attachments(const std::string& ns, const std::string& dev) {
  const Result r = sh("ip -n " + ns + " -d link show " + dev + " 2>/dev/null | grep -c 'prog/xdp'");
  return r.out.empty() ? 0 : std::stoi(r.out);
}

bool link_exists(const std::string& ns, const std::string& dev) {
  return sh("ip -n " + ns + " link show " + dev + " >/dev/null 2>&1").exit_code == 0;
}

// The process has exited (a zombie waiting for its parent) or is gone.
bool exited(pid_t pid) {
  const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  if (stat.empty()) return true;
  const size_t close_paren = stat.rfind(')');
  return close_paren != std::string::npos && close_paren + 2 < stat.size() && stat[close_paren + 2] == 'Z';
}

// The highest sequence number among the missing ranges "a-b,c-d" (0 if none).
uint64_t last_missing(const std::string& missing) {
  const size_t dash = missing.rfind('-');
  return dash == std::string::npos ? 0 : std::stoull(missing.substr(dash + 1));
}

bool wait_for_events(MonitorTap& m, const std::string& name) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (m.events(name).empty() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  return !m.events(name).empty();
}

TEST(Faults, WireLinkDownAndUpUnderTrafficLosesOnlyTheDownTimeAndLeaksNothing) {
  constexpr uint32_t kPps = 2000;
  TwoHosts net("w");
  net.add_tunnel();
  ASSERT_TRUE(net.ping(3, "0.1")) << net.daemon_a.log();
  const pid_t pid_a = net.daemon_a.pid();
  const size_t fds_before = fd_count(pid_a);
  ASSERT_EQ(xdp_attachments(net.ns_a(), "wa"), 1);
  MonitorTap monitor(net.dir() + "/a.sock");

  SeqStream ab(net.ns_a(), "10.1.0.1", net.ns_b(), "10.2.0.1", 7101, kPps);
  ab.start();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  ASSERT_EQ(net.in_a("ip link set wa down").exit_code, 0);
  const uint64_t sent_at_down = ab.sent();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  ASSERT_EQ(net.in_a("ip link set wa up").exit_code, 0);
  const uint64_t sent_at_up = ab.sent();
  std::this_thread::sleep_for(std::chrono::seconds(3));
  ab.stop_sending();
  ab.stop_receiving();
  const StreamResult r = ab.result();
  TunnelEnd b(net.dir() + "/b.sock", "192.0.2.2", "192.0.2.1");  // (an idle control connection times out after 5 s)
  const uint64_t b_in = b.sa_stats(b.in_sa)["packets"].get<uint64_t>();
  std::cout << "wire down 1 s under " << kPps << " datagrams/s: " << r.text() << "; down at #" << sent_at_down
            << ", up at #" << sent_at_up << "\n";

  // What was lost lies in the down time (and the neighbour re-resolution right after it); after that, nothing.
  EXPECT_LE(r.lost(), sent_at_up - sent_at_down + kPps / 2);
  EXPECT_LT(last_missing(r.missing), sent_at_up + kPps / 2) << "losses long after the link came back";
  EXPECT_GT(r.unique, sent_at_down + (r.sent - sent_at_up) / 2);
  EXPECT_EQ(r.duplicates, 0u);
  EXPECT_EQ(r.send_errors, 0u);
  // Every datagram that arrived was decrypted by the SA (the 3 pings too).
  EXPECT_EQ(b_in, r.unique + 3);
  // The daemon noticed, said so, and kept everything it had: no leaked or lost fds, one XDP program.
  EXPECT_TRUE(wait_for_events(monitor, "wire-up"));
  EXPECT_EQ(monitor.events("wire-down").size(), 1u);
  EXPECT_EQ(monitor.events("wire-up").size(), 1u);
  EXPECT_THAT(net.daemon_a.log(), HasSubstr("the wire wa is down"));
  EXPECT_THAT(net.daemon_a.log(), HasSubstr("the wire wa is up"));
  EXPECT_FALSE(exited(pid_a));
  EXPECT_EQ(fd_count(pid_a), fds_before + 1) << "one more: the monitor connection";
  EXPECT_EQ(xdp_attachments(net.ns_a(), "wa"), 1);
  EXPECT_TRUE(net.ping(3, "0.1"));
}

TEST(Faults, OffloadDeviceDeletedFromOutsideStopsTheDaemonCleanlyAndARestartRecovers) {
  TwoHosts net("d");
  net.add_tunnel();
  ASSERT_TRUE(net.ping(3, "0.1")) << net.daemon_a.log();
  const pid_t pid_a = net.daemon_a.pid();
  auto monitor = std::make_unique<MonitorTap>(net.dir() + "/a.sock");

  ASSERT_EQ(net.in_a("ip link del ov2").exit_code, 0);
  const auto t0 = std::chrono::steady_clock::now();
  while (!exited(pid_a) && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5))
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(exited(pid_a)) << "ipsecov2d did not notice: " << net.daemon_a.log();
  const int status = net.daemon_a.stop(0);  // reaps it; signal 0 sends nothing
  const std::string log = net.daemon_a.log();
  std::cout << "daemon A after `ip link del ov2`: exit status " << status << "\n";
  EXPECT_EQ(status, 1);
  EXPECT_THAT(log, HasSubstr("the offload device ov2 was deleted from outside ipsecov2d"));
  EXPECT_THAT(log, HasSubstr("restore the SAs and policies"));
  EXPECT_EQ(monitor->events("device-deleted").size(), 1u);
  monitor.reset();
  // Nothing left behind: no half of the pair, no program on the wire, no socket file.
  EXPECT_FALSE(link_exists(net.ns_a(), "ov2-nic"));
  EXPECT_EQ(xdp_attachments(net.ns_a(), "wa"), 0);
  EXPECT_FALSE(std::filesystem::exists(net.dir() + "/a.sock"));

  // What a supervisor does (systemd: Restart=on-failure): start it again.  The
  // device is recreated, SAs and policies come back from the state directory.
  net.start_a();
  net.route_a();
  EXPECT_TRUE(net.ping(5, "0.1")) << net.daemon_a.log();
  EXPECT_TRUE(link_exists(net.ns_a(), "ov2"));
  EXPECT_EQ(xdp_attachments(net.ns_a(), "wa"), 1);
}

TEST(Faults, LockedMemoryLimitTooSmallForTheUmemIsRefusedNamingTheLimitAndLeavesNothing) {
  const std::string ns = "ov2s" + std::to_string(getpid()) + "l";
  const std::string dir = "/tmp/" + ns;
  run({"/usr/sbin/ip", "netns", "del", ns});
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  ASSERT_EQ(run({"/usr/sbin/ip", "netns", "add", ns}).exit_code, 0);
  struct Cleanup {
    std::string ns, dir;
    ~Cleanup() {
      run({"/usr/sbin/ip", "netns", "del", ns});
      std::filesystem::remove_all(dir);
    }
  } cleanup{ns, dir};
  ASSERT_EQ(sh("ip -n " + ns + " link add wire0 type veth peer name wire1 && ip -n " + ns +
               " link set wire0 up && ip -n " + ns + " link set wire1 up")
                .exit_code,
            0);
  const std::string socket = dir + "/ctl.sock";
  // Without CAP_IPC_LOCK the kernel charges the UMEM to RLIMIT_MEMLOCK: 64 KiB is far too small.
  const Result r = sh("timeout 30 capsh --drop=cap_ipc_lock -- -c 'prlimit --memlock=65536 nsenter --net=/run/netns/" +
                      ns + " " + kDaemon + " --wire wire0 --socket " + socket + "'");
  std::cout << "daemon under a 64 KiB memlock limit: exit " << r.exit_code << "\n" << r.err;
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("RLIMIT_MEMLOCK 64 KiB"));
  EXPECT_THAT(r.err, HasSubstr("LimitMEMLOCK=infinity"));
  EXPECT_THAT(r.err, HasSubstr("CAP_IPC_LOCK"));
  EXPECT_THAT(r.err, HasSubstr("[worker] umem_frames"));
  EXPECT_FALSE(link_exists(ns, "ov2"));
  EXPECT_FALSE(link_exists(ns, "ov2-nic"));
  EXPECT_EQ(xdp_attachments(ns, "wire0"), 0);
  EXPECT_FALSE(std::filesystem::exists(socket));
  // And with the limit lifted the same command starts (the limit was the only problem).
  const Result ok = sh("timeout -s INT 3 nsenter --net=/run/netns/" + ns + " " + kDaemon + " --wire wire0 --socket " +
                       socket + " 2>&1");
  EXPECT_THAT(ok.out, HasSubstr("serving " + socket));
}

}  // namespace
