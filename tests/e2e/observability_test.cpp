// End-to-end tests of observability and the SaDeleteReq loop: two REAL
// ipsecov2d daemons (hosts A and B in their own network namespaces, joined by
// a bridge in a third namespace M, as scripts/demo.sh does), SAs and policies
// installed with the REAL ipsecov2ctl, real ICMP traffic through ESP, and
// then `stats --json`, `stats --prometheus`, `monitor --json`, the
// Prometheus HTTP listener, and SA deletion on a hard lifetime.
//
// Needs root.  Namespaces are named ov2o<pid><letter>; the daemons' files
// live in /tmp/ov2o<pid>; everything is removed also when a test fails.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "control/control_client.h"
#include "daemon_harness.h"
#include "proc_status.h"

namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

const std::string kDaemon = OV2_BINARY_DIR "/ctl/ipsecov2d";
const std::string kCtl = OV2_BINARY_DIR "/ctl/ipsecov2ctl";
// Key material: searched for in every output (AES-GCM-128 key || salt).
const std::string kKeyAB = "0badc0de0badc0de0badc0de0badc0de11223344";
const std::string kKeyBA = "feedfacefeedfacefeedfacefeedface55667788";

struct Result {
  int exit_code = -1;
  std::string out;
};

// Runs a shell command line, bounded to 30 s; stdout captured, stderr to stdout.
Result sh(const std::string& command) {
  Result r;
  FILE* p = popen(("timeout 30 /bin/bash -c '" + command + "' 2>&1").c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Starts argv with stdout+stderr to `log`; returns the pid.
pid_t spawn(const std::vector<std::string>& argv, const std::string& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 1);
    dup2(fd, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  return pid;
}

void stop(pid_t& pid) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  for (int i = 0; i < 100; ++i) {
    if (waitpid(pid, nullptr, WNOHANG) == pid) {
      pid = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  pid = -1;
}

// JSON lines of a file (monitor --json output); incomplete last line ignored.
std::vector<json> json_lines(const std::string& path) {
  std::vector<json> out;
  std::istringstream in(slurp(path));
  std::string line;
  while (std::getline(in, line)) {
    try {
      out.push_back(json::parse(line));
    } catch (...) {
    }
  }
  return out;
}

// Hosts A (10.1.0.1 behind 192.0.2.1) and B (10.2.0.1 behind 192.0.2.2), each
// with its own ipsecov2d on its wire, the wire a bridge in M.
class TwoHosts {
 public:
  // `keep_state`: the daemons keep state.json (--state-dir), as by default.
  explicit TwoHosts(const std::string& config_text = "", bool keep_state = true) : keep_state_(keep_state) {
    try {
      setup(config_text);
    } catch (...) {
      cleanup();
      throw;
    }
  }
  ~TwoHosts() { cleanup(); }

  std::string ns(char h) const { return tag_ + h; }
  std::string in(char h) const { return "nsenter --net=/run/netns/" + ns(h) + " "; }
  std::string sock(char h) const { return dir_ + "/" + h + ".sock"; }
  std::string dir() const { return dir_; }
  // ipsecov2ctl for host h (a Unix socket path: no namespace needed).
  Result ctl(char h, const std::string& args) const { return sh(kCtl + " --socket " + sock(h) + " " + args); }
  std::string daemon_log(char h) const { return slurp(dir_ + "/" + h + ".log"); }

  // Routes into ov2, and a throw-away tunnel that carries pings until they
  // pass: the workers' first ESP packet to a next hop waits for its MAC and
  // is dropped, so the tests' counted packets must not be the first ones.
  void warm_up() {
    const std::string mtu = std::to_string(1500 - 105);  // wire MTU - worst-case ESP overhead
    ASSERT_EQ(sh(in('a') + "ip route add 10.2.0.0/24 dev ov2 src 10.1.0.1 mtu " + mtu).exit_code, 0);
    ASSERT_EQ(sh(in('b') + "ip route add 10.1.0.0/24 dev ov2 src 10.2.0.1 mtu " + mtu).exit_code, 0);
    ASSERT_NO_FATAL_FAILURE(install_sas_and_policies("0x9001", "0x9002", ""));
    const Result warm = ping(4);
    ASSERT_THAT(warm.out, ::testing::ContainsRegex(" [1-4] received")) << warm.out;
    ASSERT_EQ(ctl('a', "sa del --force " + out_a + " " + in_a).exit_code, 0);
    ASSERT_EQ(ctl('b', "sa del --force " + out_b + " " + in_b).exit_code, 0);
  }

  // The tunnel of scripts/demo.sh (after warm_up()); `in_b_extra` is added to
  // B's inbound SA, `out_a_extra` to A's outbound SA.
  void install_tunnel(const std::string& in_b_extra = "", const std::string& out_a_extra = "") {
    install_sas_and_policies("0x1001", "0x2001", in_b_extra, out_a_extra);
  }

  void install_sas_and_policies(const std::string& spi_ab, const std::string& spi_ba, const std::string& in_b_extra,
                                const std::string& out_a_extra = "") {
    out_a = trim(ctl('a', "sa add --dir out --mode tunnel --src 192.0.2.1 --dst 192.0.2.2 --spi " + spi_ab +
                              " "
                              "--aead aes-gcm-128 --key-file " +
                              dir_ + "/k_ab " + out_a_extra)
                     .out);
    in_a = trim(ctl('a', "sa add --dir in --mode tunnel --src 192.0.2.2 --dst 192.0.2.1 --spi " + spi_ba +
                             " "
                             "--aead aes-gcm-128 --key-file " +
                             dir_ + "/k_ba")
                    .out);
    out_b = trim(ctl('b', "sa add --dir out --mode tunnel --src 192.0.2.2 --dst 192.0.2.1 --spi " + spi_ba +
                              " "
                              "--aead aes-gcm-128 --key-file " +
                              dir_ + "/k_ba")
                     .out);
    in_b = trim(ctl('b', "sa add --dir in --mode tunnel --src 192.0.2.1 --dst 192.0.2.2 --spi " + spi_ab +
                             " "
                             "--aead aes-gcm-128 --key-file " +
                             dir_ + "/k_ab " + in_b_extra)
                    .out);
    for (const auto* h : {&out_a, &in_a, &out_b, &in_b}) ASSERT_EQ(h->rfind("0x", 0), 0u) << *h;
    ASSERT_EQ(
        ctl('a', "policy add --dir out --src 10.1.0.0/24 --dst 10.2.0.0/24 --action protect --sa " + out_a).exit_code,
        0);
    ASSERT_EQ(
        ctl('a', "policy add --dir in --src 10.2.0.0/24 --dst 10.1.0.0/24 --action protect --sa " + in_a).exit_code, 0);
    ASSERT_EQ(
        ctl('b', "policy add --dir out --src 10.2.0.0/24 --dst 10.1.0.0/24 --action protect --sa " + out_b).exit_code,
        0);
    ASSERT_EQ(
        ctl('b', "policy add --dir in --src 10.1.0.0/24 --dst 10.2.0.0/24 --action protect --sa " + in_b).exit_code, 0);
  }

  // `count` pings A -> B, 0.2 s apart; returns ping's output.
  Result ping(int count) const {
    return sh(in('a') + "ping -n -c " + std::to_string(count) + " -i 0.2 -W 1 -I 10.1.0.1 10.2.0.1");
  }

  // Starts `ipsecov2ctl monitor --json` on host h into a file; returns its path.
  std::string start_monitor(char h) {
    const std::string path = dir_ + "/monitor-" + h + ".jsonl";
    monitors_.push_back(spawn({kCtl, "--socket", sock(h), "monitor", "--json"}, path));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // connected and subscribed
    return path;
  }

  pid_t daemon_pid(char h) const { return daemons_.at(h == 'a' ? 0 : 1); }

  // SIGTERM to host h's daemon; waits for it to exit.
  void stop_daemon(char h) { stop(daemons_.at(h == 'a' ? 0 : 1)); }

  std::string out_a, in_a, out_b, in_b;

 private:
  void setup(const std::string& config_text) {
    tag_ = "ov2o" + std::to_string(getpid());
    dir_ = "/tmp/" + tag_;
    remove_namespaces();  // leftovers of a crashed run with the same pid
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    std::filesystem::permissions(dir_, std::filesystem::perms::owner_all);
    std::ofstream(dir_ + "/k_ab") << kKeyAB;
    std::ofstream(dir_ + "/k_ba") << kKeyBA;
    std::string config_arg;
    if (!config_text.empty()) {
      std::ofstream(dir_ + "/d.conf") << config_text;
      config_arg = dir_ + "/d.conf";
    }
    const std::string script = "set -e; A=" + ns('a') + "; B=" + ns('b') + "; M=" + ns('m') +
                               "; ip netns add $A; ip netns add $B; ip netns add $M;"
                               " ip link add wa netns $A type veth peer name pa netns $M;"
                               " ip link add wb netns $B type veth peer name pb netns $M;"
                               " ip -n $M link add br0 type bridge;"
                               " for p in pa pb; do ip -n $M link set $p master br0; ip -n $M link set $p up; done;"
                               " ip -n $M link set br0 up;"
                               " for n in $A $B $M; do ip -n $n link set lo up;"
                               "   nsenter --net=/run/netns/$n sysctl -qw net.ipv6.conf.all.disable_ipv6=1 "
                               "net.ipv6.conf.default.disable_ipv6=1; done;"
                               " ip -n $A addr add 192.0.2.1/24 dev wa; ip -n $B addr add 192.0.2.2/24 dev wb;"
                               " ip -n $A link set wa up; ip -n $B link set wb up;"
                               " ip -n $A addr add 10.1.0.1/32 dev lo; ip -n $B addr add 10.2.0.1/32 dev lo";
    namespaces_ = true;
    const Result r = sh(script);
    if (r.exit_code != 0) throw std::runtime_error("topology: " + r.out);
    for (char h : {'a', 'b'}) {
      std::vector<std::string> argv = {
          "/usr/bin/nsenter", "--net=/run/netns/" + ns(h), kDaemon, "--wire", std::string("w") + h, "--socket", sock(h),
          "--no-restore"};
      if (keep_state_) argv.insert(argv.end(), {"--state-dir", dir_ + "/state-" + h});
      if (!config_arg.empty()) {
        argv.push_back("--config");
        argv.push_back(config_arg);
      }
      daemons_.push_back(spawn(argv, dir_ + "/" + h + ".log"));
    }
    for (char h : {'a', 'b'}) {
      bool up = false;
      for (int i = 0; i < 200 && !up; ++i) {
        up = std::filesystem::exists(sock(h));
        if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      if (!up) throw std::runtime_error(std::string("ipsecov2d ") + h + " did not start: " + daemon_log(h));
    }
  }

  void remove_namespaces() {
    for (char h : {'a', 'b', 'm'}) sh("ip netns del " + ns(h) + " 2>/dev/null || true");
  }

  void cleanup() {
    for (pid_t& p : monitors_) stop(p);
    for (pid_t& p : daemons_) stop(p);
    if (namespaces_) remove_namespaces();
    namespaces_ = false;
    if (!dir_.empty() && !::testing::Test::HasFailure()) std::filesystem::remove_all(dir_);
    if (!dir_.empty() && ::testing::Test::HasFailure()) {
      // Keep the logs for the failure report, but never the keys.
      std::filesystem::remove(dir_ + "/k_ab");
      std::filesystem::remove(dir_ + "/k_ba");
      std::cerr << "logs kept in " << dir_ << "\n";
    }
  }

  std::string tag_, dir_;
  bool keep_state_ = true;
  bool namespaces_ = false;
  std::vector<pid_t> daemons_;
  std::vector<pid_t> monitors_;
};

json stats_of(const TwoHosts& t, char h) {
  const Result r = t.ctl(h, "stats --json");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  return json::parse(r.out);
}

const json& sa_stats(const json& stats, const std::string& handle) {
  for (const auto& sa : stats.at("sas"))
    if (sa.at("handle") == handle) return sa;
  throw std::runtime_error("no SA " + handle + " in stats");
}

void expect_no_keys(const std::string& text) {
  EXPECT_THAT(text, Not(HasSubstr(kKeyAB)));
  EXPECT_THAT(text, Not(HasSubstr(kKeyBA)));
  EXPECT_THAT(text, Not(HasSubstr(kKeyAB.substr(0, 32))));
  EXPECT_THAT(text, Not(HasSubstr(kKeyBA.substr(0, 32))));
}

// Events of one kind, in order.
std::vector<json> events(const std::vector<json>& all, const std::string& kind) {
  std::vector<json> out;
  for (const auto& e : all)
    if (e.value("event", "") == kind) out.push_back(e);
  return out;
}

size_t index_of(const std::vector<json>& all, const std::string& kind, const std::string& handle) {
  for (size_t i = 0; i < all.size(); ++i)
    if (all[i].value("event", "") == kind && all[i].value("handle", "") == handle) return i;
  return SIZE_MAX;
}

// Waits until `pred` holds (up to `ms`).
template <class Pred>
bool eventually(Pred pred, int ms = 3000) {
  for (int i = 0; i < ms / 50; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return pred();
}

TEST(Observability, StatsCountExactlyThePingsOnBothHostsAndPrometheusShowsTheSameNumbers) {
  TwoHosts t;
  ASSERT_NO_FATAL_FAILURE(t.warm_up());
  const json a0 = stats_of(t, 'a');
  const json b0 = stats_of(t, 'b');
  ASSERT_NO_FATAL_FAILURE(t.install_tunnel());
  const Result ping = t.ping(7);
  ASSERT_EQ(ping.exit_code, 0) << ping.out;
  ASSERT_THAT(ping.out, HasSubstr("7 received")) << t.ctl('a', "stats").out << t.ctl('b', "stats").out;

  const json a = stats_of(t, 'a');
  const json b = stats_of(t, 'b');
  EXPECT_TRUE(a.at("dataplane").at("running").get<bool>());
  // 7 echo requests A->B, 7 replies B->A; ICMP 84-byte IP packets.
  EXPECT_EQ(sa_stats(a, t.out_a).at("packets"), 7);
  EXPECT_EQ(sa_stats(a, t.in_a).at("packets"), 7);
  EXPECT_EQ(sa_stats(b, t.in_b).at("packets"), 7);
  EXPECT_EQ(sa_stats(b, t.out_b).at("packets"), 7);
  EXPECT_EQ(sa_stats(a, t.out_a).at("next_seq"), 8);
  EXPECT_EQ(sa_stats(b, t.in_b).at("highest_seq"), 7);
  EXPECT_EQ(sa_stats(a, t.in_a).at("errors").at("auth-failed"), 0);
  EXPECT_EQ(sa_stats(a, t.out_a).at("bytes"), sa_stats(b, t.in_b).at("bytes"));
  // The global counters also hold the warm-up: compare what the 7 pings added.
  for (const auto& hosts : {std::pair{&a, &a0}, std::pair{&b, &b0}}) {
    // (Not a structured binding: clang 14 cannot capture one in a lambda.)
    const auto* now = hosts.first;
    const auto* before = hosts.second;
    auto delta = [&](const char* section, const char* group, const char* name) {
      const json& n = group ? now->at(section).at(group) : now->at(section);
      const json& o = group ? before->at(section).at(group) : before->at(section);
      return n.at(name).get<uint64_t>() - o.at(name).get<uint64_t>();
    };
    EXPECT_EQ(delta("bpf", "verdict", "accept"), 7u);
    EXPECT_EQ(delta("bpf", "verdict_status", "CRYPTO_SUCCESS"), 7u);
    EXPECT_EQ(delta("bpf", "verdict", "drop-status"), 0u);
    EXPECT_EQ(delta("bpf", "tx", "protect"), 7u);
    EXPECT_EQ(delta("bpf", "wire", "redirect"), 7u);
    EXPECT_EQ(delta("worker", nullptr, "tx-encapsulated"), 7u);
    EXPECT_EQ(delta("worker", nullptr, "rx-decapsulated"), 7u);
    EXPECT_EQ(delta("worker", nullptr, "tx-no-neighbour"), 0u);
  }

  const Result prom = t.ctl('a', "stats --prometheus");
  ASSERT_EQ(prom.exit_code, 0) << prom.out;
  const std::regex sample(R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*",?)*\})? [0-9]+$)");
  const std::regex comment(R"(^# (HELP|TYPE) ipsecov2_[a-z0-9_]+ .+$)");
  std::istringstream lines(prom.out);
  std::string line;
  size_t samples = 0;
  while (std::getline(lines, line)) {
    const bool ok = std::regex_match(line, sample) || std::regex_match(line, comment);
    EXPECT_TRUE(ok) << "not Prometheus text: " << line;
    samples += line[0] != '#';
  }
  EXPECT_GT(samples, 50u);
  const std::string spi_labels = "{handle=\"" + t.out_a + "\",dir=\"out\",spi=\"0x1001\"}";
  EXPECT_THAT(prom.out, HasSubstr("ipsecov2_sa_packets_total" + spi_labels + " 7\n"));
  EXPECT_THAT(prom.out, HasSubstr("ipsecov2_sa_highest_seq{handle=\"" + t.in_a + "\",dir=\"in\",spi=\"0x2001\"} 7\n"));
  // No traffic since `a` was read: the global numbers are the same.
  EXPECT_THAT(prom.out, HasSubstr("ipsecov2_bpf_total{program=\"verdict\",counter=\"accept\"} " +
                                  a["bpf"]["verdict"]["accept"].dump() + "\n"));
  EXPECT_THAT(prom.out, HasSubstr("ipsecov2_verdict_status_total{status=\"CRYPTO_SUCCESS\"} " +
                                  a["bpf"]["verdict_status"]["CRYPTO_SUCCESS"].dump() + "\n"));
  EXPECT_THAT(prom.out, HasSubstr("ipsecov2_worker_total{counter=\"tx-encapsulated\"} " +
                                  a["worker"]["tx-encapsulated"].dump() + "\n"));

  const Result human = t.ctl('a', "stats");
  EXPECT_EQ(human.exit_code, 0);
  EXPECT_THAT(human.out, HasSubstr(t.out_a));
  EXPECT_THAT(human.out, HasSubstr("COUNTED-BY"));
  for (const auto& sa : a["sas"]) EXPECT_EQ(sa["counted_by"], "afxdp") << "AF_XDP-held SAs are counted by the workers";
  expect_no_keys(prom.out + human.out + a.dump() + b.dump() + t.daemon_log('a') + t.daemon_log('b'));
}

TEST(Observability, MonitorShowsSaAddedInOrderAndSaDeletedOnUserDelete) {
  TwoHosts t;
  ASSERT_NO_FATAL_FAILURE(t.warm_up());
  const std::string mon = t.start_monitor('a');
  ASSERT_NO_FATAL_FAILURE(t.install_tunnel());
  ASSERT_EQ(t.ctl('a', "sa del --force " + t.out_a).exit_code, 0);
  ASSERT_TRUE(eventually([&] { return !events(json_lines(mon), "sa-deleted").empty(); })) << slurp(mon);
  const auto all = json_lines(mon);
  const auto added = events(all, "sa-added");
  ASSERT_EQ(added.size(), 2u) << slurp(mon);
  EXPECT_EQ(added[0].at("handle"), t.out_a);
  EXPECT_EQ(added[0].at("dir"), "out");
  EXPECT_EQ(added[1].at("handle"), t.in_a);
  EXPECT_EQ(added[1].at("spi"), "0x2001");
  const auto deleted = events(all, "sa-deleted");
  ASSERT_EQ(deleted.size(), 1u);
  EXPECT_EQ(deleted[0].at("handle"), t.out_a);
  EXPECT_EQ(deleted[0].at("reason"), "user");
  EXPECT_EQ(events(all, "policy-added").size(), 2u);
  // --force removed the outbound policy first.
  EXPECT_LT(index_of(all, "policy-deleted", ""), index_of(all, "sa-deleted", t.out_a));
  for (const auto& e : all) EXPECT_TRUE(e.contains("time")) << e.dump();

  // Human lines.
  const Result human = sh("timeout 2 " + kCtl + " --socket " + t.sock('a') + " monitor --count 1 & sleep 0.3; " + kCtl +
                          " --socket " + t.sock('a') + " sa del --force " + t.in_a + " >/dev/null; wait");
  EXPECT_THAT(human.out, ::testing::MatchesRegex("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z (policy|sa)-deleted .*\n"));
  expect_no_keys(slurp(mon) + human.out);
}

TEST(Observability, HardPacketLifetimeMakesTheDaemonDeleteTheInboundSaAndItsOutboundTwin) {
  TwoHosts t;
  ASSERT_NO_FATAL_FAILURE(t.warm_up());
  const std::string mon = t.start_monitor('b');
  ASSERT_NO_FATAL_FAILURE(t.install_tunnel("--lifetime-packets 2,3"));
  t.ping(5);  // B's inbound SA accepts 3, then asks to be deleted
  ASSERT_TRUE(eventually([&] { return events(json_lines(mon), "sa-deleted").size() >= 2; })) << slurp(mon);
  const auto all = json_lines(mon);
  const auto req = events(all, "sa-delete-req");
  ASSERT_EQ(req.size(), 1u) << slurp(mon);  // duplicates coalesced
  EXPECT_EQ(req[0].at("handle"), t.in_b);
  EXPECT_EQ(req[0].at("matching"), t.out_b);
  EXPECT_EQ(req[0].at("action"), "delete");
  EXPECT_EQ(req[0].at("policies").size(), 2u);
  const size_t req_at = index_of(all, "sa-delete-req", t.in_b);
  const size_t del_in = index_of(all, "sa-deleted", t.in_b);
  const size_t del_out = index_of(all, "sa-deleted", t.out_b);
  ASSERT_NE(del_in, SIZE_MAX);
  ASSERT_NE(del_out, SIZE_MAX);
  EXPECT_LT(req_at, del_in);
  EXPECT_LT(req_at, del_out);
  EXPECT_EQ(all[del_in].at("reason"), "sa-delete-req");
  EXPECT_EQ(all[del_out].at("reason"), "sa-delete-req");
  EXPECT_EQ(events(all, "policy-deleted").size(), 2u);
  const auto soft = events(all, "soft-expired");
  ASSERT_GE(soft.size(), 1u);
  EXPECT_EQ(soft[0].at("handle"), t.in_b);
  EXPECT_LT(index_of(all, "soft-expired", t.in_b), del_in);

  const Result list = t.ctl('b', "--json sa list");
  ASSERT_EQ(list.exit_code, 0);
  EXPECT_TRUE(json::parse(list.out).at("sas").empty()) << list.out;
  EXPECT_TRUE(json::parse(t.ctl('b', "--json policy list").out).at("policies").empty());
  // Host A is untouched.
  EXPECT_EQ(json::parse(t.ctl('a', "--json sa list").out).at("sas").size(), 2u);
  const json b = stats_of(t, 'b');
  EXPECT_GE(b.at("bpf").at("verdict").at("sa-delete-req"), 1);
  expect_no_keys(slurp(mon) + b.dump() + t.daemon_log('b'));
}

// Lifetimes in seconds (what IKE daemons set) on an idle tunnel: the daemon
// reads such an SA only when a limit is due, and the events still come, soft
// then hard, for each SA, about on time.
TEST(Observability, SecondsLifetimesGiveSoftThenHardExpiredEventsOnAnIdleTunnel) {
  TwoHosts t;
  ASSERT_NO_FATAL_FAILURE(t.warm_up());
  const std::string mon_a = t.start_monitor('a');
  const std::string mon_b = t.start_monitor('b');
  const auto added = std::chrono::steady_clock::now();
  // A's outbound SA and B's inbound one.
  ASSERT_NO_FATAL_FAILURE(t.install_tunnel("--lifetime-seconds 1,2", "--lifetime-seconds 1,2"));
  auto count = [&](const char* kind) {
    return events(json_lines(mon_a), kind).size() + events(json_lines(mon_b), kind).size();
  };
  ASSERT_TRUE(eventually([&] { return count("soft-expired") >= 2; }, 5000)) << slurp(mon_a) << slurp(mon_b);
  const double soft_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - added).count();
  ASSERT_TRUE(eventually([&] { return count("hard-expired") >= 2; }, 5000)) << slurp(mon_a) << slurp(mon_b);
  const double hard_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - added).count();
  EXPECT_GE(soft_s, 1.0);
  EXPECT_GE(hard_s, 2.0);
  EXPECT_LT(hard_s, 4.5);  // due at 2 s, a 500 ms tick, a loaded machine
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));  // two more ticks: nothing again
  for (const auto& [mon, h] : {std::pair{mon_a, t.out_a}, std::pair{mon_b, t.in_b}}) {
    const auto all = json_lines(mon);
    const size_t soft = index_of(all, "soft-expired", h);
    const size_t hard = index_of(all, "hard-expired", h);
    ASSERT_LT(soft, all.size()) << h << "\n" << slurp(mon);
    ASSERT_LT(hard, all.size()) << h << "\n" << slurp(mon);
    EXPECT_LT(soft, hard);
    EXPECT_EQ(all[soft].at("limit"), "seconds");
    EXPECT_EQ(all[hard].at("limit"), "seconds");
    EXPECT_EQ(events(all, "soft-expired").size(), 1u) << "once, and none for the SA without a lifetime\n" << slurp(mon);
    EXPECT_EQ(events(all, "hard-expired").size(), 1u) << slurp(mon);
  }
  expect_no_keys(slurp(mon_a) + slurp(mon_b) + t.daemon_log('a') + t.daemon_log('b'));
}

TEST(Observability, NotifyPolicyRaisesSaDeleteReqButDeletesNothing) {
  TwoHosts t("[sa_delete_req]\npolicy = \"notify\"\n");
  ASSERT_NO_FATAL_FAILURE(t.warm_up());
  const std::string mon = t.start_monitor('b');
  ASSERT_NO_FATAL_FAILURE(t.install_tunnel("--lifetime-packets 2,3"));
  const Result ping = t.ping(5);  // all 5 go through: the SA is not deleted and keeps working
  EXPECT_THAT(ping.out, HasSubstr("5 received"));
  ASSERT_TRUE(eventually([&] { return !events(json_lines(mon), "sa-delete-req").empty(); })) << slurp(mon);
  std::this_thread::sleep_for(std::chrono::milliseconds(700));  // a tick later: still nothing deleted
  const auto all = json_lines(mon);
  const auto req = events(all, "sa-delete-req");
  ASSERT_EQ(req.size(), 1u) << slurp(mon);
  EXPECT_EQ(req[0].at("handle"), t.in_b);
  EXPECT_EQ(req[0].at("action"), "notify");
  EXPECT_TRUE(events(all, "sa-deleted").empty()) << slurp(mon);
  EXPECT_EQ(json::parse(t.ctl('b', "--json sa list").out).at("sas").size(), 2u);
  const json b = stats_of(t, 'b');
  EXPECT_EQ(sa_stats(b, t.in_b).at("packets"), 5);
  // The data plane flags every packet past the hard limit; the daemon raised one event.
  EXPECT_EQ(b.at("bpf").at("verdict").at("sa-delete-req"), 3);
  EXPECT_EQ(events(all, "hard-expired").size(), 1u);
}

}  // namespace

