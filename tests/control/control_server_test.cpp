// The control socket server: framing and limits (garbage, truncated,
// oversized, slow clients, connection cap), file modes, stale sockets.
// Runs the real server on a socket in a private temporary directory.
#include "control/control_server.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <functional>
#include <thread>

#include "control/control_client.h"
#include "control/request_handler.h"
#include "fake_engine.h"

namespace ov2 {
namespace {

using nlohmann::json;
using test::FakeEngine;
using ::testing::HasSubstr;

class ServerFixture : public ::testing::Test {
 protected:
  void start(ControlServerOptions opts = {}, const std::function<void(ControlServer&)>& configure = {}) {
    char tmpl[] = "/tmp/ov2ctl-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    opts.path = base_ + "/run/ctl.sock";  // run/ does not exist: the server creates it
    path_ = opts.path;
    server_ = std::make_unique<ControlServer>(opts, [this](std::string_view l) { return handler_.handle_line(l); });
    if (configure) configure(*server_);
    stop_fd_ = eventfd(0, EFD_CLOEXEC);
    thread_ = std::thread([this] { server_->run(stop_fd_); });
  }
  void TearDown() override {
    if (thread_.joinable()) {
      uint64_t one = 1;
      (void)!write(stop_fd_, &one, sizeof one);
      thread_.join();
    }
    server_.reset();
    if (stop_fd_ >= 0) close(stop_fd_);
    if (!base_.empty()) std::filesystem::remove_all(base_);
  }

  // A raw connection: send bytes, read what comes back until EOF or timeout.
  int raw_connect() {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, path_.c_str());
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    timeval tv{3, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
  }
  static void send_all(int fd, const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      const ssize_t n = send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;  // the server may close early (oversized)
      off += static_cast<size_t>(n);
    }
  }
  static std::string read_line(int fd) {
    std::string line;
    char c;
    while (recv(fd, &c, 1, 0) == 1) {
      if (c == '\n') return line;
      line += c;
    }
    return line;
  }
  static bool closed_by_peer(int fd) {
    char c;
    return recv(fd, &c, 1, 0) == 0;
  }

