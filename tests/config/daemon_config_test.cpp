// The daemon configuration file: every key, defaults, and errors that name
// file, line and key.
#include "config/daemon_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "common/error.h"

namespace ov2 {
namespace {

using ::testing::HasSubstr;

std::string error_of(const std::string& text) {
  try {
    parse_config(text, "/etc/ipsecov2/ipsecov2d.conf");
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(DaemonConfig, TheShippedDefaultFileParsesToTheBuiltInDefaults) {
  EXPECT_EQ(parse_config(default_config_text(), "default"), DaemonConfig{});
}

TEST(DaemonConfig, EmptyFileGivesDefaults) { EXPECT_EQ(parse_config("", "x"), DaemonConfig{}); }

TEST(DaemonConfig, EveryKeyIsRead) {
  const auto c = parse_config(R"(
[daemon]
log_level = "debug"
engine = "auto"
nic_offload = "packet"
state_dir = "/run/x"
[control]
socket = "/run/x/s.sock"
group = "ipsec"
[wire]
interfaces = ["eth0", "eth1"]
[offload_device]
name = "esp0"
mtu = 1400
[worker]
queues = 2
cpus = [0, 1]
umem_frames = 8192
frame_size = 2048
rx_ring = 1024
tx_ring = 512
fill_ring = 4096
completion_ring = 256
busy_poll = true
crypto = "openssl"
[verdict]
mark = 0x2a
[sa_delete_req]
policy = "notify"
[stats]
prometheus_listen = "127.0.0.1:9781"
)",
                              "t");
  EXPECT_EQ(c.log_level, LogLevel::Debug);
  EXPECT_EQ(c.engine, "auto");
  EXPECT_EQ(c.nic_offload, "packet");
  EXPECT_EQ(c.state_dir, "/run/x");
  EXPECT_EQ(c.socket_path, "/run/x/s.sock");
  EXPECT_EQ(c.socket_group, "ipsec");
  EXPECT_EQ(c.wire_interfaces, (std::vector<std::string>{"eth0", "eth1"}));
  EXPECT_EQ(c.offload_dev, "esp0");
  EXPECT_EQ(c.offload_mtu, 1400u);
  EXPECT_EQ(c.queues, 2u);
  EXPECT_EQ(c.worker_cpus, (std::vector<int>{0, 1}));
  EXPECT_EQ(c.umem_frames, 8192u);
  EXPECT_EQ(c.frame_size, 2048u);
  EXPECT_EQ(c.rx_ring, 1024u);
  EXPECT_EQ(c.tx_ring, 512u);
  EXPECT_EQ(c.fill_ring, 4096u);
  EXPECT_EQ(c.completion_ring, 256u);
  EXPECT_TRUE(c.busy_poll);
  EXPECT_EQ(c.crypto, "openssl");  // the default is ipsec-mb
  EXPECT_EQ(c.verdict_mark, 42u);
  EXPECT_EQ(c.sa_delete_req, SaDeleteReqPolicy::Notify);
  EXPECT_EQ(c.prometheus_listen, "127.0.0.1:9781");
}

TEST(DaemonConfig, ErrorsNameFileLineAndKey) {
  EXPECT_EQ(error_of("[worker]\n\nqueues = 0\n"),
            "/etc/ipsecov2/ipsecov2d.conf:3: key 'worker.queues': must be from 1 to 64, not 0");
  EXPECT_EQ(error_of("[daemon]\nlog_level = \"loud\"\n"),
            "/etc/ipsecov2/ipsecov2d.conf:2: key 'daemon.log_level': must be error, warn, info or debug, not 'loud'");
  EXPECT_EQ(error_of("[worker]\nqueus = 2\n"),
            "/etc/ipsecov2/ipsecov2d.conf:2: key 'worker.queus': unknown key in [worker]");
  EXPECT_THAT(error_of("[wrkr]\nqueues = 2\n"), HasSubstr(":1: key 'wrkr': unknown section"));
  EXPECT_EQ(error_of("[worker]\nbusy_poll = 1\n"),
            "/etc/ipsecov2/ipsecov2d.conf:2: key 'worker.busy_poll': must be true or false");
  EXPECT_EQ(error_of("[worker]\ncrypto = \"aesni\"\n"),
            "/etc/ipsecov2/ipsecov2d.conf:2: key 'worker.crypto': must be openssl or ipsec-mb, not 'aesni'");
  EXPECT_EQ(error_of("[worker]\numem_frames = 3000\n"),
            "/etc/ipsecov2/ipsecov2d.conf:2: key 'worker.umem_frames': must be a power of two");
  EXPECT_EQ(error_of("[control]\nsocket = \"relative.sock\"\n"),
            "/etc/ipsecov2/ipsecov2d.conf:2: key 'control.socket': must be an absolute path");
  EXPECT_EQ(error_of("[offload_device]\nmtu = 100\n"),
            "/etc/ipsecov2/ipsecov2d.conf:2: key 'offload_device.mtu': must be from 1280 to 9000, not 100");
  EXPECT_EQ(error_of("[sa_delete_req]\npolicy = \"ignore\"\n"),
            "/etc/ipsecov2/ipsecov2d.conf:2: key 'sa_delete_req.policy': must be delete or notify, not 'ignore'");
  EXPECT_THAT(error_of("[worker]\nqueues = 2\ncpus = [1]\n"), HasSubstr("key 'worker.cpus': lists 1 CPUs for 2 queues"));
}

TEST(DaemonConfig, NicOffloadIsCryptoByDefaultAndABadValueNamesFileLineAndKey) {
  EXPECT_EQ(DaemonConfig{}.nic_offload, "crypto");
  EXPECT_EQ(error_of("[daemon]\nengine = \"nic\"\nnic_offload = \"full\"\n"),
            "/etc/ipsecov2/ipsecov2d.conf:3: key 'daemon.nic_offload': must be crypto or packet, not 'full'");
}

TEST(DaemonConfig, SyntaxErrorsNameFileAndLine) {
  EXPECT_THAT(error_of("[daemon]\nlog_level = \n"), HasSubstr("/etc/ipsecov2/ipsecov2d.conf:2: not valid TOML"));
  EXPECT_THAT(error_of("[daemon\n"), HasSubstr("/etc/ipsecov2/ipsecov2d.conf:1: not valid TOML"));
}

TEST(DaemonConfig, InvalidUtf8IsRefusedWithItsLineBeforeTheTomlParserSeesIt) {
  // A fuzz_config finding: toml11 read past the end of this literal string.
  EXPECT_EQ(error_of("'\xcbo'"), "/etc/ipsecov2/ipsecov2d.conf:1: not valid TOML: the file is not UTF-8");
  EXPECT_EQ(error_of("[daemon]\nlog_level = \"\xc0\xaf\"\n"),
            "/etc/ipsecov2/ipsecov2d.conf:2: not valid TOML: the file is not UTF-8");  // overlong
  EXPECT_EQ(error_of("[daemon]\n\n# caf\xc3\xa9 \xed\xa0\x80\n"),
            "/etc/ipsecov2/ipsecov2d.conf:3: not valid TOML: the file is not UTF-8");  // surrogate
  EXPECT_EQ(parse_config("# caf\xc3\xa9 \xf0\x9f\x94\x91\n[verdict]\nmark = 3\n", "x").verdict_mark, 3u);
}

TEST(DaemonConfig, MissingFileIsAClearError) {
  try {
    load_config("/nonexistent/ipsecov2d.conf");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "/nonexistent/ipsecov2d.conf: cannot open the configuration file");
  }
}

TEST(DaemonConfig, LoadsFromAFile) {
  char path[] = "/tmp/ov2cfgXXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  std::ofstream(path) << "[verdict]\nmark = 7\n";
  EXPECT_EQ(load_config(path).verdict_mark, 7u);
  unlink(path);
}

TEST(DaemonConfig, ReloadSeparatesLiveKeysFromRestartKeys) {
  DaemonConfig a, b;
  b.verdict_mark = 5;
  b.log_level = LogLevel::Debug;
  b.queues = 2;
  b.wire_interfaces = {"eth9"};
  b.nic_offload = "packet";
  const auto plan = plan_reload(a, b);
  EXPECT_EQ(plan.applied, (std::vector<std::string>{"daemon.log_level", "verdict.mark"}));
  EXPECT_EQ(plan.restart_required,
            (std::vector<std::string>{"daemon.nic_offload", "wire.interfaces", "worker.queues"}));
  DaemonConfig c = a;
  c.crypto = "openssl";  // SAs keep the backend they were made with
  EXPECT_EQ(plan_reload(a, c).restart_required, (std::vector<std::string>{"worker.crypto"}));
  EXPECT_TRUE(plan_reload(a, c).applied.empty());
  const auto none = plan_reload(a, a);
  EXPECT_TRUE(none.applied.empty());
  EXPECT_TRUE(none.restart_required.empty());
}

TEST(DaemonConfig, GroupMtuAndPrometheusListenerAreAppliedOnReload) {
  DaemonConfig a, b;
  b.socket_group = "adm";
  b.offload_mtu = 1400;
  b.prometheus_listen = "127.0.0.1:9781";
  const auto plan = plan_reload(a, b);
  EXPECT_EQ(plan.applied,
            (std::vector<std::string>{"control.group", "offload_device.mtu", "stats.prometheus_listen"}));
  EXPECT_TRUE(plan.restart_required.empty());
}

// The shipped file says "(reload" in the comment above exactly the keys a
// reload applies (plan_reload's live keys), and nowhere else.
TEST(DaemonConfig, ShippedCommentsMarkExactlyTheKeysAReloadApplies) {
  DaemonConfig a, b;
  b.log_level = LogLevel::Debug;
  b.socket_group = "adm";
  b.offload_mtu = 1400;
  b.verdict_mark = 1;
  b.sa_delete_req = SaDeleteReqPolicy::Notify;
  b.prometheus_listen = "127.0.0.1:9781";
  const auto live = plan_reload(a, b).applied;
  ASSERT_EQ(live.size(), 6u);
  std::istringstream in(default_config_text());
  std::string section, comment;
  std::vector<std::string> marked;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("[", 0) == 0) {
      section = line.substr(1, line.find(']') - 1);
      comment.clear();
    } else if (line.rfind("#", 0) == 0) {
      comment += line;
    } else if (const auto eq = line.find(" = "); eq != std::string::npos) {
      if (comment.find("(reload") != std::string::npos) marked.push_back(section + "." + line.substr(0, eq));
      comment.clear();
    }
  }
  std::sort(marked.begin(), marked.end());
  std::vector<std::string> expected = live;
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(marked, expected);
}

}  // namespace
}  // namespace ov2