namespace {

TEST(Observability, ReplayedAndForgedEspShowAsRateLimitedFailureEventsWithExactCounts) {
  TwoHosts t;
  ASSERT_NO_FATAL_FAILURE(t.warm_up());
  ASSERT_NO_FATAL_FAILURE(t.install_tunnel());
  const std::string mon = t.start_monitor('b');
  // Capture A's ESP to B on the switch, then play it again toward B (3
  // replays) and send 2 copies whose sequence number was changed to 1000 and
  // 1001 (the ICV covers it: 2 authentication failures).
  const std::string pcap = t.dir() + "/esp.pcap";
  const std::string capture = t.in('m') + "timeout 10 tcpdump -i pa -n -U -c 3 -w " + pcap +
                              " esp and src 192.0.2.1 >/dev/null 2>&1 & sleep 0.5; " + t.in('a') +
                              "ping -n -c 3 -i 0.2 -W 1 -I 10.1.0.1 10.2.0.1 >/dev/null; wait";
  ASSERT_EQ(sh(capture).exit_code, 0);
  const std::string inject = t.dir() + "/inject.py";
  std::ofstream(inject) << "import sys\n"
                           "from scapy.all import rdpcap, sendp, Ether\n"
                           "pk = rdpcap(sys.argv[1])\n"
                           "assert len(pk) == 3\n"
                           "sendp(pk, iface='pb', verbose=0)\n"
                           "for seq in (1000, 1001):\n"
                           "    raw = bytearray(bytes(pk[0]))\n"
                           "    raw[14 + 20 + 4:14 + 20 + 8] = seq.to_bytes(4, 'big')\n"
                           "    sendp(Ether(bytes(raw)), iface='pb', verbose=0)\n";
  const Result sent = sh(t.in('m') + "/usr/bin/python3 " + inject + " " + pcap);
  ASSERT_EQ(sent.exit_code, 0) << sent.out;
  auto sum = [&](const std::string& kind) {
    uint64_t n = 0;
    for (const auto& e : events(json_lines(mon), kind)) n += e.at("count").get<uint64_t>();
    return n;
  };
  ASSERT_TRUE(eventually([&] { return sum("replay-failures") == 3 && sum("auth-failures") == 2; }, 4000)) << slurp(mon);
  const auto all = json_lines(mon);
  for (const auto& e : events(all, "replay-failures")) EXPECT_EQ(e.at("handle"), t.in_b);
  EXPECT_LE(events(all, "replay-failures").size(), 2u);  // rate-limited: one per second at most
  const json b = stats_of(t, 'b');
  EXPECT_EQ(sa_stats(b, t.in_b).at("errors").at("replayed"), 3);
  EXPECT_EQ(sa_stats(b, t.in_b).at("errors").at("auth-failed"), 2);
  EXPECT_EQ(sa_stats(b, t.in_b).at("packets"), 3);
  expect_no_keys(slurp(mon) + b.dump());
}

// RFC 4301 §5.2 through the daemon: A seals pings from 10.9.0.1 with the
// genuine A->B SA, but B's inbound policy for that SA covers 10.1.0.0/24 only.
// B drops them: `stats` counts policy-mismatch on the SA and the worker,
// `monitor` reports policy-failures; pings from inside the policy still pass.
TEST(Observability, DecryptedPacketsOutsideTheInboundPolicyShowAsPolicyFailures) {
  TwoHosts t;
  ASSERT_NO_FATAL_FAILURE(t.warm_up());
  ASSERT_NO_FATAL_FAILURE(t.install_tunnel());
  ASSERT_EQ(sh(t.in('a') + "ip addr add 10.9.0.1/32 dev lo").exit_code, 0);
  ASSERT_EQ(
      t.ctl('a', "policy add --dir out --src 10.9.0.0/24 --dst 10.2.0.0/24 --action protect --sa " + t.out_a).exit_code,
      0);
  const std::string mon = t.start_monitor('b');
  const Result outside = sh(t.in('a') + "ping -n -c 3 -i 0.2 -W 1 -I 10.9.0.1 10.2.0.1");
  EXPECT_THAT(outside.out, HasSubstr(" 0 received")) << outside.out;
  EXPECT_THAT(t.ping(2).out, HasSubstr("2 received"));
  auto sum = [&] {
    uint64_t n = 0;
    for (const auto& e : events(json_lines(mon), "policy-failures")) n += e.at("count").get<uint64_t>();
    return n;
  };
  ASSERT_TRUE(eventually([&] { return sum() == 3; }, 4000)) << slurp(mon);
  for (const auto& e : events(json_lines(mon), "policy-failures")) EXPECT_EQ(e.at("handle"), t.in_b);
  const json b = stats_of(t, 'b');
  EXPECT_EQ(sa_stats(b, t.in_b).at("errors").at("policy-mismatch"), 3);
  EXPECT_EQ(sa_stats(b, t.in_b).at("packets"), 2);
  EXPECT_EQ(b.at("worker").at("rx-policy-mismatch"), 3);
}

TEST(Observability, PrometheusListenerServesMetricsOnTheConfiguredAddressOnly) {
  TwoHosts t("[stats]\nprometheus_listen = \"127.0.0.1:9781\"\n");
  ASSERT_NO_FATAL_FAILURE(t.warm_up());
  ASSERT_NO_FATAL_FAILURE(t.install_tunnel());
  ASSERT_THAT(t.ping(3).out, HasSubstr("3 received"));
  const std::string curl = t.in('b') + "curl -s -m 3 -w \"\\n%{http_code}\" ";
  const Result metrics = sh(curl + "http://127.0.0.1:9781/metrics");
  ASSERT_EQ(metrics.exit_code, 0) << metrics.out;
  EXPECT_THAT(metrics.out, HasSubstr("\n200"));
  EXPECT_THAT(metrics.out,
              HasSubstr("ipsecov2_sa_packets_total{handle=\"" + t.in_b + "\",dir=\"in\",spi=\"0x1001\"} 3\n"));
  EXPECT_THAT(metrics.out, HasSubstr("# TYPE ipsecov2_bpf_total counter\n"));
  EXPECT_THAT(sh(curl + "http://127.0.0.1:9781/").out, ::testing::EndsWith("\n404"));
  EXPECT_THAT(sh(curl + "-X POST http://127.0.0.1:9781/metrics").out, ::testing::EndsWith("\n404"));
  EXPECT_THAT(sh(curl + "-H \"X-Big: $(head -c 10000 /dev/zero | tr \\\\0 x)\" http://127.0.0.1:9781/metrics").out,
              ::testing::EndsWith("\n431"));
  // Bound to 127.0.0.1 only: the wire address refuses (curl exit 7).
  EXPECT_EQ(sh(curl + "http://192.0.2.2:9781/metrics").exit_code, 7);
  // The daemon still serves its control socket after all that.
  EXPECT_EQ(t.ctl('b', "stats --json").exit_code, 0);
  expect_no_keys(metrics.out);
}

}  // namespace

