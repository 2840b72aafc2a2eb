// The state journal with the REAL ipsecov2d (control/state_store.h): a
// SIGKILL in the middle of churn on several connections restores exactly
// what was acknowledged (and outbound sequence numbers continue past their
// marks); a torn journal tail is discarded with a warning; damage before the
// tail refuses the state (moved aside, nothing applied); compaction and a
// clean shutdown keep everything; a batch sa.add is all or nothing, also
// from ipsecov2ctl sa add-batch.  Needs root (network namespaces).
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "control/protocol.h"
#include "control/state_store.h"
#include "daemon_harness.h"
#include "model/sa_json.h"

namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace ov2::daemon_test;

// A state directory that outlives the daemons (each DaemonInNamespace removes its own directory).
class StateDir {
 public:
  StateDir() : path_("/tmp/ov2sj" + std::to_string(getpid())) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~StateDir() { std::filesystem::remove_all(path_); }
  std::string state() const { return path_ + "/state"; }
  std::string snapshot() const { return state() + "/state.json"; }
  std::string journal() const { return state() + "/state.journal"; }
  std::vector<std::string> args() const { return {"--state-dir", state()}; }

 private:
  std::string path_;
};

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// One blocking control connection: a request, its answer.
class Connection {
 public:
  explicit Connection(const std::string& socket_path) {
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_path.c_str(), sizeof addr.sun_path - 1);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) throw std::runtime_error("connect failed");
    timeval tv{10, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~Connection() { close(fd_); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // The answer, or a discarded json when the daemon went away.
  json call(json request) {
    request["version"] = 1;
    const std::string line = request.dump() + "\n";
    size_t sent = 0;
    while (sent < line.size()) {
      const ssize_t n = send(fd_, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return json::value_t::discarded;
      sent += static_cast<size_t>(n);
    }
    return next();
  }

  // The next line the daemon sends (a monitor's events), or a discarded json.
  json next() {
    for (;;) {
      if (const size_t nl = in_.find('\n'); nl != std::string::npos) {
        json a = json::parse(in_.substr(0, nl), nullptr, false);
        in_.erase(0, nl + 1);
        return a;
      }
      char buf[65536];
      const ssize_t n = recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return json::value_t::discarded;
      in_.append(buf, static_cast<size_t>(n));
    }
  }

 private:
  int fd_ = -1;
  std::string in_;
};

json out_sa(uint32_t spi, const std::string& dst = "192.0.2.2") {
  char key[41];
  std::snprintf(key, sizeof key, "%08x00112233445566778899aabbccddeeff", spi);
  return {{"dir", "out"}, {"mode", "tunnel"},      {"src", "192.0.2.1"}, {"dst", dst},
          {"spi", spi},   {"aead", "aes-gcm-128"}, {"key", key}};
}

json sa_list(const std::string& socket_path) { return Connection(socket_path).call({{"op", "sa.list"}})["sas"]; }

json policy_list(const std::string& socket_path) {
  return Connection(socket_path).call({{"op", "policy.list"}})["policies"];
}

TEST(StateJournalDaemon, SigkillInTheMiddleOfChurnOnThreeConnectionsRestoresEveryAcknowledgedChange) {
  StateDir dir;
  std::mutex mu;
  std::map<std::string, uint32_t> acked_sas;       // handle -> spi, added and not deleted
  std::set<std::string> acked_deleted;             // handles whose deletion was acknowledged
  std::map<uint32_t, std::string> acked_policies;  // id -> SA handle
  std::set<uint32_t> maybe_spis;                   // adds in flight at the kill (answer never came)
  std::set<std::string> maybe_deleted;             // deletions in flight
  size_t maybe_policies = 0;                       // policy adds in flight (one per connection at most)
  size_t acked_count = 0;
  {
    DaemonInNamespace d('a', dir.args());
    std::atomic<bool> stop{false};
    std::vector<std::thread> workers;
    for (uint32_t t = 0; t < 3; ++t)
      workers.emplace_back([&, t] {
        Connection c(d.socket_path());
        std::vector<std::string> mine;
        for (uint32_t i = 0; !stop; ++i) {
          const uint32_t spi = 0x10000 * (t + 1) + i;
          json a = c.call({{"op", "sa.add"}, {"sa", out_sa(spi)}});
          std::lock_guard<std::mutex> lock(mu);
          if (a.is_discarded()) {
            maybe_spis.insert(spi);
            return;
          }
          ASSERT_TRUE(a["ok"].get<bool>()) << a.dump();
          acked_sas[a["handle"]] = spi;
          mine.push_back(a["handle"]);
          ++acked_count;
          if (i % 3 == 2) {  // a policy for the newest SA
            const std::string dst =
                "10." + std::to_string(t) + "." + std::to_string(i / 256 % 256) + "." + std::to_string(i % 256) + "/32";
            const json p = {
                {"dir", "out"}, {"src", "10.0.0.0/8"}, {"dst", dst}, {"action", "protect"}, {"sa", mine.back()}};
            mu.unlock();
            a = c.call({{"op", "policy.add"}, {"policy", p}});
            mu.lock();
            if (a.is_discarded()) {
              ++maybe_policies;
              return;
            }
            ASSERT_TRUE(a["ok"].get<bool>()) << a.dump();
            acked_policies[a["id"].get<uint32_t>()] = mine.back();
          }
          if (i % 4 == 3) {  // delete the oldest SA of this connection, with its policies
            const std::string victim = mine.front();
            mine.erase(mine.begin());
            mu.unlock();
            a = c.call({{"op", "sa.del"}, {"handles", {victim}}, {"force", true}});
            mu.lock();
            if (a.is_discarded()) {
              maybe_deleted.insert(victim);
              return;
            }
            ASSERT_TRUE(a["ok"].get<bool>()) << a.dump();
            acked_sas.erase(victim);
            acked_deleted.insert(victim);
            for (const auto& id : a["deleted_policies"]) acked_policies.erase(id.get<uint32_t>());
          }
        }
      });
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    ASSERT_EQ(kill(d.pid(), SIGKILL), 0);
    for (auto& w : workers) w.join();
    EXPECT_EQ(d.stop(), 128 + SIGKILL);
  }
  ASSERT_GT(acked_count, 20u) << "too little churn before the kill to prove anything";
  std::cout << "[ info ] killed after " << acked_count << " acknowledged adds; " << acked_sas.size() << " SAs, "
            << acked_policies.size() << " policies and " << acked_deleted.size() << " deletions to find again\n";

  DaemonInNamespace again('b', dir.args());
  const std::string log = again.log();
  EXPECT_THAT(log, HasSubstr("journal records of " + dir.journal()));
  std::map<std::string, uint32_t> restored;  // handle -> spi
  for (const auto& sa : sa_list(again.socket_path())) restored[sa["handle"]] = sa["spi"].get<uint32_t>();
  for (const auto& [handle, spi] : acked_sas) {
    // A deletion in flight at the kill may have become durable before its answer could go out: either is right.
    if (maybe_deleted.count(handle)) continue;
    ASSERT_TRUE(restored.count(handle)) << "acknowledged SA " << handle << " is missing after the restart\n" << log;
    EXPECT_EQ(restored[handle], spi);
  }
  for (const auto& handle : acked_deleted)
    EXPECT_FALSE(restored.count(handle)) << "deleted SA " << handle << " is back";
  size_t durable_adds = 0, durable_deletions = 0;
  for (const auto& [handle, spi] : restored) durable_adds += maybe_spis.count(spi);
  for (const auto& handle : maybe_deleted) durable_deletions += restored.count(handle) == 0 ? 1 : 0;
  std::cout << "[ info ] in flight at the kill: " << maybe_spis.size() << " adds (" << durable_adds << " durable), "
            << maybe_deleted.size() << " deletions (" << durable_deletions << " durable), " << maybe_policies
            << " policy adds\n";
  for (const auto& [handle, spi] : restored) {
    EXPECT_TRUE(acked_sas.count(handle) || maybe_spis.count(spi) || maybe_deleted.count(handle))
        << "SA " << handle << " spi " << spi << " was never acknowledged nor in flight";
  }
  std::map<uint32_t, std::string> policies;
  for (const auto& p : policy_list(again.socket_path())) policies[p["id"].get<uint32_t>()] = p["sa"];
  for (const auto& [id, handle] : acked_policies) {
    if (maybe_deleted.count(handle)) continue;  // its SA's forced deletion was in flight
    ASSERT_TRUE(policies.count(id)) << "acknowledged policy " << id << " is missing";
    EXPECT_EQ(policies[id], handle);
  }
  EXPECT_LE(policies.size(), acked_policies.size() + maybe_policies);

  // Outbound SAs continue beyond their saved mark (never below kSeqRestoreMargin), so no (key, IV) pair repeats.
  const json stats = Connection(again.socket_path()).call({{"op", "stats"}});
  size_t checked = 0;
  for (const auto& sa : stats["stats"]["sas"]) {
    if (sa["dir"] != "out") continue;
    EXPECT_GE(sa["next_seq"].get<uint64_t>(), ov2::kSeqRestoreMargin) << sa.dump();
    ++checked;
  }
  EXPECT_EQ(checked, restored.size()) << stats.dump();

  // New handles never reuse one given out before the crash (the reserved sequence).
  Connection c(again.socket_path());
  const json added = c.call({{"op", "sa.add"}, {"sa", out_sa(0x7777)}});
  ASSERT_TRUE(added["ok"].get<bool>()) << added.dump();
  const uint64_t fresh = ov2::parse_handle(added["handle"].get<std::string>());
  for (const auto& [handle, spi] : restored) EXPECT_GT(fresh >> 24, ov2::parse_handle(handle) >> 24);
  for (const auto& handle : acked_deleted) EXPECT_GT(fresh >> 24, ov2::parse_handle(handle) >> 24);
}

// Three SAs, each its own journal record; the daemon is killed, so nothing is compacted.
void three_sas_then_kill(const StateDir& dir, std::vector<std::string>* handles) {
  DaemonInNamespace d('c', dir.args());
  Connection c(d.socket_path());
  for (uint32_t spi : {0x501u, 0x502u, 0x503u}) {
    const json a = c.call({{"op", "sa.add"}, {"sa", out_sa(spi)}});
    ASSERT_TRUE(a["ok"].get<bool>()) << a.dump();
    handles->push_back(a["handle"]);
  }
  kill(d.pid(), SIGKILL);
  d.stop();
}

// The offsets of the journal's records.
std::vector<size_t> record_offsets(const std::string& bytes) {
  std::vector<size_t> offsets;
  for (size_t off = 0; off + 8 <= bytes.size();) {
    offsets.push_back(off);
    uint32_t len = 0;
    for (int i = 0; i < 4; ++i) len |= uint32_t{static_cast<unsigned char>(bytes[off + i])} << (8 * i);
    off += 8 + len;
  }
  return offsets;
}

TEST(StateJournalDaemon, ATornJournalTailIsDiscardedWithAWarningNamingTheOffsetAndTheRestIsRestored) {
  StateDir dir;
  std::vector<std::string> handles;
  three_sas_then_kill(dir, &handles);
  ASSERT_EQ(handles.size(), 3u);
  // A crash in the middle of writing a fourth record: half of it reached the file.
  const size_t end = std::filesystem::file_size(dir.journal());
  const std::string torn = ov2::encode_journal_record(R"({"op":"sa-del","handle":"0x1000000"})");
  std::ofstream(dir.journal(), std::ios::app | std::ios::binary) << torn.substr(0, torn.size() / 2);
  DaemonInNamespace d('d', dir.args());
  EXPECT_THAT(d.log(), HasSubstr(dir.journal() + ": offset " + std::to_string(end) + ": the last record"));
  EXPECT_THAT(d.log(), HasSubstr("discarded"));
  std::vector<std::string> restored;
  for (const auto& sa : sa_list(d.socket_path())) restored.push_back(sa["handle"]);
  EXPECT_EQ(restored, handles);
  // The restart compacts in the background (the start-up snapshot): once it is done (the daemon's 1 s tick
  // finishes it), a fresh journal holds only the new sequence marks of the start, the snapshot the three SAs.
  for (int i = 0; i < 100 && std::filesystem::exists(dir.journal() + ".next"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_FALSE(std::filesystem::exists(dir.journal() + ".next")) << d.log();
  const std::string journal = slurp(dir.journal());
  EXPECT_LT(journal.size(), 100u + 3 * 80u);
  EXPECT_THAT(journal, Not(HasSubstr("\"op\":\"sa\"")));
  EXPECT_THAT(journal, HasSubstr("\"op\":\"mark\""));
}

TEST(StateJournalDaemon, DamageBeforeTheJournalTailIsRefusedMovedAsideAndNothingIsApplied) {
  StateDir dir;
  std::vector<std::string> handles;
  three_sas_then_kill(dir, &handles);
  std::string bytes = slurp(dir.journal());
  const std::vector<size_t> offsets = record_offsets(bytes);
  ASSERT_GE(offsets.size(), 4u);  // header, (reservation,) three SAs
  const size_t victim = offsets[offsets.size() - 2];
  bytes[victim + 20] ^= 0x01;
  std::ofstream(dir.journal(), std::ios::trunc | std::ios::binary) << bytes;
  const std::string snapshot = slurp(dir.snapshot());

  DaemonInNamespace d('e', dir.args());
  EXPECT_THAT(d.log(), HasSubstr("refusing the saved state: " + dir.journal() + ": offset " + std::to_string(victim) +
                                 ": a record with a bad checksum"));
  EXPECT_THAT(d.log(), HasSubstr("moved aside to " + dir.snapshot() + ".bad-"));
  EXPECT_THAT(d.log(), Not(HasSubstr("00112233445566778899aabbccddeeff")));
  EXPECT_EQ(sa_list(d.socket_path()), json::array());
  // Both files kept, unchanged, for a human to look at.
  std::string journal_aside, snapshot_aside;
  for (const auto& e : std::filesystem::directory_iterator(dir.state())) {
    const std::string name = e.path().filename().string();
    if (name.rfind("state.journal.bad-", 0) == 0) journal_aside = e.path().string();
    if (name.rfind("state.json.bad-", 0) == 0) snapshot_aside = e.path().string();
  }
  ASSERT_FALSE(journal_aside.empty());
  ASSERT_FALSE(snapshot_aside.empty());
  EXPECT_EQ(slurp(journal_aside), bytes);
  EXPECT_EQ(slurp(snapshot_aside), snapshot);
}

// Adds `count` outbound SAs (SPIs from `first_spi` on) in one batch request; records them in `added`
// (handle -> SPI) and returns their handles in order (empty when refused: a test failure).
json add_batch(Connection& c, uint32_t first_spi, uint32_t count, std::map<std::string, uint32_t>& added) {
  json sas = json::array();
  for (uint32_t i = 0; i < count; ++i) sas.push_back(out_sa(first_spi + i));
  const json a = c.call({{"op", "sa.add"}, {"sas", sas}});
  EXPECT_TRUE(a["ok"].get<bool>()) << a.dump().substr(0, 300);
  if (!a["ok"].get<bool>() || a["handles"].size() != count) return json::array();
  for (uint32_t i = 0; i < count; ++i) added[a["handles"][i]] = first_spi + i;
  return a["handles"];
}

// `batches` x 1000 outbound SAs, one batch request each.
void add_batches(Connection& c, uint32_t first_spi, uint32_t batches, std::map<std::string, uint32_t>& added) {
  for (uint32_t b = 0; b < batches; ++b) ASSERT_EQ(add_batch(c, first_spi + b * 1000, 1000, added).size(), 1000u);
}

// A background compaction's journal generation becomes state.journal once the snapshot is in place
// (noticed within the daemon's 1-second tick): waits for that, at most 10 s.
bool wait_for_compaction_end(const StateDir& dir) {
  for (int i = 0; i < 100 && std::filesystem::exists(dir.journal() + ".next"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  return !std::filesystem::exists(dir.journal() + ".next");
}

TEST(StateJournalDaemon, CompactionAndACleanShutdownKeep16000BatchAddedSas) {
  StateDir dir;
  std::map<std::string, uint32_t> added;
  {
    DaemonInNamespace d('f', dir.args());
    Connection c(d.socket_path());
    // 16 x 1000 SAs (~4.6 MB of journal): the journal outgrows kMinCompactBytes and is compacted once.
    add_batches(c, 0x100000, 16, added);
    EXPECT_TRUE(wait_for_compaction_end(dir));
    EXPECT_LT(std::filesystem::file_size(dir.journal()), ov2::kMinCompactBytes) << "no compaction happened";
    EXPECT_GT(std::filesystem::file_size(dir.snapshot()), 16000u * 200);  // all 16000 SAs
    kill(d.pid(), SIGKILL);
    d.stop();
  }
  auto check = [&](DaemonInNamespace& d) {
    const json list = sa_list(d.socket_path());
    ASSERT_EQ(list.size(), added.size());
    for (const auto& sa : list) EXPECT_EQ(sa["spi"].get<uint32_t>(), added.at(sa["handle"].get<std::string>()));
  };
  {
    DaemonInNamespace d('g', dir.args());
    check(d);
    EXPECT_EQ(d.stop(), 0);
    // Its journal (the start-up snapshot's sequence marks) is smaller than the snapshot: the clean stop
    // ended the journal instead of writing a snapshot.
    EXPECT_THAT(d.log(), HasSubstr("no snapshot needed at stop"));
    EXPECT_FALSE(std::filesystem::exists(dir.journal() + ".next"));
    EXPECT_GT(std::filesystem::file_size(dir.snapshot()), 16000u * 200);
  }
  DaemonInNamespace again('h', dir.args());
  check(again);
}

// The journal a clean stop ended: whole (no torn tail), its last record a "stop" holding the exact
// next handle sequence (one above the highest of `acked`); that sequence, or 0 when it is not so.
uint64_t exact_stop_sequence(const StateDir& dir, const std::map<std::string, uint32_t>& acked) {
  std::string bytes = slurp(dir.journal());
  const ov2::JournalScan scan = ov2::scan_journal(bytes, dir.journal());
  EXPECT_EQ(scan.torn_warning, "");
  if (scan.payloads.size() < 3) {
    ADD_FAILURE() << "the journal holds " << scan.payloads.size() << " records";
    return 0;
  }
  const json last = json::parse(std::string(scan.payloads.back()));
  EXPECT_EQ(last["op"], "stop") << last.dump();
  const uint64_t stop_sequence = last.value("next_sa_sequence", uint64_t{0});
  uint64_t highest = 0;
  for (const auto& [handle, spi] : acked)
    highest = std::max<uint64_t>(highest, std::stoull(handle, nullptr, 16) >> ov2::kHandleSlotBits);
  EXPECT_EQ(stop_sequence, highest + 1) << "not the exact sequence";
  return stop_sequence;
}

// The sequence of the handle a new outbound SA gets (0 when the add is refused).
uint64_t next_handle_sequence(const std::string& socket_path, uint32_t spi) {
  const json a = Connection(socket_path).call({{"op", "sa.add"}, {"sa", out_sa(spi)}});
  EXPECT_TRUE(a.value("ok", false)) << a.dump();
  return std::stoull(a.value("handle", std::string("0")), nullptr, 16) >> ov2::kHandleSlotBits;
}

// A clean stop whose journal is not larger than the snapshot writes no
// snapshot: it journals a "stop" record with the exact handle and policy-id
// sequences and makes it durable.  The next start restores exactly the same
// SAs and policies, and the next handle continues the sequence without the
// gap a crash leaves (the journal's reservations).
TEST(StateJournalDaemon, ACleanStopEndsTheJournalWithoutASnapshotAndTheNextStartRestoresTheSameState) {
  StateDir dir;
  std::map<std::string, uint32_t> acked;  // handle -> spi
  json policies;
  uint64_t stop_sequence = 0;
  std::string snapshot_before;
  {
    DaemonInNamespace d('v', dir.args());
    Connection c(d.socket_path());
    const json handles = add_batch(c, 0x70000, 50, acked);
    ASSERT_EQ(handles.size(), 50u);
    const json p = {
        {"dir", "out"}, {"src", "10.0.0.0/8"}, {"dst", "10.9.0.0/16"}, {"action", "protect"}, {"sa", handles[7]}};
    ASSERT_TRUE(c.call({{"op", "policy.add"}, {"policy", p}})["ok"].get<bool>());
    const std::string gone = handles[3];
    ASSERT_TRUE(c.call({{"op", "sa.del"}, {"handles", {gone}}})["ok"].get<bool>());
    acked.erase(gone);
    policies = policy_list(d.socket_path());
    // The start-up snapshot (of nothing) is in place by now: the changes are in the journal only.
    for (int i = 0; i < 100 && std::filesystem::exists(dir.journal() + ".next"); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    snapshot_before = slurp(dir.snapshot());
    EXPECT_EQ(d.stop(), 0);
    EXPECT_THAT(d.log(), HasSubstr("no snapshot needed at stop"));
  }
  EXPECT_EQ(slurp(dir.snapshot()), snapshot_before) << "the clean stop rewrote the snapshot";
  EXPECT_FALSE(std::filesystem::exists(dir.journal() + ".next"));
  stop_sequence = exact_stop_sequence(dir, acked);
  ASSERT_NE(stop_sequence, 0u);
  DaemonInNamespace again('w', dir.args());
  std::map<std::string, uint32_t> restored;
  for (const auto& sa : sa_list(again.socket_path())) restored[sa["handle"]] = sa["spi"].get<uint32_t>();
  EXPECT_EQ(restored, acked) << again.log();
  EXPECT_EQ(policy_list(again.socket_path()), policies);
  EXPECT_EQ(next_handle_sequence(again.socket_path(), 0x71000), stop_sequence)
      << "the next handle skipped numbers after a clean stop";
}

// A journal larger than the snapshot (and 4 MiB) would make a clean stop write a snapshot; an idle
// daemon (no change for a second) compacts it in the background first, so the stop need not.
TEST(StateJournalDaemon, AnIdleDaemonCompactsALargeJournalSoThatTheStopWritesNoSnapshot) {
  StateDir dir;
  std::map<std::string, uint32_t> added;
  {
    DaemonInNamespace d('x', dir.args());
    Connection c(d.socket_path());
    add_batches(c, 0x200000, 16, added);  // compacted once past 4 MiB (~4.6 MB snapshot)
    ASSERT_TRUE(wait_for_compaction_end(dir));
    const auto snapshot_bytes = std::filesystem::file_size(dir.snapshot());
    add_batches(c, 0x300000, 20, added);  // ~5.8 MB more: past the snapshot, below 4 x the snapshot
    ASSERT_GT(std::filesystem::file_size(dir.journal()), snapshot_bytes);
    // Idle now: within two ticks the compaction starts, then it ends.
    for (int i = 0; i < 50 && std::filesystem::file_size(dir.snapshot()) == snapshot_bytes; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_TRUE(wait_for_compaction_end(dir));
    EXPECT_GT(std::filesystem::file_size(dir.snapshot()), snapshot_bytes) << d.log();
    EXPECT_LT(std::filesystem::file_size(dir.journal()), std::filesystem::file_size(dir.snapshot()));
    EXPECT_EQ(d.stop(), 0);
    EXPECT_THAT(d.log(), HasSubstr("no snapshot needed at stop"));
  }
  DaemonInNamespace again('y', dir.args());
  std::map<std::string, uint32_t> restored;
  for (const auto& sa : sa_list(again.socket_path())) restored[sa["handle"]] = sa["spi"].get<uint32_t>();
  EXPECT_EQ(restored.size(), 36000u);
  EXPECT_TRUE(restored == added) << again.log();
}

TEST(StateJournalDaemon, CtlAddBatchIsAllOrNothingAndPrintsTheHandlesInOrder) {
  StateDir dir;
  DaemonInNamespace d('i', dir.args());
  json sas = json::array({out_sa(0x901), out_sa(0x902), out_sa(0x903)});
  sas[1]["key"] = "0011";  // too short
  const std::string bad = temp_file(dir.state() + "/..", "bad.json", sas.dump());
  Result r = d.ctl({"sa", "add-batch", bad});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("sas[1]: "));
  EXPECT_THAT(r.err, HasSubstr("no SA of the batch was installed"));
  EXPECT_EQ(sa_list(d.socket_path()), json::array());

  sas[1] = out_sa(0x902);
  const std::string good = temp_file(dir.state() + "/..", "good.json", sas.dump());
  r = d.ctl({"sa", "add-batch", good});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json list = sa_list(d.socket_path());
  ASSERT_EQ(list.size(), 3u);
  std::string expected;
  for (const auto& sa : list) expected += sa["handle"].get<std::string>() + "\n";
  EXPECT_EQ(r.out, expected);
  EXPECT_EQ(list[2]["spi"], 0x903);
  // The same SPIs again: refused at the first entry, nothing added.
  r = d.ctl({"sa", "add-batch", good});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("sas[0]: "));
  EXPECT_EQ(sa_list(d.socket_path()).size(), 3u);
  EXPECT_THAT(d.log() + d.transcript(), Not(HasSubstr("00112233445566778899aabbccddeeff")));
}

// Sets an environment variable for the daemons started in a scope (they inherit it through ip netns exec).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) { setenv(name, value.c_str(), 1); }
  ~ScopedEnv() { unsetenv(name_); }

 private:
  const char* name_;
};

TEST(StateJournalDaemon, SigkillDuringBackgroundCompactionsLosesNothingAcknowledged) {
  StateDir dir;
  std::map<std::string, uint32_t> acked;  // handle -> spi
  std::set<uint32_t> in_flight;
  size_t kills_during_compaction = 0;
  uint32_t spi = 0x40000;
  // A compaction every 64 KiB of journal, each snapshot held 150 ms before it is renamed into place:
  // most kills land while one runs (state.journal.next exists).
  ScopedEnv every("OV2_TEST_COMPACT_EVERY_BYTES", "65536");
  ScopedEnv delay("OV2_TEST_COMPACT_DELAY_MS", "150");
  for (int round = 0; round < 4; ++round) {
    {
      DaemonInNamespace d(static_cast<char>('m' + round), dir.args());
      std::atomic<bool> stop{false};
      std::mutex mu;
      std::thread worker([&] {
        Connection c(d.socket_path());
        while (!stop) {
          json sas = json::array();
          std::vector<uint32_t> spis;
          for (int i = 0; i < 20; ++i) {
            spis.push_back(++spi);
            sas.push_back(out_sa(spi));
          }
          const json a = c.call({{"op", "sa.add"}, {"sas", sas}});
          std::lock_guard<std::mutex> lock(mu);
          if (a.is_discarded()) {
            in_flight.insert(spis.begin(), spis.end());
            return;
          }
          ASSERT_TRUE(a["ok"].get<bool>()) << a.dump().substr(0, 300);
          for (size_t i = 0; i < spis.size(); ++i) acked[a["handles"][i]] = spis[i];
        }
      });
      std::this_thread::sleep_for(std::chrono::milliseconds(400 + 130 * round));
      const bool during = std::filesystem::exists(dir.journal() + ".next");
      ASSERT_EQ(kill(d.pid(), SIGKILL), 0);
      stop = true;
      worker.join();
      d.stop();
      kills_during_compaction += during ? 1 : 0;
    }
    DaemonInNamespace again(static_cast<char>('r' + round), dir.args());
    std::map<std::string, uint32_t> restored;
    for (const auto& sa : sa_list(again.socket_path())) restored[sa["handle"]] = sa["spi"].get<uint32_t>();
    for (const auto& [handle, s] : acked) {
      ASSERT_TRUE(restored.count(handle))
          << "round " << round << ": acknowledged SA " << handle << " is missing after the restart\n"
          << again.log();
      EXPECT_EQ(restored[handle], s);
    }
    for (const auto& [handle, s] : restored) {
      EXPECT_TRUE(acked.count(handle) || in_flight.count(s)) << "SA " << handle << " was never acknowledged";
      acked[handle] = s;  // a batch in flight that became durable is part of the state from now on
    }
    EXPECT_EQ(again.stop(), 0);
  }
  std::cout << "[ info ] " << acked.size() << " SAs kept through 4 SIGKILLs, " << kills_during_compaction
            << " of them during a background compaction\n";
  EXPECT_GE(kills_during_compaction, 1u) << "no kill landed in a compaction: the test proved nothing about it";
}

// A daemon on `dir` (network namespace letter `ns`) that adds `count` outbound SAs in one batch and
// stops cleanly.
void add_batch_and_stop(const StateDir& dir, char ns, uint32_t first_spi, uint32_t count,
                        std::map<std::string, uint32_t>& acked) {
  DaemonInNamespace d(ns, dir.args());
  Connection c(d.socket_path());
  ASSERT_EQ(add_batch(c, first_spi, count, acked).size(), count);
  EXPECT_EQ(d.stop(), 0);
}

// The start-up snapshot is written in the background (StateStore::compact_after_load): a SIGKILL
// while it is still being written (held 10 s here) loses nothing acknowledged after the start, and the
// outbound SAs' sequence numbers still move past what the killed run started at (the new marks were
// journaled before the socket opened).
TEST(StateJournalDaemon, SigkillWhileTheStartUpSnapshotIsWrittenLosesNothingAndSequenceNumbersMoveOn) {
  StateDir dir;
  std::map<std::string, uint32_t> acked;  // handle -> spi
  ASSERT_NO_FATAL_FAILURE(add_batch_and_stop(dir, 's', 0x50000, 300, acked));
  std::map<std::string, uint64_t> started_at;  // outbound handle -> next_seq right after the second start
  {
    ScopedEnv delay("OV2_TEST_COMPACT_DELAY_MS", "10000");  // killed long before it ends
    DaemonInNamespace d('t', dir.args());
    ASSERT_TRUE(std::filesystem::exists(dir.journal() + ".next"))
        << "the start-up snapshot is not being written in the background\n"
        << d.log();
    EXPECT_THAT(d.log(), HasSubstr("start-up snapshot of 300 SAs is written in the background"));
    Connection c(d.socket_path());
    const json stats = c.call({{"op", "stats"}});
    for (const auto& sa : stats["stats"]["sas"]) started_at[sa["handle"]] = sa["next_seq"].get<uint64_t>();
    ASSERT_EQ(started_at.size(), 300u);
    ASSERT_EQ(add_batch(c, 0x60000, 40, acked).size(), 40u);
    const std::string gone = acked.begin()->first;
    ASSERT_TRUE(c.call({{"op", "sa.del"}, {"handles", {gone}}})["ok"].get<bool>());
    acked.erase(gone);
    started_at.erase(gone);
    ASSERT_TRUE(std::filesystem::exists(dir.journal() + ".next")) << "the start-up snapshot finished too early";
    ASSERT_EQ(kill(d.pid(), SIGKILL), 0);
    d.stop();
  }
  DaemonInNamespace again('u', dir.args());
  EXPECT_THAT(again.log(), HasSubstr("replayed after"));
  std::map<std::string, uint32_t> restored;
  for (const auto& sa : sa_list(again.socket_path())) restored[sa["handle"]] = sa["spi"].get<uint32_t>();
  EXPECT_EQ(restored, acked) << again.log();
  const json stats = Connection(again.socket_path()).call({{"op", "stats"}});
  size_t checked = 0;
  for (const auto& sa : stats["stats"]["sas"]) {
    auto it = started_at.find(sa["handle"]);
    if (it == started_at.end()) continue;
    // Past everything the killed run could have sent from its start (marks journaled before the socket opened).
    EXPECT_GT(sa["next_seq"].get<uint64_t>(), it->second + ov2::kSeqRestoreMargin - ov2::kSeqMarkStep) << sa.dump();
    ++checked;
  }
  EXPECT_EQ(checked, 299u);
  EXPECT_EQ(again.stop(), 0);
}

// A clean stop while the start-up snapshot is still being written (held 10 s here) does not wait
// for it: the snapshot is cancelled (state.json stays the one loaded), the stop record goes to the
// new journal generation, which is folded into state.journal; the next start restores every change
// and continues the handle sequence exactly.
TEST(StateJournalDaemon, ACleanStopCancelsTheStartUpSnapshotAndTheNextStartRestoresEverything) {
  StateDir dir;
  std::map<std::string, uint32_t> acked;  // handle -> spi
  ASSERT_NO_FATAL_FAILURE(add_batch_and_stop(dir, 'k', 0x58000, 200, acked));
  const std::string snapshot = slurp(dir.snapshot());
  {
    ScopedEnv delay("OV2_TEST_COMPACT_DELAY_MS", "10000");  // still being written when the stop comes
    DaemonInNamespace d('l', dir.args());
    ASSERT_TRUE(std::filesystem::exists(dir.journal() + ".next"))
        << "the start-up snapshot is not being written in the background\n"
        << d.log();
    Connection c(d.socket_path());
    ASSERT_EQ(add_batch(c, 0x59000, 30, acked).size(), 30u);
    const std::string gone = acked.begin()->first;
    ASSERT_TRUE(c.call({{"op", "sa.del"}, {"handles", {gone}}})["ok"].get<bool>());
    acked.erase(gone);
    ASSERT_TRUE(std::filesystem::exists(dir.journal() + ".next")) << "the start-up snapshot finished too early";
    EXPECT_EQ(d.stop(), 0);
    EXPECT_THAT(d.log(), HasSubstr("the background snapshot was cancelled, its journal generation folded"));
  }
  EXPECT_EQ(slurp(dir.snapshot()), snapshot) << "the cancelled snapshot replaced state.json";
  EXPECT_FALSE(std::filesystem::exists(dir.snapshot() + ".tmp"));
  EXPECT_FALSE(std::filesystem::exists(dir.journal() + ".next"));
  EXPECT_THAT(slurp(dir.journal()), HasSubstr("\"folded\""));  // its header names the folded generation
  const uint64_t stop_sequence = exact_stop_sequence(dir, acked);
  ASSERT_NE(stop_sequence, 0u);
  DaemonInNamespace again('m', dir.args());
  EXPECT_THAT(again.log(), HasSubstr("start-up snapshot of 229 SAs is written in the background"));
  std::map<std::string, uint32_t> restored;
  for (const auto& sa : sa_list(again.socket_path())) restored[sa["handle"]] = sa["spi"].get<uint32_t>();
  EXPECT_EQ(restored, acked) << again.log();
  EXPECT_EQ(next_handle_sequence(again.socket_path(), 0x5a000), stop_sequence);
  EXPECT_EQ(again.stop(), 0);
}

// The state directory on a small tmpfs in a mount namespace of this test: filled up, the journal
// cannot grow (ENOSPC) and neither can a snapshot be written.
class FullStateDisk {
 public:
  explicit FullStateDisk(const std::string& mountpoint) : mountpoint_(mountpoint) {
    own_ns_ = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    if (own_ns_ < 0 || unshare(CLONE_NEWNS) != 0) throw std::runtime_error("unshare(CLONE_NEWNS) failed");
    if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
      throw std::runtime_error("mount --make-rprivate / failed");
    std::filesystem::create_directories(mountpoint_);
    if (mount("ov2-full", mountpoint_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=256k,mode=0700") != 0)
      throw std::runtime_error("mount tmpfs failed");
  }
  ~FullStateDisk() {
    umount2(mountpoint_.c_str(), MNT_DETACH);
    if (own_ns_ >= 0) {
      setns(own_ns_, CLONE_NEWNS);  // back to the namespace the test started in
      close(own_ns_);
    }
  }
  // Leaves about `left` bytes free.
  void fill(size_t left) {
    struct statvfs st {};
    statvfs(mountpoint_.c_str(), &st);
    const size_t free_bytes = st.f_bavail * st.f_frsize;
    const std::string filler(free_bytes > left ? free_bytes - left : 0, 'x');
    std::ofstream(mountpoint_ + "/filler", std::ios::binary) << filler;
  }
  void make_room() { std::filesystem::remove(mountpoint_ + "/filler"); }

 private:
  std::string mountpoint_;
  int own_ns_ = -1;
};

TEST(StateJournalDaemon, DiskFullAnswersNotSavedNamesTheFileAndARestartRestoresExactlyTheAcknowledged) {
  StateDir dir;
  FullStateDisk disk(dir.state());
  std::map<std::string, uint32_t> acked;
  std::vector<std::string> unsaved;
  std::string not_saved_message;
  {
    DaemonInNamespace d('w', dir.args());
    Connection c(d.socket_path());
    for (uint32_t spi = 0x600; spi < 0x604; ++spi) {
      const json a = c.call({{"op", "sa.add"}, {"sa", out_sa(spi)}});
      ASSERT_TRUE(a["ok"].get<bool>()) << a.dump();
      acked[a["handle"]] = spi;
    }
    Connection monitor(d.socket_path());
    ASSERT_TRUE(monitor.call({{"op", "monitor"}})["ok"].get<bool>());
    disk.fill(12 * 1024);
    uint32_t spi = 0x700;
    for (; spi < 0x900; ++spi) {
      const json a = c.call({{"op", "sa.add"}, {"sa", out_sa(spi)}});
      ASSERT_TRUE(a.is_object()) << "the daemon went away";
      if (a["ok"].get<bool>()) {
        acked[a["handle"]] = spi;
        continue;
      }
      EXPECT_EQ(a["error"]["code"], "not-saved") << a.dump();
      not_saved_message = a["error"]["message"];
      ASSERT_TRUE(a.contains("applied")) << a.dump();
      unsaved.push_back(a["applied"]["handle"]);  // in effect, but not durable
      break;
    }
    ASSERT_FALSE(not_saved_message.empty()) << "the journal never ran out of space";
    EXPECT_THAT(not_saved_message, HasSubstr(dir.journal()));
    EXPECT_THAT(not_saved_message, HasSubstr("No space left on device"));
    EXPECT_THAT(not_saved_message, HasSubstr("NOT saved"));
    // Monitors hear of the change only after its verdict, and of the verdict.
    std::vector<std::string> events;
    for (json e = monitor.next(); e.is_object(); e = monitor.next()) {
      events.push_back(e["event"]);
      if (e["event"] == "state-not-saved") {
        EXPECT_THAT(e["message"].get<std::string>(), HasSubstr("No space left on device"));
        break;
      }
    }
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back(), "state-not-saved");
    // Every further change is not-saved too (the journal must not get a gap), also through ipsecov2ctl.
    const json again = c.call({{"op", "sa.add"}, {"sa", out_sa(0x950)}});
    EXPECT_EQ(again["error"]["code"], "not-saved") << again.dump();
    unsaved.push_back(again["applied"]["handle"]);
    const std::string key = d.key_file("gcm", "0x0000095100112233445566778899aabbccddeeff\n");
    const Result r = d.ctl({"sa", "add", "--dir", "out", "--mode", "tunnel", "--src", "192.0.2.1", "--dst", "192.0.2.2",
                            "--spi", "0x951", "--aead", "aes-gcm-128", "--key-file", key});
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_THAT(r.err, HasSubstr("ipsecov2ctl: error: "));
    EXPECT_THAT(r.err, HasSubstr("No space left on device"));
    // Reading still answers ok; the unsaved SAs are in effect in the running daemon.
    EXPECT_EQ(sa_list(d.socket_path()).size(), acked.size() + unsaved.size() + 1);
    EXPECT_THAT(d.log(), HasSubstr("state not saved: "));
    EXPECT_THAT(d.log(), HasSubstr("cannot append to the journal " + dir.journal() + ": No space left on device"));
    EXPECT_THAT(d.log(), Not(HasSubstr("00112233445566778899aabbccddeeff")));
    kill(d.pid(), SIGKILL);
    d.stop();
  }
  disk.make_room();
  DaemonInNamespace d('x', dir.args());
  std::map<std::string, uint32_t> restored;
  for (const auto& sa : sa_list(d.socket_path())) restored[sa["handle"]] = sa["spi"].get<uint32_t>();
  EXPECT_EQ(restored, acked) << d.log();
  // With room again, changes are saved and acknowledged as before.
  const json a = Connection(d.socket_path()).call({{"op", "sa.add"}, {"sa", out_sa(0x960)}});
  EXPECT_TRUE(a["ok"].get<bool>()) << a.dump();
}

}  // namespace

namespace {

// Every entry of the map `name` that daemon `pid` holds, as key bytes -> value bytes.
std::map<std::string, std::string> map_contents(pid_t pid, const std::string& name, uint32_t key_size,
                                                uint32_t value_size) {
  std::map<std::string, std::string> out;
  const int fd = bpf_map_fd_of(pid, name, key_size, value_size);
  EXPECT_GE(fd, 0) << name << " not found";
  if (fd < 0) return out;
  std::string key(key_size, '\0'), next(key_size, '\0'), value(value_size, '\0');
  const void* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, next.data()) == 0) {
    if (bpf_map_lookup_elem(fd, next.data(), value.data()) == 0) out[next] = value;
    key = next;
    prev = key.data();
  }
  close(fd);
  return out;
}

json in_sa(uint32_t spi, const std::string& dst, bool udp) {
  json sa = out_sa(spi, dst);
  sa["dir"] = "in";
  sa["src"] = dst.find(':') != std::string::npos ? "2001:db8::99" : "192.0.2.99";
  if (udp) {
    sa["encap"] = "udp";
    sa["encap-sport"] = 4500;
    sa["encap-dport"] = 4500 + spi % 3;
  }
  return sa;
}

}  // namespace

// The restore writes ov2_wire's maps in batches (BpfPrograms::put_new_inbound_sas) where the adds
// wrote one entry each: the restarted daemon's sa_map and inbound_dests hold exactly the same
// entries, byte for byte, and its SA list is the same.  Inbound SAs to three addresses (IPv4 and
// IPv6), some UDP-encapsulated, some deleted again (holes in the slots), outbound ones among them.
TEST(StateJournalDaemon, ARestoreRebuildsExactlyTheWireMapsAndTheSaListTheAddsMade) {
  StateDir dir;
  const std::vector<std::string> dsts = {"192.0.2.1", "192.0.2.9", "2001:db8::1"};
  std::map<std::string, std::string> sa_map, dests;
  json list;
  {
    DaemonInNamespace d('w', dir.args());
    Connection c(d.socket_path());
    std::vector<std::string> inbound;
    for (uint32_t b = 0; b < 3; ++b) {
      json sas = json::array();
      for (uint32_t i = 0; i < 1000; ++i) {
        const uint32_t spi = 0x10000 + b * 1000 + i;
        sas.push_back(i % 5 == 4 ? out_sa(spi) : in_sa(spi, dsts[i % 3], i % 4 == 0));
      }
      const json a = c.call({{"op", "sa.add"}, {"sas", sas}});
      ASSERT_TRUE(a.value("ok", false)) << a.dump().substr(0, 300);
      for (uint32_t i = 0; i < 1000; ++i)
        if (i % 5 != 4) inbound.push_back(a["handles"][i]);
    }
    for (uint32_t i = 0; i < 20; ++i) {  // single adds: the per-SA put
      const json a = c.call({{"op", "sa.add"}, {"sa", in_sa(0x20000 + i, dsts[i % 3], i % 2 == 0)}});
      ASSERT_TRUE(a.value("ok", false)) << a.dump();
    }
    json doomed = json::array();
    for (size_t i = 0; i < inbound.size(); i += 7) doomed.push_back(inbound[i]);
    ASSERT_TRUE(c.call({{"op", "sa.del"}, {"handles", doomed}}).value("ok", false));
    sa_map = map_contents(d.pid(), "sa_map", sizeof(ov2_sa_key), sizeof(ov2_sa_value));
    dests = map_contents(d.pid(), "inbound_dests", sizeof(ov2_sa_key), sizeof(ov2_dest_sas));
    list = sa_list(d.socket_path());
    ASSERT_EQ(sa_map.size(), inbound.size() - doomed.size() + 20);
    ASSERT_EQ(dests.size(), 3u);
    EXPECT_EQ(d.stop(), 0);
  }
  DaemonInNamespace again('x', dir.args());
  EXPECT_THAT(again.log(), HasSubstr("restored " + std::to_string(list.size()) + " SAs"));
  EXPECT_TRUE(map_contents(again.pid(), "sa_map", sizeof(ov2_sa_key), sizeof(ov2_sa_value)) == sa_map)
      << "the restored daemon's sa_map differs from the one the adds made";
  EXPECT_TRUE(map_contents(again.pid(), "inbound_dests", sizeof(ov2_sa_key), sizeof(ov2_dest_sas)) == dests);
  EXPECT_EQ(sa_list(again.socket_path()), list);
}