  FakeEngine engine_;
  ControlPlane plane_{engine_, 64};
  RequestHandler handler_{plane_};
  std::unique_ptr<ControlServer> server_;
  std::thread thread_;
  int stop_fd_ = -1;
  std::string base_, path_;
};

TEST_F(ServerFixture, SocketIsGroupOnlyInA0750DirectoryAndRemovedOnShutdown) {
  start();
  struct stat st {};
  ASSERT_EQ(stat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  ASSERT_EQ(stat((base_ + "/run").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0750u);
  TearDown();
  EXPECT_NE(access(path_.c_str(), F_OK), 0);
}

TEST_F(ServerFixture, ClientGetsAnswersForSeveralRequestsOnOneConnection) {
  start();
  ControlClient client(path_);
  json caps = client.call({{"op", "caps"}});
  EXPECT_TRUE(caps["ok"].get<bool>());
  json list = client.call({{"op", "sa.list"}});
  EXPECT_TRUE(list["ok"].get<bool>());
  EXPECT_TRUE(list["sas"].empty());
}

TEST_F(ServerFixture, GarbageGetsAnErrorAndTheConnectionKeepsWorking) {
  start();
  const int fd = raw_connect();
  send_all(fd, "\x01\x02 garbage }{\n");
  json a = json::parse(read_line(fd));
  EXPECT_FALSE(a["ok"].get<bool>());
  EXPECT_EQ(a["error"]["code"], "invalid-argument");
  send_all(fd, "{\"version\":7,\"op\":\"caps\"}\n");
  EXPECT_EQ(json::parse(read_line(fd))["error"]["code"], "unsupported");
  send_all(fd, "{\"version\":1,\"op\":\"caps\"}\n");
  EXPECT_TRUE(json::parse(read_line(fd))["ok"].get<bool>());
  close(fd);
  EXPECT_TRUE(engine_.add_calls.empty());
}

TEST_F(ServerFixture, TruncatedRequestFromAVanishingClientChangesNothing) {
  start();
  int fd = raw_connect();
  send_all(fd, R"({"version":1,"op":"sa.add","sa":{"dir":"in","mode":"tunnel")");
  close(fd);
  ControlClient client(path_);
  EXPECT_TRUE(client.call({{"op", "sa.list"}})["sas"].empty());
  EXPECT_TRUE(engine_.add_calls.empty());
}

TEST_F(ServerFixture, OversizedRequestIsRefusedAndTheConnectionClosed) {
  start();
  const int fd = raw_connect();
  send_all(fd, "{\"version\":1,\"op\":\"caps\",\"pad\":\"" + std::string(kMaxRequestBytes + 10, 'a') + "\"}\n");
  json a = json::parse(read_line(fd));
  EXPECT_EQ(a["error"]["code"], "too-large");
  EXPECT_TRUE(closed_by_peer(fd));
  close(fd);
  ControlClient client(path_);
  EXPECT_TRUE(client.call({{"op", "caps"}})["ok"].get<bool>());
}

TEST_F(ServerFixture, SlowClientIsTimedOutAndOthersAreServed) {
  ControlServerOptions opts;
  opts.read_timeout_ms = 200;
  start(opts);
  const int slow = raw_connect();
  send_all(slow, "{\"version\":1,");
  ControlClient client(path_);
  EXPECT_TRUE(client.call({{"op", "caps"}})["ok"].get<bool>());
  json a = json::parse(read_line(slow));  // arrives after ~200 ms
  EXPECT_EQ(a["error"]["code"], "timeout");
  EXPECT_TRUE(closed_by_peer(slow));
  close(slow);
}

// A client trickling a request a byte at a time does not buy more time with
// each byte (slowloris): it is cut off kReadTimeoutMs after it connected,
// and real requests are answered meanwhile.  Before the fix every byte read
// restarted the timeout and such a client held its slot for ever.
TEST_F(ServerFixture, TricklingClientIsCutOffAtTheReadTimeoutWhileOthersAreServed) {
  ControlServerOptions opts;
  opts.read_timeout_ms = 300;
  start(opts);
  const int slow = raw_connect();
  const std::string request = "{\"version\":1,\"op\":\"caps\",\"pad\":\"" + std::string(200, 'x') + "\"}\n";
  std::atomic<bool> cut{false};
  const auto t0 = std::chrono::steady_clock::now();
  std::thread trickle([&] {
    for (char ch : request) {  // one byte every 20 ms: 4+ s for the whole request
      if (cut || send(slow, &ch, 1, MSG_NOSIGNAL) != 1) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ControlClient client(path_);
  const auto c0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(client.call({{"op", "caps"}})["ok"].get<bool>());
  EXPECT_LT(std::chrono::steady_clock::now() - c0, std::chrono::milliseconds(200)) << "the trickler held the server";
  const std::string answer = read_line(slow);  // the timeout answer, then EOF
  const auto took = std::chrono::steady_clock::now() - t0;
  cut = true;
  trickle.join();
  ASSERT_FALSE(answer.empty());
  EXPECT_EQ(json::parse(answer)["error"]["code"], "timeout");
  EXPECT_TRUE(closed_by_peer(slow));
  EXPECT_GE(took, std::chrono::milliseconds(250));
  EXPECT_LT(took, std::chrono::milliseconds(1500)) << "each byte restarted the read timeout";
  close(slow);
}

TEST_F(ServerFixture, ConnectionsBeyondTheCapAreTurnedAwayWhileEveryOneIsMidRequest) {
  ControlServerOptions opts;
  opts.max_connections = 2;
  start(opts);
  const int a = raw_connect();
  const int b = raw_connect();
  // Make sure the server has accepted both, then leave each in the middle of a request.
  send_all(a, "{\"version\":1,\"op\":\"caps\"}\n");
  read_line(a);
  send_all(b, "{\"version\":1,\"op\":\"caps\"}\n");
  read_line(b);
  send_all(a, "{\"version\":1,");
  send_all(b, "{\"version\":1,");
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const int c = raw_connect();
  json refused = json::parse(read_line(c));
  EXPECT_EQ(refused["error"]["code"], "busy");
  close(c);
  close(a);
  close(b);
}

TEST_F(ServerFixture, WhenFullTheOldestIdleConnectionMakesRoom) {
  ControlServerOptions opts;
  opts.max_connections = 2;
  start(opts);
  const int a = raw_connect();
  const int b = raw_connect();
  send_all(a, "{\"version\":1,\"op\":\"caps\"}\n");
  read_line(a);
  send_all(b, "{\"version\":1,\"op\":\"caps\"}\n");
  read_line(b);
  // Both are idle now; a third caller gets served and the oldest idle one goes.
  const int c = raw_connect();
  send_all(c, "{\"version\":1,\"op\":\"caps\"}\n");
  EXPECT_EQ(json::parse(read_line(c))["ok"], true);
  json evicted = json::parse(read_line(a));
  EXPECT_EQ(evicted["error"]["code"], "busy");
  EXPECT_THAT(evicted["error"]["message"].get<std::string>(), HasSubstr("closed to make room"));
  send_all(b, "{\"version\":1,\"op\":\"caps\"}\n");
  EXPECT_EQ(json::parse(read_line(b))["ok"], true) << "the newer idle connection stays";
  close(c);
  close(a);
  close(b);
}

TEST_F(ServerFixture, StaleSocketIsReplacedButALiveDaemonIsNot) {
  start();
  ControlServerOptions second;
  second.path = path_;
  try {
    ControlServer dup(second, [](std::string_view) { return std::string(); });
    FAIL() << "a second server took over a live socket";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("another ipsecov2d is serving"));
  }
  // A leftover socket file nobody listens on is removed and rebound.
  const std::string stale = base_ + "/stale.sock";
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, stale.c_str());
  const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  close(fd);
  ControlServerOptions third;
  third.path = stale;
  EXPECT_NO_THROW(ControlServer(third, [](std::string_view) { return std::string(); }));
}

// Counts the control plane's changes (what ServiceState::change_count does in the daemon).
struct ChangeCounter : ControlPlane::Listener {
  std::atomic<uint64_t> n{0};
  void on_change(const ChangeEvent&) override { ++n; }
};

TEST_F(ServerFixture, WhenTheChangesCannotBeSavedOnlyTheAnswersOfChangingRequestsBecomeNotSaved) {
  ChangeCounter changes;
  plane_.add_listener(&changes);
  std::atomic<bool> disk_full{true};
  std::atomic<int> verdicts{0};
  start({}, [&](ControlServer& server) {
    server.set_before_answers(
        [&] {
          ++verdicts;
          return disk_full ? std::string("cannot write /x/state.journal: No space left on device") : std::string();
        },
        [&] { return changes.n.load(); });
  });
  const std::string sa = R"({"dir":"out","mode":"tunnel","src":"192.0.2.1","dst":"192.0.2.2","aead":"aes-gcm-128",)"
                         R"("key":"000102030405060708090a0b0c0d0e0f10111213","spi":)";
  const int fd = raw_connect();
  // Pipelined in one write: a change, a read, a refused change, another change.
  send_all(fd, R"({"version":1,"op":"sa.add","sa":)" + sa + "4096}}\n" + R"({"version":1,"op":"sa.list"})" + "\n" +
                   R"({"version":1,"op":"sa.add","sa":{"dir":"sideways"}})" + "\n" +
                   R"({"version":1,"op":"sa.add","sa":)" + sa + "4097}}\n");
  const json first = json::parse(read_line(fd));
  EXPECT_EQ(first["ok"], false);
  EXPECT_EQ(first["error"]["code"], "not-saved");
  EXPECT_THAT(first["error"]["message"].get<std::string>(), HasSubstr("No space left on device"));
  ASSERT_TRUE(first["applied"].contains("handle")) << first.dump();  // in effect: the handle it got
  EXPECT_FALSE(first["applied"].contains("ok"));
  const json list = json::parse(read_line(fd));
  EXPECT_EQ(list["ok"], true) << list.dump();  // a read is answered as always
  const json refused = json::parse(read_line(fd));
  EXPECT_EQ(refused["ok"], false);
  EXPECT_NE(refused["error"]["code"], "not-saved") << refused.dump();  // its own error, unchanged
  const json fourth = json::parse(read_line(fd));
  EXPECT_EQ(fourth["error"]["code"], "not-saved") << fourth.dump();
  EXPECT_EQ(plane_.sas().list().size(), 2u);
  // Durable again: ok as before.
  disk_full = false;
  send_all(fd, R"({"version":1,"op":"sa.add","sa":)" + sa + "4098}}\n");
  const json fifth = json::parse(read_line(fd));
  EXPECT_EQ(fifth["ok"], true) << fifth.dump();
  EXPECT_GE(verdicts.load(), 2);
  close(fd);
  uint64_t one = 1;
  (void)!write(stop_fd_, &one, sizeof one);
  thread_.join();
  plane_.remove_listener(&changes);
}

TEST(ControlClient, MissingDaemonGivesAHint) {
  try {
    ControlClient client("/tmp/ov2-no-such-dir/ipsecov2.sock");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(
        e.what(),
        "cannot connect to /tmp/ov2-no-such-dir/ipsecov2.sock: No such file or directory (is ipsecov2d running?)");
  }
}

}  // namespace
}  // namespace ov2