namespace {

TEST(Observability, ExhaustedOutboundSaIsDeletedWithItsInboundTwinAndShutdownIsAnnounced) {
  TwoHosts t;
  ASSERT_NO_FATAL_FAILURE(t.warm_up());
  const std::string mon = t.start_monitor('a');
  ASSERT_NO_FATAL_FAILURE(t.install_tunnel("", "--lifetime-packets 2,3"));
  const Result ping = t.ping(5);  // A's outbound SA sends 3, then refuses
  EXPECT_THAT(ping.out, HasSubstr("3 received")) << ping.out;
  ASSERT_TRUE(eventually([&] { return events(json_lines(mon), "sa-deleted").size() >= 2; })) << slurp(mon);
  auto all = json_lines(mon);
  const auto req = events(all, "sa-delete-req");
  ASSERT_EQ(req.size(), 1u) << slurp(mon);
  EXPECT_EQ(req[0].at("handle"), t.out_a);
  EXPECT_EQ(req[0].at("source"), "outbound-exhausted");
  EXPECT_EQ(req[0].at("matching"), t.in_a);
  EXPECT_EQ(all[index_of(all, "sa-deleted", t.out_a)].at("reason"), "expired");
  EXPECT_EQ(all[index_of(all, "sa-deleted", t.in_a)].at("reason"), "expired");
  EXPECT_LT(index_of(all, "hard-expired", t.out_a), index_of(all, "sa-delete-req", t.out_a));
  EXPECT_TRUE(json::parse(t.ctl('a', "--json sa list").out).at("sas").empty());

  // stats --watch: one JSON line per interval, the later ones with the interval.
  const Result watch = t.ctl('a', "stats --json --watch 0.5 & sleep 1.3; kill $!");
  std::istringstream lines(watch.out);
  std::string line;
  std::vector<json> samples;
  while (std::getline(lines, line)) samples.push_back(json::parse(line));
  ASSERT_GE(samples.size(), 2u) << watch.out;
  EXPECT_FALSE(samples[0].contains("interval_seconds"));
  // The measured interval: never shorter than asked, and within the 1.3 s the
  // command ran (a loaded machine only makes it longer).
  EXPECT_GE(samples[1].at("interval_seconds").get<double>(), 0.45);
  EXPECT_LT(samples[1].at("interval_seconds").get<double>(), 1.3);

  t.stop_daemon('a');
  ASSERT_TRUE(eventually([&] { return !events(json_lines(mon), "device-down").empty(); })) << slurp(mon);
  all = json_lines(mon);
  EXPECT_EQ(events(all, "worker-down").size(), 1u);
  EXPECT_EQ(events(all, "device-down")[0].at("device"), "ov2");
  EXPECT_EQ(events(all, "device-down")[0].at("wire"), "wa");
}

// --- SA churn soak (issue #7 item 6) ---------------------------------------

using ov2::test::vm_rss_bytes;

// Entries in the daemon's inbound SA map (ov2_wire's sa_map), or -1.
long sa_map_entries(pid_t daemon) {
  const int fd = ov2::daemon_test::bpf_map_fd_of(daemon, "sa_map", sizeof(ov2_sa_key), sizeof(ov2_sa_value));
  if (fd < 0) return -1;
  long n = 0;
  ov2_sa_key key{}, next{};
  for (const void* prev = nullptr; bpf_map_get_next_key(fd, prev, &next) == 0; prev = &key, key = next) ++n;
  close(fd);
  return n;
}

unsigned env_or(const char* name, unsigned fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? static_cast<unsigned>(std::strtoul(v, nullptr, 10)) : fallback;
}

// While pings go A -> B through the demo tunnel, both daemons add and delete
// other SAs in a loop (A outbound, B inbound: a BPF map entry each), over
// their control sockets.  Every ping must come back, and afterwards the
// daemons' RSS and B's sa_map are back at their baseline.  The suite runs a
// short version (the daemons keep their state: a journal record and an
// fdatasync per request, state_store.h); the long one is
// OV2_SOAK_SAS=100000 OV2_SOAK_SECONDS=300 OV2_SOAK_STATE=0 (no state file).
TEST(Observability, SaChurnLosesNoPacketOfOtherSasAndRssAndBpfMapsReturnToBaseline) {
  const unsigned sas_per_round = env_or("OV2_SOAK_SAS", 100);
  const unsigned seconds = env_or("OV2_SOAK_SECONDS", 12);
  TwoHosts t("", env_or("OV2_SOAK_STATE", 1) != 0);
  ASSERT_NO_FATAL_FAILURE(t.warm_up());
  ASSERT_NO_FATAL_FAILURE(t.install_tunnel());
  ASSERT_THAT(t.ping(2).out, HasSubstr("2 received"));  // the next hop is known: no first-packet loss below
  ov2::ControlClient a(t.sock('a')), b(t.sock('b'));
  const std::string key = "00112233445566778899aabbccddeeff01020304";  // churn SAs carry no traffic
  auto add = [&](ov2::ControlClient& c, const char* dir, const char* src, const char* dst, uint32_t spi) {
    const json r = c.call({{"op", "sa.add"},
                           {"sa",
                            {{"dir", dir},
                             {"mode", "tunnel"},
                             {"src", src},
                             {"dst", dst},
                             {"spi", spi},
                             {"aead", "aes-gcm-128"},
                             {"key", key}}}});
    if (!r.value("ok", false)) throw std::runtime_error("sa.add: " + r.dump());
    return r.at("handle").get<std::string>();
  };
  // Deletes A's and B's churn SAs, 1000 per request, alternating (an idle
  // control connection is closed after 5 s).
  auto del_all = [&](std::vector<std::string>& on_a, std::vector<std::string>& on_b) {
    for (size_t i = 0; i < std::max(on_a.size(), on_b.size()); i += 1000) {
      for (auto [c, handles] : {std::pair{&a, &on_a}, std::pair{&b, &on_b}}) {
        if (i >= handles->size()) continue;
        const std::vector<std::string> part(handles->begin() + static_cast<long>(i),
                                            handles->begin() + static_cast<long>(std::min(handles->size(), i + 1000)));
        const json r = c->call({{"op", "sa.del"}, {"handles", part}, {"force", true}});
        if (!r.value("ok", false)) throw std::runtime_error("sa.del: " + r.dump());
      }
    }
    on_a.clear();
    on_b.clear();
  };
  // One round first, so that the baseline holds what any first use allocates once (OpenSSL, maps, buffers).
  std::vector<std::string> on_a, on_b;
  auto round = [&](uint32_t base) {
    for (uint32_t i = 0; i < sas_per_round; ++i) {
      on_a.push_back(add(a, "out", "192.0.2.1", "192.0.2.2", base + i));
      on_b.push_back(add(b, "in", "192.0.2.1", "192.0.2.2", base + i));
    }
    del_all(on_a, on_b);
  };
  round(0x100000);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // retired SAs freed, memory trimmed
  const uint64_t rss_a0 = vm_rss_bytes(t.daemon_pid('a')), rss_b0 = vm_rss_bytes(t.daemon_pid('b'));
  const long map_b0 = sa_map_entries(t.daemon_pid('b'));
  ASSERT_EQ(map_b0, 1) << "B's sa_map holds the tunnel's inbound SA only";

  // Pings in runs of at most 100 (10 s: sh() bounds a command to 30 s), counted exactly.
  const unsigned pings = seconds * 10;
  unsigned sent = 0, received = 0;
  std::string ping_log;
  std::thread traffic([&] {
    const std::regex summary("([0-9]+) packets transmitted, ([0-9]+) received");
    for (unsigned left = pings; left > 0;) {
      const unsigned n = std::min(left, 100u);
      const Result r = sh(t.in('a') + "ping -n -q -c " + std::to_string(n) + " -i 0.1 -W 2 -I 10.1.0.1 10.2.0.1");
      std::smatch m;
      if (!std::regex_search(r.out, m, summary)) {
        ping_log += r.out;
        break;
      }
      sent += static_cast<unsigned>(std::stoul(m[1]));
      received += static_cast<unsigned>(std::stoul(m[2]));
      left -= n;
    }
  });
  unsigned rounds = 0;
  uint64_t peak_rss_b = 0;
  long peak_map_b = 0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  try {
    for (uint32_t base = 0x200000; std::chrono::steady_clock::now() < until; base += sas_per_round, ++rounds) {
      for (uint32_t i = 0; i < sas_per_round; ++i) {
        on_a.push_back(add(a, "out", "192.0.2.1", "192.0.2.2", base + i));
        on_b.push_back(add(b, "in", "192.0.2.1", "192.0.2.2", base + i));
      }
      peak_rss_b = std::max(peak_rss_b, vm_rss_bytes(t.daemon_pid('b')));
      peak_map_b = std::max(peak_map_b, sa_map_entries(t.daemon_pid('b')));
      del_all(on_a, on_b);
    }
  } catch (const std::exception& e) {
    ADD_FAILURE() << e.what();
  }
  traffic.join();
  EXPECT_GE(rounds, 1u);
  EXPECT_EQ(peak_map_b, static_cast<long>(sas_per_round) + 1) << "the churn SAs were in B's sa_map";
  EXPECT_EQ(sent, pings) << ping_log;
  EXPECT_EQ(received, pings) << "traffic on the tunnel lost packets during " << rounds << " churn rounds";
  const json sb = stats_of(t, 'b');
  EXPECT_EQ(sa_stats(sb, t.in_b).at("packets").get<uint64_t>(), uint64_t{2} + pings) << sb.dump();

  // Back to baseline: the map exactly, RSS within 4 MiB (heap fragmentation and
  // allocator caches; an SA leak would be sas_per_round x ~3 KB per round).
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(sa_map_entries(t.daemon_pid('b')), map_b0);
  EXPECT_EQ(json::parse(t.ctl('a', "--json sa list").out).at("sas").size(), 2u);
  EXPECT_EQ(json::parse(t.ctl('b', "--json sa list").out).at("sas").size(), 2u);
  constexpr int64_t kRssTolerance = 4 << 20;
  const int64_t grow_a = static_cast<int64_t>(vm_rss_bytes(t.daemon_pid('a'))) - static_cast<int64_t>(rss_a0);
  const int64_t grow_b = static_cast<int64_t>(vm_rss_bytes(t.daemon_pid('b'))) - static_cast<int64_t>(rss_b0);
  EXPECT_LE(grow_a, kRssTolerance) << "A's RSS did not come back after " << rounds << " rounds";
  EXPECT_LE(grow_b, kRssTolerance) << "B's RSS did not come back; peak " << peak_rss_b << ", baseline " << rss_b0;
  std::cerr << "churn: " << rounds << " rounds of " << sas_per_round << " SAs per daemon, " << pings << " pings; RSS A "
            << rss_a0 << " -> +" << grow_a << ", B " << rss_b0 << " -> +" << grow_b << " (peak " << peak_rss_b << ")\n";
}

}  // namespace
