// The state file (control/state_store.h) and restoring it into a control plane:
// round trip with keys, file and directory modes, atomic replacement, every
// kind of bad file refused with the file name and the problem (never key
// bytes), and ControlPlane::restore keeping handles/ids, continuing the
// sequences and rolling back completely when the engine fails midway.
#include "control/state_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "control/control_plane.h"
#include "control/state_json_writer.h"
#include "error_of.h"
#include "fake_engine.h"
#include "model/sa_json.h"
#include "policy_builder.h"

namespace ov2 {
namespace {

using test::error_of;
using test::FakeEngine;
using test::gcm_sa;
using test::protect;
using ::testing::HasSubstr;
using ::testing::Not;

const char* kKeyHex = "000102030405060708090a0b0c0d0e0f10111213";  // gcm_sa's key

// Two SAs (handles of sequence 3 and 5), a bundle-free tunnel, two policies.
DaemonState sample_state() {
  DaemonState s;
  s.next_sa_sequence = 7;
  s.next_policy_id = 9;
  s.sas.push_back({(uint64_t{3} << 24) | 0, gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x1001),
                   uint64_t{5} << 16});
  s.sas.push_back({(uint64_t{5} << 24) | 2, gcm_sa(Direction::In, Mode::Tunnel, "192.0.2.2", "192.0.2.1", 0x2001), 0});
  s.policies.push_back({4, protect(Direction::Out, "10.1.0.0/24", "10.2.0.0/24", s.sas[0].handle)});
  s.policies.push_back({8, protect(Direction::In, "10.2.0.0/24", "10.1.0.0/24", s.sas[1].handle)});
  return s;
}

class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() / ("ov2-state-test-" + std::to_string(getpid()));
    std::filesystem::remove_all(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

TEST(StateFile, RoundTripKeepsHandlesIdsSequencesMarksAndKeys) {
  const DaemonState s = sample_state();
  std::string text = serialize_state(s);
  EXPECT_THAT(text, HasSubstr(kKeyHex));  // keys in hex, like the kernel SAD keeps them
  const DaemonState back = parse_state(text, "state.json");
  EXPECT_EQ(back.next_sa_sequence, 7u);
  EXPECT_EQ(back.next_policy_id, 9u);
  ASSERT_EQ(back.sas.size(), 2u);
  EXPECT_EQ(back.sas[0].handle, s.sas[0].handle);
  EXPECT_EQ(back.sas[1].handle, s.sas[1].handle);
  EXPECT_EQ(back.sas[0].seq_mark, uint64_t{5} << 16);
  EXPECT_EQ(back.sas[0].spec.spi, 0x1001u);
  EXPECT_EQ(back.sas[0].spec.enc, EncAlg::AesGcm128);
  ASSERT_EQ(back.sas[0].spec.enc_key.size(), 20u);
  EXPECT_TRUE(std::equal(back.sas[0].spec.enc_key.span().begin(), back.sas[0].spec.enc_key.span().end(),
                         s.sas[0].spec.enc_key.span().begin()));
  ASSERT_EQ(back.policies.size(), 2u);
  EXPECT_EQ(back.policies[1].id, 8u);
  EXPECT_EQ(back.policies[1].spec.sa_handle, s.sas[1].handle);
  wipe_string(text);
  EXPECT_TRUE(text.empty());
}

TEST(StateFile, CbcHmacSaRoundTripsBothKeys) {
  DaemonState s;
  s.next_sa_sequence = 2;
  SaSpec sa = gcm_sa(Direction::Out, Mode::Transport, "192.0.2.1", "192.0.2.2", 0x777);
  sa.enc = EncAlg::AesCbc128;
  sa.enc_key = SecureBytes::from_hex("cb0cb0cb0cb0cb0cb0cb0cb0cb0cb0cb");
  sa.auth = AuthAlg::HmacSha256;
  sa.auth_key = SecureBytes::from_hex("aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11");
  s.sas.push_back({uint64_t{1} << 24, sa, 0});
  const DaemonState back = parse_state(serialize_state(s), "x");
  ASSERT_EQ(back.sas.size(), 1u);
  EXPECT_EQ(back.sas[0].spec.auth, AuthAlg::HmacSha256);
  EXPECT_EQ(back.sas[0].spec.auth_key.size(), 32u);
  EXPECT_EQ(back.sas[0].spec.enc_key.size(), 16u);
}

TEST(StateFile, SaveWritesMode0600InA0700DirectoryAndReplacesAtomically) {
  TempDir dir;
  StateStore store(dir.str() + "/state");
  struct stat st{};
  ASSERT_EQ(stat((dir.str() + "/state").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_FALSE(store.load().has_value());
  store.save(sample_state());
  ASSERT_EQ(stat(store.path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_FALSE(std::filesystem::exists(store.path() + ".tmp"));
  DaemonState s = sample_state();
  s.policies.pop_back();
  store.save(s);
  const auto back = store.load();
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->policies.size(), 1u);
}

TEST(StateFile, AnOpenStateDirectoryIsTightenedTo0750) {
  TempDir dir;
  std::filesystem::create_directories(dir.str() + "/open");
  chmod((dir.str() + "/open").c_str(), 0777);
  StateStore store(dir.str() + "/open");
  struct stat st{};
  ASSERT_EQ(stat((dir.str() + "/open").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0750u);
}

TEST(StateFile, ASecondStoreOnTheSameDirectoryIsRefusedUntilTheFirstIsGone) {
  TempDir dir;
  {
    StateStore first(dir.str());
    EXPECT_THAT(error_of([&] { StateStore second(dir.str()); }),
                HasSubstr("another ipsecov2d uses the state directory " + dir.str()));
  }
  StateStore again(dir.str());  // the lock went with the first store
}

TEST(StateFile, MoveAsideRenamesToBadTimestamp) {
  TempDir dir;
  StateStore store(dir.str());
  std::ofstream(store.path()) << "garbage";
  const std::string aside = store.move_aside();
  EXPECT_THAT(aside, HasSubstr(store.path() + ".bad-20"));
  EXPECT_FALSE(std::filesystem::exists(store.path()));
  EXPECT_EQ(slurp(aside), "garbage");
}

// Every kind of bad file: refused with "NAME: problem"; never the key bytes.
TEST(StateFile, BadFilesAreRefusedNamingTheFileAndTheProblem) {
  const std::string good = serialize_state(sample_state());
  auto edit = [&](const std::function<void(nlohmann::json&)>& change) {
    nlohmann::json j = nlohmann::json::parse(good);
    change(j);
    return j.dump();
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {good.substr(0, good.size() / 2), "/s/state.json: is not valid JSON (truncated or corrupt)"},
      {"", "/s/state.json: is not valid JSON"},
      {edit([](auto& j) { j["magic"] = "strongswan"; }), "is not an ipsecov2 state file"},
      {edit([](auto& j) { j["version"] = 2; }), "has state file version 2; this daemon reads version 1"},
      {edit([](auto& j) { j.erase("next_sa_sequence"); }), "the file has no 'next_sa_sequence'"},
      {edit([](auto& j) { j["next_sa_sequence"] = 4; }),
       "SA #2: handle 0x5000002 is not below the saved handle sequence (next_sa_sequence 4): inconsistent file"},
      {edit([](auto& j) { j["sas"][1]["handle"] = j["sas"][0]["handle"]; }), "SA #2: handle 0x3000000 appears twice"},
      {edit([](auto& j) { j["sas"][0]["spec"]["key"] = "0011"; }), "SA #1: "},
      {edit([](auto& j) { j["sas"][0]["spec"]["bogus"] = 1; }), "SA #1: unknown SA field 'bogus'"},
      {edit([](auto& j) { j["sas"][1]["spec"]["spi"] = 0x1001; j["sas"][1]["spec"]["dir"] = "out";
                          j["sas"][1]["spec"]["dst"] = "192.0.2.2"; j["sas"][1]["spec"]["src"] = "192.0.2.1"; }),
       "another SA has the same SPI, destination and direction"},
      {edit([](auto& j) { j["sas"][1]["spec"]["inner"] = "0x3000000"; }), "its bundle's inner SA 0x3000000"},
      {edit([](auto& j) { j["policies"][1]["id"] = 4; }), "policy #2: id 4 is 0, appears twice"},
      {edit([](auto& j) { j["policies"][0]["id"] = 9; }), "policy #1: id 9 is 0, appears twice or is not below"},
      {edit([](auto& j) { j["policies"].push_back(j["policies"][0]); j["policies"][2]["id"] = 5;
                          j["policies"][2]["spec"]["sa"] = "0x4000000"; }),
       "policy #3 (id 5) protects with SA 0x4000000, which is not in the file"},
      {edit([](auto& j) { j["policies"][0]["spec"]["sa"] = j["sas"][1]["handle"]; }),
       "policy #1 (id 4) protects with SA 0x5000002, which is not in the file or of the other direction"},
      {edit([](auto& j) { j["sas"] = 3; }), "'sas' and 'policies' must be lists"},
  };
  for (const auto& [text, message] : cases) {
    SCOPED_TRACE(message);
    const std::string err = error_of([&t = text] { parse_state(t, "/s/state.json"); });
    EXPECT_THAT(err, HasSubstr("/s/state.json: "));
    EXPECT_THAT(err, HasSubstr(message));
    EXPECT_THAT(err, Not(HasSubstr("0405060708")));
  }
}

TEST(StateRestore, RestoresHandlesAndIdsAndContinuesTheSequences) {
  FakeEngine engine;
  ControlPlane plane(engine, 64);
  const DaemonState s = sample_state();
  std::vector<SaRecord> sas;
  for (const auto& sa : s.sas) sas.push_back({sa.handle, sa.spec, 0});
  bool called_between = false;
  plane.restore(sas, s.policies, s.next_sa_sequence, s.next_policy_id, [&] {
    called_between = engine.installed.size() == 2 && engine.outbound.empty() && engine.inbound.empty();
  });
  EXPECT_TRUE(called_between);  // SAs in, no policy steering to them yet
  ASSERT_EQ(plane.sas().size(), 2u);
  EXPECT_NE(plane.sas().find(s.sas[1].handle), nullptr);
  ASSERT_EQ(engine.outbound.size(), 1u);
  EXPECT_EQ(engine.outbound[0].id, 4u);
  EXPECT_EQ(engine.outbound[0].offload_handle, s.sas[0].handle);
  ASSERT_EQ(engine.inbound.size(), 1u);
  EXPECT_EQ(engine.inbound[0].id, 8u);

  // New handles: sequence 7 (the saved next), a free slot (0 and 2 are taken: 1).
  const uint64_t h = plane.add_sa(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.9", 0x3001));
  EXPECT_EQ(h >> 24, 7u);
  EXPECT_EQ(handle_slot(h), 1u);
  const uint64_t h2 = plane.add_sa(gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.8", 0x3002));
  EXPECT_EQ(handle_slot(h2), 3u);
  EXPECT_EQ(plane.add_policy(protect(Direction::Out, "10.3.0.0/24", "10.4.0.0/24", h)), 9u);
}

TEST(StateRestore, EngineFailureMidwayRollsEverythingBack) {
  FakeEngine engine;
  ControlPlane plane(engine, 64);
  const DaemonState s = sample_state();
  std::vector<SaRecord> sas;
  for (const auto& sa : s.sas) sas.push_back({sa.handle, sa.spec, 0});
  // The first SA goes in, the second is refused (same SPI/destination/direction as the first).
  std::vector<SaRecord> clash = sas;
  clash[1].spec = clash[0].spec;
  const std::string err = error_of([&] { plane.restore(clash, {}, 7, 9, nullptr); });
  EXPECT_THAT(err, HasSubstr("exists already"));
  EXPECT_EQ(engine.add_calls.size(), 1u);
  EXPECT_EQ(engine.delete_calls, std::vector<uint64_t>{s.sas[0].handle});
  EXPECT_TRUE(engine.installed.empty());
  EXPECT_EQ(plane.sas().size(), 0u);

  FakeEngine engine2;
  ControlPlane plane2(engine2, 64);
  engine2.fail_next_spd = true;  // policies fail after both SAs are in
  const std::string err2 = error_of([&] {
    plane2.restore(sas, s.policies, s.next_sa_sequence, s.next_policy_id, nullptr);
  });
  EXPECT_THAT(err2, HasSubstr("injected SPD failure"));
  EXPECT_EQ(plane2.sas().size(), 0u);
  EXPECT_TRUE(plane2.spd().list().empty());
  EXPECT_TRUE(engine2.installed.empty());
  EXPECT_TRUE(engine2.outbound.empty());

  FakeEngine engine3;
  ControlPlane plane3(engine3, 64);
  const std::string err3 = error_of([&] {
    plane3.restore(sas, s.policies, s.next_sa_sequence, s.next_policy_id,
                   [&] { engine3.fail_next_add = true; fail(ErrorCode::Internal, "between"); });
  });
  EXPECT_EQ(err3, "between");
  EXPECT_TRUE(engine3.installed.empty());
  EXPECT_EQ(plane3.sas().size(), 0u);
}

TEST(StateRestore, ASlotBeyondTheCapacityIsRefusedAndNothingStays) {
  FakeEngine engine;
  ControlPlane plane(engine, 4);
  DaemonState s = sample_state();
  s.sas[1].handle = (uint64_t{5} << 24) | 9;
  s.policies[1].spec.sa_handle = s.sas[1].handle;
  std::vector<SaRecord> sas;
  for (const auto& sa : s.sas) sas.push_back({sa.handle, sa.spec, 0});
  const std::string err = error_of([&] { plane.restore(sas, s.policies, 7, 9, nullptr); });
  EXPECT_THAT(err, HasSubstr("saved SA handle 0x5000009 is not a handle this daemon can use"));
  EXPECT_TRUE(engine.installed.empty());
  EXPECT_EQ(plane.sas().size(), 0u);
}

// ---- the journal (state.journal) ----------------------------------------

TEST(StateJournalCodec, Crc32cMatchesTheStandardCheckValue) {
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);  // RFC 3720 B.4 / the usual CRC-32C check value
  EXPECT_EQ(crc32c("56789", crc32c("1234")), 0xE3069283u);
}

std::string three_records(std::vector<size_t>* offsets) {
  std::string bytes;
  for (const char* p : {"{\"a\":1}", "{\"b\":22}", "{\"c\":333}"}) {
    offsets->push_back(bytes.size());
    bytes += encode_journal_record(p);
  }
  return bytes;
}

TEST(StateJournalCodec, RecordsRoundTripInOrder) {
  std::vector<size_t> offsets;
  const std::string bytes = three_records(&offsets);
  EXPECT_EQ(bytes.size(), 3 * 8 + 7 + 8 + 9u);
  const JournalScan scan = scan_journal(bytes, "j");
  EXPECT_EQ(scan.payloads, (std::vector<std::string_view>{"{\"a\":1}", "{\"b\":22}", "{\"c\":333}"}));
  EXPECT_EQ(scan.valid_bytes, bytes.size());
  EXPECT_EQ(scan.torn_warning, "");
}

TEST(StateJournalCodec, ATornLastRecordIsDroppedWithAWarningNamingTheOffsetAtEveryCutPoint) {
  std::vector<size_t> offsets;
  const std::string bytes = three_records(&offsets);
  for (size_t cut = offsets[2] + 1; cut < bytes.size(); ++cut) {
    SCOPED_TRACE(cut);
    const std::string torn = bytes.substr(0, cut);
    const JournalScan scan = scan_journal(torn, "/d/state.journal");
    EXPECT_EQ(scan.payloads.size(), 2u);
    EXPECT_EQ(scan.valid_bytes, offsets[2]);
    EXPECT_THAT(scan.torn_warning, HasSubstr("/d/state.journal: offset " + std::to_string(offsets[2]) + ": "));
  }
  // The last record's bytes damaged (not cut): its checksum fails, nothing follows it.
  std::string flipped = bytes;
  flipped[bytes.size() - 2] ^= 0x20;
  JournalScan scan = scan_journal(flipped, "j");
  EXPECT_EQ(scan.payloads.size(), 2u);
  EXPECT_THAT(scan.torn_warning, HasSubstr("offset " + std::to_string(offsets[2]) + ": the last record"));
  EXPECT_THAT(scan.torn_warning, HasSubstr("bad checksum"));
  // A crash that left zeros where the last write went (the file grew, the data did not land).
  const std::string zeros = bytes + std::string(4096, '\0');
  scan = scan_journal(zeros, "j");
  EXPECT_EQ(scan.payloads.size(), 3u);
  EXPECT_EQ(scan.valid_bytes, bytes.size());
  EXPECT_THAT(scan.torn_warning, HasSubstr("offset " + std::to_string(bytes.size()) + ":"));
}

TEST(StateJournalCodec, DamageBeforeTheLastRecordIsRefusedNamingTheOffset) {
  std::vector<size_t> offsets;
  const std::string bytes = three_records(&offsets);
  for (size_t at : {offsets[1] + 4, offsets[1] + 9, offsets[0] + 10}) {
    SCOPED_TRACE(at);
    std::string bad = bytes;
    bad[at] ^= 0x01;
    const size_t record = at >= offsets[1] ? offsets[1] : offsets[0];
    const std::string err = error_of([&] { scan_journal(bad, "/d/state.journal"); });
    EXPECT_THAT(err, HasSubstr("/d/state.journal: offset " + std::to_string(record) + ": a record with a bad checksum"));
    EXPECT_THAT(err, HasSubstr("damaged before its end; nothing was applied"));
  }
  // An impossible length with data after it is damage, not a cut.
  std::string bad = bytes;
  bad[offsets[1] + 3] = 0x7f;
  EXPECT_THAT(error_of([&] { scan_journal(bad, "j"); }), HasSubstr("offset " + std::to_string(offsets[1]) +
                                                                   ": a record length of"));
}

// A clean stop may end with the journal while it is not larger than the snapshot (or 4 MiB); its
// "stop" record brings back the exact sequences, without the reservations' gap.
TEST(StateJournal, AStopRecordEndsTheJournalWithTheExactSequences) {
  TempDir dir;
  StateStore store(dir.str());
  store.save(sample_state());
  EXPECT_TRUE(store.journal_can_end_a_stop());
  const DaemonState s = sample_state();
  store.append_sequences(s.next_sa_sequence + kSequenceReserve, s.next_policy_id + kSequenceReserve);
  SavedSa added{(s.next_sa_sequence << 24) | 9, gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.9", 0x9009),
                0};
  store.append_sa(added);
  store.append_stop(s.next_sa_sequence + 1, s.next_policy_id);
  store.commit();
  EXPECT_TRUE(store.journal_can_end_a_stop());
  const auto back = store.load();
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->next_sa_sequence, s.next_sa_sequence + 1);
  EXPECT_EQ(back->next_policy_id, s.next_policy_id);
  EXPECT_EQ(back->sas.size(), s.sas.size() + 1);
  // Past the snapshot's size and 4 MiB, a stop writes a snapshot instead.
  while (store.journal_bytes() <= kMinCompactBytes) {
    for (int i = 0; i < 10000; ++i) store.append_seq_mark(added.handle, uint64_t{1} << 16);
    store.commit();
  }
  EXPECT_FALSE(store.journal_can_end_a_stop());
}

TEST(StateJournal, ChangesAppendedAndCommittedAreRestoredOverTheSnapshot) {
  TempDir dir;
  StateStore store(dir.str());
  store.save(sample_state());
  const DaemonState s = sample_state();
  // A new outbound SA with sequence 7 needs the reserved sequence first.
  store.append_sequences(7 + kSequenceReserve, 9 + kSequenceReserve);
  SavedSa added{(uint64_t{7} << 24) | 1, gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.7", 0x7007), 0};
  store.append_sa(added);
  store.append_policy({9, protect(Direction::Out, "10.7.0.0/24", "10.8.0.0/24", added.handle)});
  store.append_policy_deleted(8);
  store.append_sa_deleted(s.sas[1].handle);
  store.append_seq_mark(s.sas[0].handle, uint64_t{9} << 16);
  EXPECT_TRUE(store.has_pending());
  // Nothing reaches the file before commit().
  EXPECT_EQ(store.load()->sas.size(), 2u);
  store.commit();
  EXPECT_FALSE(store.has_pending());
  struct stat st{};
  ASSERT_EQ(stat(store.journal_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_THAT(slurp(store.journal_path()), HasSubstr("00010203"));  // keys are in the journal (like the snapshot)

  StateStore::LoadReport report;
  const auto back = store.load(&report);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(report.journal_records, 6u);
  EXPECT_EQ(report.warning, "");
  EXPECT_EQ(back->next_sa_sequence, 7 + kSequenceReserve);
  EXPECT_EQ(back->next_policy_id, 9 + kSequenceReserve);
  ASSERT_EQ(back->sas.size(), 2u);
  EXPECT_EQ(back->sas[0].handle, s.sas[0].handle);
  EXPECT_EQ(back->sas[0].seq_mark, uint64_t{9} << 16);
  EXPECT_EQ(back->sas[1].handle, added.handle);
  EXPECT_EQ(back->sas[1].spec.spi, 0x7007u);
  ASSERT_EQ(back->policies.size(), 2u);
  EXPECT_EQ(back->policies[0].id, 4u);
  EXPECT_EQ(back->policies[1].id, 9u);
  EXPECT_EQ(back->policies[1].spec.sa_handle, added.handle);

  // Compaction: the snapshot holds it all, the journal starts again (header only).
  store.save(*back);
  ASSERT_EQ(stat(store.journal_path().c_str(), &st), 0);
  EXPECT_LT(st.st_size, 100);
  StateStore::LoadReport after;
  const auto again = store.load(&after);
  EXPECT_EQ(after.journal_records, 0u);
  ASSERT_TRUE(again.has_value());
  EXPECT_NE(again->journal_id, back->journal_id);  // a new journal for the new snapshot
  DaemonState same = *back;
  same.journal_id = again->journal_id;
  EXPECT_EQ(serialize_state(*again), serialize_state(same));
}

TEST(StateJournal, ATornTailInTheFileIsDiscardedWithAWarningAndTheRestIsKept) {
  TempDir dir;
  StateStore store(dir.str());
  store.save(sample_state());
  store.append_seq_mark(uint64_t{3} << 24, uint64_t{8} << 16);
  store.commit();
  const auto size = std::filesystem::file_size(store.journal_path());
  store.append_seq_mark(uint64_t{3} << 24, uint64_t{12} << 16);
  store.commit();
  std::filesystem::resize_file(store.journal_path(), std::filesystem::file_size(store.journal_path()) - 3);
  StateStore::LoadReport report;
  const auto back = store.load(&report);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(report.journal_records, 1u);
  EXPECT_THAT(report.warning, HasSubstr(store.journal_path() + ": offset " + std::to_string(size) + ": "));
  EXPECT_EQ(back->sas[0].seq_mark, uint64_t{8} << 16);
}

TEST(StateJournal, ARecordThatDoesNotApplyOrBreaksTheChecksRefusesTheWholeState) {
  TempDir dir;
  StateStore store(dir.str());
  store.save(sample_state());
  store.append_sa_deleted(uint64_t{9} << 24);
  store.commit();
  EXPECT_THAT(error_of([&] { store.load(); }),
              HasSubstr(store.journal_path() + ": record #2 deletes SA 0x9000000, which is not there"));

  // An SA above the saved handle sequence without its reservation: what a lost reservation would look like.
  store.save(sample_state());
  store.append_sa({(uint64_t{7} << 24) | 1, gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.7", 0x701), 0});
  store.commit();
  const std::string err = error_of([&] { store.load(); });
  EXPECT_THAT(err, HasSubstr(store.journal_path() + ": SA #3: handle 0x7000001 is not below the saved handle sequence"));
  EXPECT_THAT(err, Not(HasSubstr("0405060708")));
}

TEST(StateJournal, AJournalLeftFromBeforeACompactionIsIgnored) {
  TempDir dir;
  StateStore store(dir.str());
  store.save(sample_state());
  store.append_sa_deleted(uint64_t{5} << 24 | 2);
  store.commit();
  const std::string old_journal = slurp(store.journal_path());
  DaemonState s = sample_state();
  s.policies.pop_back();
  s.sas.pop_back();
  store.save(s);  // the compaction of that delete
  // A crash after the snapshot's rename, before the journal's: the old journal is still there.
  std::ofstream(store.journal_path(), std::ios::trunc | std::ios::binary) << old_journal;
  StateStore::LoadReport report;
  const auto back = store.load(&report);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->sas.size(), 1u);
  EXPECT_THAT(report.warning, HasSubstr("continues another snapshot"));
  EXPECT_EQ(report.journal_records, 0u);
}

TEST(StateJournal, CompactionIsDueWhenTheJournalOutgrowsTheSnapshot) {
  TempDir dir;
  StateStore store(dir.str());
  store.save(sample_state());
  size_t n = 0;
  while (!store.needs_compaction() && n < 100000) {
    store.append_seq_mark(uint64_t{3} << 24, (uint64_t{5} + n++) << 16);
    if (n % 1000 == 0) store.commit();  // group commit: one fdatasync per 1000 records
  }
  EXPECT_TRUE(store.needs_compaction());
  EXPECT_GE(std::filesystem::file_size(store.journal_path()), kMinCompactBytes);
  EXPECT_EQ(store.journal_records(), n);
  StateStore::LoadReport report;
  EXPECT_EQ(store.load(&report)->sas[0].seq_mark, (uint64_t{5} + n - 1) << 16);
  EXPECT_EQ(report.journal_records, n);
}

// The files of `from` as they are now, in a fresh directory `to` (a crash at this moment).
void copy_state_files(const std::string& from, const std::string& to) {
  std::filesystem::create_directories(to);
  for (const char* name : {"state.json", "state.journal", "state.journal.next"})
    if (std::filesystem::exists(from + "/" + name))
      std::filesystem::copy_file(from + "/" + name, to + "/" + name, std::filesystem::copy_options::overwrite_existing);
}

std::vector<uint64_t> handles_after_crash(const std::string& dir, StateStore::LoadReport* report) {
  StateStore again(dir);
  const auto back = again.load(report);
  std::vector<uint64_t> handles;
  if (back)
    for (const SavedSa& sa : back->sas) handles.push_back(sa.handle);
  return handles;
}

TEST(StateJournal, ACrashAtEveryStepOfABackgroundCompactionRestoresEveryCommittedChange) {
  TempDir dir;
  setenv("OV2_TEST_COMPACT_DELAY_MS", "400", 1);  // the snapshot waits before its rename
  StateStore store(dir.str() + "/live");
  unsetenv("OV2_TEST_COMPACT_DELAY_MS");
  DaemonState s = sample_state();
  store.save(s);
  const uint64_t h3 = uint64_t{3} << 24, h5 = (uint64_t{5} << 24) | 2, h6 = uint64_t{6} << 24 | 7;
  store.append_policy_deleted(8);
  store.append_sa_deleted(h5);  // committed before the compaction: in the copy
  store.commit();
  s.policies.pop_back();
  s.sas.pop_back();
  store.start_compaction(s);
  EXPECT_TRUE(store.compaction_running());
  EXPECT_TRUE(std::filesystem::exists(store.next_journal_path()));
  store.append_sa({h6, gcm_sa(Direction::In, Mode::Tunnel, "192.0.2.9", "192.0.2.1", 0x3001), 0});  // after: in .next
  store.commit();
  const std::vector<uint64_t> want = {h3, h6};

  // 1. While the snapshot is being written: old snapshot + its journal + the new generation.
  copy_state_files(store.path().substr(0, store.path().rfind('/')), dir.str() + "/crash1");
  StateStore::LoadReport report;
  EXPECT_EQ(handles_after_crash(dir.str() + "/crash1", &report), want);
  EXPECT_EQ(report.journal_records, 3u);
  EXPECT_THAT(report.warning, HasSubstr("replayed after"));

  // 2. The snapshot is in place, its journal not yet renamed.
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  copy_state_files(store.path().substr(0, store.path().rfind('/')), dir.str() + "/crash2");
  EXPECT_EQ(handles_after_crash(dir.str() + "/crash2", &report), want);
  EXPECT_EQ(report.journal_records, 1u);
  EXPECT_THAT(report.warning, HasSubstr("continues " + dir.str() + "/crash2/state.json"));

  // 3. Finished: state.journal is the new generation; one more change goes there.
  EXPECT_TRUE(store.finish_compaction(false));
  EXPECT_FALSE(std::filesystem::exists(store.next_journal_path()));
  EXPECT_FALSE(store.compaction_running());
  store.append_sa_deleted(h6);
  store.commit();
  store.append_seq_mark(h3, uint64_t{9} << 16);
  store.commit();
  const auto back = store.load(&report);
  ASSERT_TRUE(back.has_value());
  ASSERT_EQ(back->sas.size(), 1u);
  EXPECT_EQ(back->sas[0].seq_mark, uint64_t{9} << 16);
  EXPECT_EQ(report.journal_records, 3u);
  EXPECT_TRUE(report.warning.empty()) << report.warning;
}

TEST(StateJournal, AFailedBackgroundCompactionKeepsEverythingAndTheNextOneIsAFullSave) {
  TempDir dir;
  StateStore store(dir.str());
  DaemonState s = sample_state();
  store.save(s);
  store.start_compaction(s);
  // The snapshot cannot be renamed into place: a directory sits where it goes.
  ASSERT_TRUE(store.finish_compaction(true));  // this one worked
  std::filesystem::create_directories(store.path() + ".tmp");
  store.start_compaction(s);
  store.append_policy_deleted(8);
  store.append_sa_deleted((uint64_t{5} << 24) | 2);
  store.commit();
  EXPECT_THROW(store.finish_compaction(true), Error);
  std::filesystem::remove(store.path() + ".tmp");
  StateStore::LoadReport report;
  auto back = store.load(&report);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->sas.size(), 1u);  // the old snapshot, its journal and the generation after it
  s.sas.pop_back();
  s.policies.pop_back();
  store.start_compaction(s);  // falls back to a full save: no second generation after the first
  EXPECT_FALSE(store.compaction_running());
  EXPECT_FALSE(std::filesystem::exists(store.next_journal_path()));
  back = store.load(&report);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->sas.size(), 1u);
  EXPECT_EQ(report.journal_records, 0u);
}

// The replay applies each record to the snapshot's lists in place: an SA added below existing
// handles, one deleted and added again under the same handle, one replaced, marks, a policy deleted
// and added again.  The result is in handle and id order, the same with the fast reader and the
// nlohmann reference.
TEST(StateJournal, TheReplayAppliesEveryKindOfRecordInPlaceAndKeepsHandleOrder) {
  const DaemonState base = sample_state();
  const uint64_t h3 = base.sas[0].handle, h5 = base.sas[1].handle;
  const uint64_t h4 = (uint64_t{4} << 24) | 4, h6 = (uint64_t{6} << 24) | 5;
  std::vector<std::string> records = {"{\"journal\":\"header\"}"};
  auto add = [&](auto write) { write(records.emplace_back()); };
  add([&](std::string& r) { write_sequences_record(r, 7 + kSequenceReserve, 9 + kSequenceReserve); });
  add([&](std::string& r) {
    write_sa_record(r, {h6, gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.6", 0x6006), 0});
  });
  add([&](std::string& r) {  // below h5 and h6: the list is sorted again at the end
    write_sa_record(r, {h4, gcm_sa(Direction::In, Mode::Tunnel, "192.0.2.4", "192.0.2.1", 0x4004), 0});
  });
  add([&](std::string& r) { write_policy_deleted_record(r, 8); });
  add([&](std::string& r) { write_sa_deleted_record(r, h5); });
  add([&](std::string& r) {
    write_sa_record(r, {h5, gcm_sa(Direction::In, Mode::Tunnel, "192.0.2.2", "192.0.2.1", 0x5005), 0});
  });
  add([&](std::string& r) {
    write_sa_record(r, {h3, gcm_sa(Direction::Out, Mode::Tunnel, "192.0.2.1", "192.0.2.2", 0x1001), uint64_t{7} << 16});
  });
  add([&](std::string& r) { write_seq_mark_record(r, h5, uint64_t{1} << 20); });
  add([&](std::string& r) { write_policy_record(r, {8, protect(Direction::In, "10.4.0.0/24", "10.1.0.0/24", h4)}); });
  for (const bool fast : {true, false}) {
    SCOPED_TRACE(fast);
    const DaemonState s = replay_journal(base, records, 1, "j", fast);
    std::vector<uint64_t> handles;
    for (const SavedSa& sa : s.sas) handles.push_back(sa.handle);
    EXPECT_EQ(handles, (std::vector<uint64_t>{h3, h4, h5, h6}));
    EXPECT_EQ(s.sas[0].seq_mark, uint64_t{7} << 16);  // replaced (a record's mark is not a max)
    EXPECT_EQ(s.sas[2].spec.spi, 0x5005u);
    EXPECT_EQ(s.sas[2].seq_mark, uint64_t{1} << 20);
    ASSERT_EQ(s.policies.size(), 2u);
    EXPECT_EQ(s.policies[0].id, 4u);
    EXPECT_EQ(s.policies[1].id, 8u);
    EXPECT_EQ(s.policies[1].spec.sa_handle, h4);
    EXPECT_EQ(s.next_sa_sequence, 7 + kSequenceReserve);
  }
  EXPECT_EQ(serialize_state(replay_journal(base, records, 1, "j", true)),
            serialize_state(replay_journal(base, records, 1, "j", false)));
}

// A journal of only sequence records looks nothing up (no index of the loaded SAs is built): the
// result is still in handle order, as with any other replay.
TEST(StateJournal, AReplayOfOnlyAStopRecordKeepsTheStateAndSortsItByHandle) {
  DaemonState base = sample_state();
  std::swap(base.sas[0], base.sas[1]);  // a snapshot written by hand, out of order
  std::vector<std::string> records = {"{\"journal\":\"header\"}", ""};
  write_stop_record(records[1], 7, 9);
  for (const bool fast : {true, false}) {
    SCOPED_TRACE(fast);
    const DaemonState s = replay_journal(base, records, 1, "j", fast);
    ASSERT_EQ(s.sas.size(), 2u);
    EXPECT_EQ(s.sas[0].handle, sample_state().sas[0].handle);
    EXPECT_EQ(s.sas[1].handle, sample_state().sas[1].handle);
    EXPECT_EQ(s.policies.size(), 2u);
  }
}

// The loader checks the state once: the snapshot alone (named so) when no journal record applies,
// else the state the replay made (named by the snapshot and the journal).
TEST(StateJournal, AnInconsistentStateIsRefusedNamingTheSnapshotOrTheSnapshotAndTheJournal) {
  TempDir dir;
  StateStore store(dir.str());
  DaemonState bad = sample_state();
  bad.policies[1].spec.sa_handle = uint64_t{6} << 24;  // no such SA
  store.save(bad);
  EXPECT_THAT(error_of([&] { store.load(); }),
              HasSubstr(store.path() + ": policy #2 (id 8) protects with SA 0x6000000, which is not in the file"));
  store.append_seq_mark(uint64_t{3} << 24, uint64_t{9} << 16);
  store.commit();
  EXPECT_THAT(error_of([&] { store.load(); }),
              HasSubstr(store.path() + " after replaying " + store.journal_path() + ": policy #2 (id 8)"));
  // The journal deleting that policy makes the whole consistent: what would be applied is checked.
  store.append_policy_deleted(8);
  store.commit();
  const auto back = store.load();
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->policies.size(), 1u);
}

// A stop that does not wait for a background snapshot (the start-up one): cancel_compaction stops it
// before its rename, the stop record goes to the new generation, and fold_next_journal makes one
// journal of the two.  After each step -- and after a crash between the fold's rename and its
// unlink -- the files restore every committed change and the stop's exact sequences.
TEST(StateJournal, ACancelledBackgroundSnapshotLeavesFilesThatRestoreEverythingAtEveryStep) {
  TempDir dir;
  setenv("OV2_TEST_COMPACT_DELAY_MS", "30000", 1);  // the snapshot waits long before its rename
  StateStore store(dir.str() + "/live");
  unsetenv("OV2_TEST_COMPACT_DELAY_MS");
  DaemonState s = sample_state();
  store.save(s);
  const std::string snapshot = slurp(store.path());
  const uint64_t h3 = uint64_t{3} << 24, h5 = (uint64_t{5} << 24) | 2, h6 = uint64_t{6} << 24 | 7;
  store.append_policy_deleted(8);
  store.append_sa_deleted(h5);  // in the old journal
  store.commit();
  s.policies.pop_back();
  s.sas.pop_back();
  store.start_compaction(s);
  ASSERT_TRUE(store.compaction_running());
  store.append_sa({h6, gcm_sa(Direction::In, Mode::Tunnel, "192.0.2.9", "192.0.2.1", 0x3001), 0});  // in .next
  store.commit();
  ASSERT_TRUE(store.cancel_compaction());
  EXPECT_FALSE(store.compaction_running());
  EXPECT_EQ(slurp(store.path()), snapshot) << "the cancelled snapshot replaced the old one";
  EXPECT_FALSE(std::filesystem::exists(store.path() + ".tmp"));
  store.append_seq_mark(h3, uint64_t{9} << 16);
  store.append_stop(7, 9);  // the exact sequences, below the reservations a crash would restore
  store.commit();
  const std::string live = store.path().substr(0, store.path().rfind('/'));
  const std::vector<uint64_t> want = {h3, h6};
  auto check = [&](const std::string& where, const char* warning) {
    StateStore again(where);
    StateStore::LoadReport report;
    const auto back = again.load(&report);
    ASSERT_TRUE(back.has_value());
    std::vector<uint64_t> handles;
    for (const SavedSa& sa : back->sas) handles.push_back(sa.handle);
    EXPECT_EQ(handles, want);
    EXPECT_EQ(back->sas[0].seq_mark, uint64_t{9} << 16);
    EXPECT_EQ(back->policies.size(), 1u);
    EXPECT_EQ(back->next_sa_sequence, 7u);
    EXPECT_EQ(back->next_policy_id, 9u);
    EXPECT_EQ(report.journal_records, 5u);
    EXPECT_THAT(report.warning, HasSubstr(warning));
  };
  // 1. A crash before the fold: old snapshot + its journal + the generation after it.
  copy_state_files(live, dir.str() + "/crash1");
  check(dir.str() + "/crash1", "replayed after");
  const std::string next = slurp(store.next_journal_path());

  // 2. Folded: one journal, the plain shape, the same state.
  store.fold_next_journal();
  EXPECT_FALSE(std::filesystem::exists(store.next_journal_path()));
  EXPECT_FALSE(std::filesystem::exists(store.journal_path() + ".tmp"));
  EXPECT_EQ(slurp(store.path()), snapshot);
  {
    StateStore::LoadReport report;
    ASSERT_TRUE(store.load(&report).has_value());
    EXPECT_EQ(report.warning, "");
    EXPECT_EQ(report.journal_records, 5u);
  }
  copy_state_files(live, dir.str() + "/folded");
  check(dir.str() + "/folded", "");

  // 3. A crash after the fold's rename, before its unlink: the generation is in the journal already.
  copy_state_files(live, dir.str() + "/crash3");
  std::ofstream(dir.str() + "/crash3/state.journal.next", std::ios::binary) << next;
  check(dir.str() + "/crash3", "is folded into");

  // The store goes on appending to the folded journal.
  store.append_sa_deleted(h6);
  store.commit();
  EXPECT_EQ(store.load()->sas.size(), 1u);
}

TEST(StateJournal, ABackgroundSnapshotIsNotCancelledWhenTheJournalsAreTooLargeOrItIsInPlace) {
  TempDir dir;
  {
    setenv("OV2_TEST_COMPACT_DELAY_MS", "1000", 1);
    StateStore store(dir.str() + "/large");
    unsetenv("OV2_TEST_COMPACT_DELAY_MS");
    store.save(sample_state());
    while (store.journal_bytes() <= kMinCompactBytes) {
      for (int i = 0; i < 10000; ++i) store.append_seq_mark(uint64_t{3} << 24, uint64_t{1} << 16);
      store.commit();
    }
    store.start_compaction(sample_state());
    EXPECT_FALSE(store.cancel_compaction());  // a stop would not end with this journal: the caller waits
    EXPECT_TRUE(store.compaction_running());
    EXPECT_TRUE(store.finish_compaction(true));
    EXPECT_FALSE(std::filesystem::exists(store.next_journal_path()));
  }
  StateStore store(dir.str() + "/done");
  store.save(sample_state());
  const std::string before = slurp(store.path());
  store.start_compaction(sample_state());
  // Once the new snapshot is renamed into place, a cancel comes too late: it finishes the compaction.
  for (int i = 0; i < 1000 && slurp(store.path()) == before; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_NE(slurp(store.path()), before);
  EXPECT_FALSE(store.cancel_compaction());
  EXPECT_FALSE(store.compaction_running());
  EXPECT_FALSE(std::filesystem::exists(store.next_journal_path()));
  StateStore::LoadReport report;
  ASSERT_TRUE(store.load(&report).has_value());
  EXPECT_EQ(report.warning, "");
}

}  // namespace
}  // namespace ov2
