// Packets that do not open are counted by NDIS CryptoStatus and reason, never
// dropped silently, and make the exit code 1; file and SA errors exit 2 with a
// message naming the file, SA index and key -- and never the key bytes.
#include <gtest/gtest.h>
#include <pcap/pcap.h>

#include "pcap_test_support.h"
#include "sa_fixtures.h"

namespace ov2::pcap::test {
namespace {

// Six encrypted IPv4 transport packets A -> B (raw IP) and the plaintexts.
struct Sealed {
  std::vector<Bytes> plain;
  std::vector<Bytes> esp;
};

Sealed seal_six(const TempDir& dir, const nlohmann::json& sas) {
  Sealed s;
  for (uint8_t i = 0; i < 6; ++i) s.plain.push_back(ipv4_packet(kHostA4, kHostB4, 17, 60 + i, i));
  write_text(dir.path("sa.json"), sas.dump());
  write_capture(dir.path("plain.pcap"), DLT_RAW, s.plain);
  const RunResult enc =
      run_cli({"pcap", "encrypt", "--sa-file", dir.path("sa.json"), dir.path("plain.pcap"), dir.path("esp.pcap")});
  EXPECT_EQ(enc.exit_code, 0) << enc.out << enc.err;
  s.esp = read_capture(dir.path("esp.pcap")).frames;
  EXPECT_EQ(s.esp.size(), 6u);
  return s;
}

uint64_t outcome(const nlohmann::json& summary, const std::string& status, const std::string& reason) {
  for (const auto& o : summary["outcomes"])
    if (o["status"] == status && o["reason"] == reason) return o["count"].get<uint64_t>();
  return 0;
}

class FailureAccounting : public ::testing::Test {
 protected:
  void SetUp() override {
    sealed_ = seal_six(dir_, twin_sas(gcm128(), /*tunnel=*/false, /*natt=*/false));
    ASSERT_EQ(sealed_.esp.size(), 6u);
    const auto& e = sealed_.esp;
    Bytes tampered = e[1];
    tampered[tampered.size() - 30] ^= 0x01;  // a ciphertext bit
    Bytes unknown_spi = e[3];
    unknown_spi[20] = 0xde;  // SPI right after the 20-byte IPv4 header
    unknown_spi[21] = 0xad;
    const Bytes truncated(e[4].begin(), e[4].end() - 20);
    const Bytes not_esp = ipv4_packet("10.9.9.9", "10.8.8.8", 17, 10, 1);
    frames_ = {e[0], tampered, e[2], e[2] /* replay */, unknown_spi, truncated, e[5], not_esp};
    // The truncated frame is a snapped capture: its wire length says more.
    std::vector<uint32_t> lens;
    for (size_t i = 0; i < frames_.size(); ++i)
      lens.push_back(i == 5 ? static_cast<uint32_t>(e[4].size()) : static_cast<uint32_t>(frames_[i].size()));
    write_capture(dir_.path("attack.pcap"), DLT_RAW, frames_, lens);
  }

  RunResult decrypt(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"pcap",
                                     "decrypt",
                                     "--json",
                                     "--sa-file",
                                     dir_.path("sa.json"),
                                     dir_.path("attack.pcap"),
                                     dir_.path("out.pcap")};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_cli(args);
  }

