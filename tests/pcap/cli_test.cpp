// The command line: help and exit codes through the CLI11 registration, and the
// real ipsecov2ctl binary once its main calls register_pcap_commands.
#include <gtest/gtest.h>
#include <pcap/pcap.h>

#include <filesystem>

#include "pcap_test_support.h"
#include "sa_fixtures.h"

namespace ov2::pcap::test {
namespace {

TEST(PcapCli, HelpDocumentsTheExitCodesAndTheSaFile) {
  for (const char* sub : {"encrypt", "decrypt"}) {
    const RunResult r = run_cli({"pcap", sub, "--help"});
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_NE(r.out.find("--sa-file"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("--json"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("--keep-failed"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("Exit status: 0"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("1 some packets failed"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("2 usage"), std::string::npos) << r.out;
  }
  EXPECT_NE(run_cli({"pcap", "decrypt", "--help"}).out.find("--no-replay"), std::string::npos);
  EXPECT_NE(run_cli({"pcap", "encrypt", "--help"}).out.find("--spi"), std::string::npos);
}

TEST(PcapCli, PcapWithoutSubcommandExitsTwo) {
  const RunResult r = run_cli({"pcap"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("encrypt or decrypt"), std::string::npos) << r.err;
}

// The installed entry point: OV2_BINARY_DIR/ctl/ipsecov2ctl.
TEST(PcapCli, RealIpsecov2ctlBinaryEncryptsDecryptsAndReportsExitCodes) {
  const std::string bin = OV2_BINARY_DIR "/ctl/ipsecov2ctl";
  if (!std::filesystem::exists(bin)) GTEST_SKIP() << bin << " is not built";
  if (run_command(bin + " pcap encrypt --help").out.find("--sa-file") == std::string::npos)
    GTEST_SKIP() << "ipsecov2ctl's main does not call ov2::register_pcap_commands yet";

  TempDir dir;
  const auto sas = twin_sas(all_algorithms()[0], false, false);
  write_text(dir.path("sa.json"), sas.dump());
  const std::vector<Bytes> frames = {ethernet_frame(ipv4_packet(kHostA4, kHostB4, 17, 40, 1)),
                                     ethernet_frame(ipv6_packet(kHostA6, kHostB6, 6, 40, 2))};
  write_capture(dir.path("plain.pcap"), DLT_EN10MB, frames);
  const RunResult enc = run_command(bin + " pcap encrypt --sa-file " + dir.path("sa.json") + " " +
                                    dir.path("plain.pcap") + " " + dir.path("esp.pcap"));
  ASSERT_EQ(enc.exit_code, 0) << enc.out;
  EXPECT_NE(enc.out.find("2 encrypted"), std::string::npos) << enc.out;
  // ipsecov2ctl's global --json reaches the pcap commands too.
  const RunResult dec = run_command(bin + " --json pcap decrypt --sa-file " + dir.path("sa.json") + " " +
                                    dir.path("esp.pcap") + " " + dir.path("back.pcap"));
  ASSERT_EQ(dec.exit_code, 0) << dec.out;
  EXPECT_NE(dec.out.find("\"opened\": 2"), std::string::npos) << dec.out;
  EXPECT_EQ(read_capture(dir.path("back.pcap")).frames, frames);

  // Decrypting the plaintext replayed twice: the second copy fails -> 1.
  Capture esp = read_capture(dir.path("esp.pcap"));
  esp.frames.push_back(esp.frames[0]);
  write_capture(dir.path("replay.pcap"), DLT_EN10MB, esp.frames);
  const RunResult replay = run_command(bin + " pcap decrypt --sa-file " + dir.path("sa.json") + " " +
                                       dir.path("replay.pcap") + " " + dir.path("back.pcap"));
  EXPECT_EQ(replay.exit_code, 1) << replay.out;
  EXPECT_NE(replay.out.find("replayed: 1"), std::string::npos) << replay.out;

  const RunResult missing = run_command(bin + " pcap decrypt --sa-file " + dir.path("sa.json") + " " +
                                        dir.path("missing.pcap") + " " + dir.path("back.pcap"));
  EXPECT_EQ(missing.exit_code, 2) << missing.out;
  for (const auto& sa : sas)
    EXPECT_EQ((enc.out + dec.out + replay.out + missing.out).find(sa["key"]), std::string::npos);
}

}  // namespace
}  // namespace ov2::pcap::test