  TempDir dir_;
  Sealed sealed_;
  std::vector<Bytes> frames_;
};

TEST_F(FailureAccounting, TamperedReplayedUnknownSpiAndTruncatedAreCountedByStatusAndExitOne) {
  const RunResult r = decrypt();
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  const auto s = nlohmann::json::parse(r.out);
  EXPECT_EQ(s["packets"], 8);
  EXPECT_EQ(s["esp"], 7);
  EXPECT_EQ(s["opened"], 3);
  EXPECT_EQ(s["failed"], 4);
  EXPECT_EQ(s["not_esp"], 1);
  EXPECT_EQ(outcome(s, "CRYPTO_SUCCESS", "ok"), 3u);
  EXPECT_EQ(outcome(s, "CRYPTO_TRANSPORT_ESP_AUTH_FAILED", "auth-failed"), 1u);
  EXPECT_EQ(outcome(s, "CRYPTO_GENERIC_ERROR", "replayed"), 1u);
  EXPECT_EQ(outcome(s, "NOT_CHECKED", "unknown-spi"), 1u);
  EXPECT_EQ(outcome(s, "CRYPTO_INVALID_PACKET_SYNTAX", "truncated") +
                outcome(s, "CRYPTO_INVALID_PACKET_SYNTAX", "bad-length"),
            1u)
      << r.out;
  EXPECT_EQ(outcome(s, "NOT_ESP", "udp"), 1u);

  // Opened packets and the non-ESP packet are written; failures are left out.
  const Capture out = read_capture(dir_.path("out.pcap"));
  ASSERT_EQ(out.frames.size(), 4u);
  const std::vector<Bytes> expected_ip = {sealed_.plain[0], sealed_.plain[2], sealed_.plain[5], frames_[7]};
  for (size_t i = 0; i < 4; ++i)
    EXPECT_EQ(Bytes(out.frames[i].begin() + 14, out.frames[i].end()), expected_ip[i]) << "frame " << i;
}

TEST_F(FailureAccounting, TextSummaryNamesEveryStatusAndReason) {
  const RunResult r =
      run_cli({"pcap", "decrypt", "--sa-file", dir_.path("sa.json"), dir_.path("attack.pcap"), dir_.path("out.pcap")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("8 packets read, 7 ESP, 3 opened, 4 failed"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("CRYPTO_TRANSPORT_ESP_AUTH_FAILED  auth-failed: 1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("CRYPTO_GENERIC_ERROR"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("replayed: 1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("unknown-spi: 1"), std::string::npos) << r.out;
}

TEST_F(FailureAccounting, KeepFailedWritesTheFailedFramesUnchanged) {
  const RunResult r = decrypt({"--keep-failed"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  const Capture out = read_capture(dir_.path("out.pcap"));
  ASSERT_EQ(out.frames.size(), frames_.size());
  for (size_t i : {1, 3, 4, 5}) {
    EXPECT_EQ(Bytes(out.frames[i].begin() + 14, out.frames[i].end()), frames_[i]) << "frame " << i;
    EXPECT_EQ(out.frames[i][12], 0x08);
  }
  // The snapped frame stays snapped: its wire length is kept.
  EXPECT_EQ(out.wire_lengths[5], sealed_.esp[4].size() + 14);
}

TEST_F(FailureAccounting, NoReplayOpensTheDuplicate) {
  const RunResult r = decrypt({"--no-replay"});
  EXPECT_EQ(r.exit_code, 1);
  const auto s = nlohmann::json::parse(r.out);
  EXPECT_EQ(s["opened"], 4);
  EXPECT_EQ(outcome(s, "CRYPTO_GENERIC_ERROR", "replayed"), 0u);
}

TEST_F(FailureAccounting, CleanCaptureExitsZero) {
  write_capture(dir_.path("clean.pcap"), DLT_RAW, sealed_.esp);
  const RunResult r =
      run_cli({"pcap", "decrypt", "--sa-file", dir_.path("sa.json"), dir_.path("clean.pcap"), dir_.path("out.pcap")});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

TEST(FailureAccountingFrames, EthernetFrameShorterThanItsHeaderIsCountedTruncated) {
  TempDir dir;
  write_text(dir.path("sa.json"), twin_sas(gcm128(), false, false).dump());
  write_capture(dir.path("in.pcap"), DLT_EN10MB, {Bytes{1, 2, 3, 4, 5, 6, 7, 8}});
  const RunResult r = run_cli(
      {"pcap", "decrypt", "--json", "--sa-file", dir.path("sa.json"), dir.path("in.pcap"), dir.path("out.pcap")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(outcome(nlohmann::json::parse(r.out), "NOT_CHECKED", "truncated"), 1u) << r.out;
}

TEST(FailureAccountingFrames, EspHeaderCutBeforeTheSpiIsCountedTruncated) {
  TempDir dir;
  write_text(dir.path("sa.json"), twin_sas(gcm128(), false, false).dump());
  Bytes esp = ipv4_packet(kHostA4, kHostB4, 50, 0, 1);  // protocol 50 ...
  esp.resize(22);                                       // ... with 2 bytes after the header
  write_capture(dir.path("in.pcap"), DLT_RAW, {esp}, {60});
  const RunResult r = run_cli(
      {"pcap", "decrypt", "--json", "--sa-file", dir.path("sa.json"), dir.path("in.pcap"), dir.path("out.pcap")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(outcome(nlohmann::json::parse(r.out), "NOT_CHECKED", "truncated"), 1u) << r.out;
}

TEST(EncryptFailures, HardPacketLifetimeStopsTheSaAndExitsOne) {
  TempDir dir;
  auto sas = twin_sas(gcm128(), false, false);
  sas[0]["lifetime-packets"] = "0,3";
  write_text(dir.path("sa.json"), sas.dump());
  std::vector<Bytes> plain;
  for (uint8_t i = 0; i < 5; ++i) plain.push_back(ipv4_packet(kHostA4, kHostB4, 6, 10, i));
  write_capture(dir.path("plain.pcap"), DLT_RAW, plain);
  const RunResult r = run_cli(
      {"pcap", "encrypt", "--json", "--sa-file", dir.path("sa.json"), dir.path("plain.pcap"), dir.path("esp.pcap")});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  const auto s = nlohmann::json::parse(r.out);
  EXPECT_EQ(s["encrypted"], 3);
  EXPECT_EQ(s["failed"], 2);
  EXPECT_EQ(outcome(s, "FAILED", "lifetime-expired"), 2u) << r.out;
  EXPECT_EQ(read_capture(dir.path("esp.pcap")).frames.size(), 3u);
}

TEST(EncryptFailures, SnappedPlaintextIsNotEncryptedAndIsCounted) {
  TempDir dir;
  write_text(dir.path("sa.json"), twin_sas(gcm128(), false, false).dump());
  Bytes p = ipv4_packet(kHostA4, kHostB4, 17, 200, 1);
  Bytes stranger = ipv4_packet("10.9.9.9", "10.8.8.8", 17, 200, 2);
  const uint32_t wire = static_cast<uint32_t>(p.size());
  p.resize(100);
  stranger.resize(100);
  write_capture(dir.path("plain.pcap"), DLT_RAW, {p, stranger}, {wire, wire});
  const RunResult r = run_cli({"pcap", "encrypt", "--json", "--sa-file", dir.path("sa.json"), dir.path("plain.pcap"),
                               dir.path("esp.pcap")});
  EXPECT_EQ(r.exit_code, 1);
  const auto s = nlohmann::json::parse(r.out);
  EXPECT_EQ(outcome(s, "FAILED", "truncated"), 1u) << r.out;
  EXPECT_EQ(outcome(s, "PASSED", "no-sa"), 1u) << "a snapped packet no SA takes passes" << r.out;
  const Capture out = read_capture(dir.path("esp.pcap"));
  ASSERT_EQ(out.frames.size(), 1u);
  EXPECT_EQ(out.frames[0], stranger);
  EXPECT_EQ(out.wire_lengths[0], wire) << "still snapped";
}

// ---- SA file and usage errors: exit 2 --------------------------------------------

class SaFileErrors : public ::testing::Test {
 protected:
  // Runs decrypt with `sas` as the SA file; expects exit 2 and returns stderr.
  std::string run_with(const std::string& sa_text) {
    write_text(dir_.path("sa.json"), sa_text);
    write_capture(dir_.path("in.pcap"), DLT_RAW, {ipv4_packet(kHostA4, kHostB4, 17, 1, 1)});
    const RunResult r =
        run_cli({"pcap", "decrypt", "--sa-file", dir_.path("sa.json"), dir_.path("in.pcap"), dir_.path("out.pcap")});
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    EXPECT_EQ(r.out, "");
    // No key bytes, of any SA of the file, in anything the tool printed.
    for (const auto& key : keys_) EXPECT_EQ((r.out + r.err).find(key), std::string::npos) << "key leaked: " << r.err;
    EXPECT_NE(r.err.find(dir_.path("sa.json")), std::string::npos) << "names the file: " << r.err;
    return r.err;
  }

  nlohmann::json good_list() {
    auto sas = twin_sas(gcm128(), false, false);
    for (const auto& sa : sas) keys_.push_back(sa["key"].get<std::string>());
    return sas;
  }

  TempDir dir_;
  std::vector<std::string> keys_;
};

TEST_F(SaFileErrors, KeyOfTheWrongLengthNamesTheSaIndexAndTheKey) {
  auto sas = good_list();
  sas[1]["key"] = hex_key(16, 42);  // aes-gcm-128 needs 16 + 4 bytes of salt
  keys_.push_back(sas[1]["key"]);
  const std::string err = run_with(sas.dump());
  EXPECT_NE(err.find("SA 1: 'key': aes-gcm-128 needs 20 bytes"), std::string::npos) << err;
}

TEST_F(SaFileErrors, AuthKeyOfTheWrongLengthNamesTheAuthKeyField) {
  auto sas =
      nlohmann::json::array({sa_object(all_algorithms()[3], "in", "transport", kHostA4, kHostB4, 0x500, false, 3)});
  keys_.push_back(sas[0]["enc-key"]);
  sas[0]["auth-key"] = hex_key(31, 5);
  keys_.push_back(sas[0]["auth-key"]);
  const std::string err = run_with(sas.dump());
  EXPECT_NE(err.find("SA 0: 'auth-key': "), std::string::npos) << err;
}

TEST_F(SaFileErrors, BadHexNamesTheSaIndexAndTheKey) {
  auto sas = good_list();
  sas[2]["key"] = "0x00112233445566778899aabbccddeeffzz112233";
  const std::string err = run_with(sas.dump());
  EXPECT_NE(err.find("SA 2:"), std::string::npos) << err;
  EXPECT_NE(err.find("'key'"), std::string::npos) << err;
  EXPECT_EQ(err.find("zz112233"), std::string::npos) << err;
}

TEST_F(SaFileErrors, UnknownKeyNamesTheSaIndexAndTheKey) {
  auto sas = good_list();
  sas[3]["colour"] = "blue";
  const std::string err = run_with(sas.dump());
  EXPECT_NE(err.find("SA 3:"), std::string::npos) << err;
  EXPECT_NE(err.find("'colour'"), std::string::npos) << err;
}

TEST_F(SaFileErrors, InnerIndexOutOfRangeNamesTheSaIndex) {
  auto sas = good_list();
  auto tunnel = sa_object(gcm128(), "in", "tunnel", kGwA4, kGwB4, 0x4000, false, 9);
  keys_.push_back(tunnel["key"]);
  tunnel["inner"] = 17;
  sas.push_back(tunnel);
  const std::string err = run_with(sas.dump());
  EXPECT_NE(err.find("SA 4: 'inner' is 17 but the file has only 5 SA(s)"), std::string::npos) << err;
}

TEST_F(SaFileErrors, InnerPointingAtATunnelSaIsRefused) {
  auto sas = nlohmann::json::array();
  for (uint32_t i = 0; i < 2; ++i)
    sas.push_back(sa_object(gcm128(), "in", "tunnel", kGwA4, kGwB4, 0x4000 + i, false, 9));
  for (const auto& sa : sas) keys_.push_back(sa["key"]);
  sas[0]["inner"] = 1;
  const std::string err = run_with(sas.dump());
  EXPECT_NE(err.find("SA 0: 'inner' points at SA 1, which is not in transport mode"), std::string::npos) << err;
}

TEST_F(SaFileErrors, InvalidJsonIsReportedWithoutQuotingTheFile) {
  auto sas = good_list();
  std::string text = sas.dump();
  text.resize(text.find(keys_[0]) + 10);  // cut inside a key string
  const std::string err = run_with(text);
  EXPECT_NE(err.find("not valid JSON"), std::string::npos) << err;
  EXPECT_EQ(err.find(keys_[0].substr(0, 10)), std::string::npos) << err;
}

TEST_F(SaFileErrors, FileWithoutInboundSaCannotDecrypt) {
  auto sas = good_list();
  nlohmann::json out_only = nlohmann::json::array({sas[0], sas[1]});
  const std::string err = run_with(out_only.dump());
  EXPECT_NE(err.find("no inbound SA"), std::string::npos) << err;
}

TEST(UsageErrors, MissingFilesAndOptionsExitTwo) {
  TempDir dir;
  write_text(dir.path("sa.json"), twin_sas(gcm128(), false, false).dump());
  write_capture(dir.path("in.pcap"), DLT_RAW, {ipv4_packet(kHostA4, kHostB4, 17, 1, 1)});
  const std::string sa = dir.path("sa.json");
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"pcap", "decrypt", "--sa-file", sa, dir.path("nope.pcap"), dir.path("out.pcap")}, "nope.pcap: cannot read"},
      {{"pcap", "decrypt", dir.path("in.pcap"), dir.path("out.pcap")}, "usage"},
      {{"pcap", "encrypt", "--sa-file", sa, dir.path("in.pcap")}, "usage"},
      {{"pcap", "encrypt", "--sa-file", sa, "--bogus", dir.path("in.pcap"), dir.path("o.pcap")}, "--bogus"},
      {{"pcap", "encrypt", "--sa-file", dir.path("nosa.json"), dir.path("in.pcap"), dir.path("o.pcap")},
       "cannot open the SA file"},
      {{"pcap", "encrypt", "--sa-file", sa, dir.path("in.pcap"), "/nonexistent/dir/o.pcap"}, "cannot write"},
      {{"pcap", "encrypt", "--spi", "0x999", "--sa-file", sa, dir.path("in.pcap"), dir.path("o.pcap")},
       "no outbound SA"},
      {{"pcap", "encrypt", "--spi", "twelve", "--sa-file", sa, dir.path("in.pcap"), dir.path("o.pcap")}, "--spi"},
  };
  for (const auto& c : cases) {
    const RunResult r = run_cli(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.message << ": " << r.out << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
  }
}

TEST(UsageErrors, UnsupportedLinkTypeIsAClearErrorExitTwo) {
  TempDir dir;
  write_text(dir.path("sa.json"), twin_sas(gcm128(), false, false).dump());
  write_capture(dir.path("sll.pcap"), DLT_LINUX_SLL, {Bytes(40, 0)});
  const RunResult r =
      run_cli({"pcap", "decrypt", "--sa-file", dir.path("sa.json"), dir.path("sll.pcap"), dir.path("out.pcap")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("link type 113 (LINUX_SLL) is not supported"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace ov2::pcap::test
