// Independent checks: tshark verifies the ICV of every packet our encrypt
// wrote, and packets sealed by scapy open with our decrypt to the exact bytes
// scapy started from.  Missing tshark or scapy fails these tests.
#include <gtest/gtest.h>
#include <pcap/pcap.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "pcap_test_support.h"
#include "sa_fixtures.h"

namespace ov2::pcap::test {
namespace {

// ---- tshark -------------------------------------------------------------------

struct TsharkAlg {
  size_t alg_index;        // into all_algorithms()
  const char* encryption;  // Wireshark's ESP UAT names
  const char* authentication;
};

// What Wireshark 4.0 can check (it has no ChaCha20-Poly1305 or AES-GMAC for ESP).
const TsharkAlg kTsharkAlgs[] = {
    {0, "AES-GCM with 16 octet ICV [RFC4106]", "NULL"},
    {1, "AES-GCM with 16 octet ICV [RFC4106]", "NULL"},
    {3, "AES-CBC [RFC3602]", "HMAC-SHA-256-128 [RFC4868]"},
    {4, "NULL", "HMAC-SHA-1-96 [RFC2404]"},
};

// A Wireshark configuration directory holding the SAs (keys stay off command lines).
void write_wireshark_config(const TempDir& dir, const nlohmann::json& sas, const TsharkAlg& alg) {
  std::filesystem::create_directories(dir.path("wireshark"));
  write_text(dir.path("wireshark/preferences"),
             "esp.enable_encryption_decode: TRUE\nesp.enable_authentication_check: TRUE\n");
  std::ostringstream uat;
  for (const auto& sa : sas) {
    if (sa["dir"] != "out") continue;
    const bool v6 = sa["dst"].get<std::string>().find(':') != std::string::npos;
    char spi[16];
    std::snprintf(spi, sizeof spi, "0x%08x", sa["spi"].get<uint32_t>());
    const std::string enc_key = sa.contains("key")       ? sa["key"].get<std::string>()
                                : sa.contains("enc-key") ? sa["enc-key"].get<std::string>()
                                                         : "";
    const std::string auth_key = sa.contains("auth-key") ? sa["auth-key"].get<std::string>() : "";
    uat << "\"" << (v6 ? "IPv6" : "IPv4") << "\",\"" << sa["src"].get<std::string>() << "\",\""
        << sa["dst"].get<std::string>() << "\",\"" << spi << "\",\"" << alg.encryption << "\",\""
        << (enc_key.empty() ? "" : "0x" + enc_key) << "\",\"" << alg.authentication << "\",\""
        << (auth_key.empty() ? "" : "0x" + auth_key) << "\"\n";
  }
  write_text(dir.path("wireshark/esp_sa"), uat.str());
}

// Encrypts IPv4 and IPv6 packets of three sizes with `pcap encrypt` (plus
// `extra` arguments) and has tshark check every ICV and decode the inner
// packet.  Returns what encrypt printed.
RunResult expect_tshark_verifies_encrypt(const TsharkAlg& talg, bool tunnel, bool natt,
                                         const std::vector<std::string>& extra = {}) {
  const AlgCase& alg = all_algorithms()[talg.alg_index];
  TempDir dir;
  const nlohmann::json sas = twin_sas(alg, tunnel, natt);
  write_text(dir.path("sa.json"), sas.dump());
  write_wireshark_config(dir, sas, talg);

  std::vector<Bytes> frames;
  uint8_t seed = 0;
  for (size_t len : {0, 33, 700}) {
    frames.push_back(ethernet_frame(ipv4_packet(kHostA4, kHostB4, 17, len, ++seed)));
    frames.push_back(ethernet_frame(ipv6_packet(kHostA6, kHostB6, 6, len, ++seed)));
  }
  write_capture(dir.path("plain.pcap"), DLT_EN10MB, frames);
  std::vector<std::string> args = {
      "pcap", "encrypt", "--sa-file", dir.path("sa.json"), dir.path("plain.pcap"), dir.path("esp.pcap")};
  args.insert(args.end(), extra.begin(), extra.end());
  const RunResult enc = run_cli(args);
  EXPECT_EQ(enc.exit_code, 0) << enc.out << enc.err;

  const RunResult ts =
      run_command("WIRESHARK_CONFIG_DIR=" + dir.path("wireshark") + " tshark -n -r " + dir.path("esp.pcap") +
                  " -T fields -E 'separator=|' -e esp.spi -e esp.icv_good " + "-e udp.srcport -e ip.src -e ipv6.src");
  EXPECT_EQ(ts.exit_code, 0) << "tshark must be installed (package tshark): " << ts.out;
  std::istringstream lines(ts.out);
  std::string line;
  size_t good = 0, inner_seen = 0;
  while (std::getline(lines, line)) {
    if (line.find("Running as user") != std::string::npos || line.empty()) continue;
    // Fields: esp.spi | esp.icv_good (1 = good) | udp.srcport | ip.src | ipv6.src
    const size_t bar = line.find('|');
    const bool icv_good = bar != std::string::npos && line.compare(bar, 3, "|1|") == 0;
    EXPECT_TRUE(icv_good) << "ICV not good: " << line;
    if (icv_good) ++good;
    // Decrypted, the inner packet shows the hosts' addresses (tunnel) and ports.
    if (line.find(kHostA4) != std::string::npos || line.find(kHostA6) != std::string::npos) ++inner_seen;
  }
  EXPECT_EQ(good, frames.size()) << ts.out;
  EXPECT_EQ(inner_seen, frames.size()) << ts.out;
  return enc;
}

class TsharkChecksOurEsp : public ::testing::TestWithParam<std::tuple<size_t, bool, bool>> {};

TEST_P(TsharkChecksOurEsp, EveryEncryptedPacketHasAGoodIcvAndDecodesToTheInnerPacket) {
  const auto& [case_index, tunnel, natt] = GetParam();
  expect_tshark_verifies_encrypt(kTsharkAlgs[case_index], tunnel, natt);
}

// The CLI really runs intel-ipsec-mb when asked (the summary names the
// backend in effect) and tshark accepts what it sealed.
TEST(TsharkChecksOurEspOnIpsecMb, AesGcmEncryptedWithCryptoIpsecMbHasGoodIcvsInTunnelTransportAndNatT) {
  for (const size_t gcm : {size_t(0), size_t(1)})
    for (const bool tunnel : {true, false}) {
      SCOPED_TRACE(all_algorithms()[kTsharkAlgs[gcm].alg_index].name + (tunnel ? " tunnel" : " transport"));
      const RunResult enc =
          expect_tshark_verifies_encrypt(kTsharkAlgs[gcm], tunnel, !tunnel, {"--crypto", "ipsec-mb", "--json"});
      const auto j = nlohmann::json::parse(enc.out, nullptr, false);
      ASSERT_FALSE(j.is_discarded()) << enc.out;
      EXPECT_EQ(j.value("crypto", ""), "ipsec-mb") << enc.out << enc.err;
      EXPECT_EQ(enc.err.find("cannot run"), std::string::npos) << enc.err;
    }
}

TEST(TsharkChecksOurEspOnIpsecMb, WhereIntelIpsecMbCannotRunEncryptSaysSoAndUsesOpenSsl) {
  // The sanitizer stage of the test command builds only the test suites.
  if (!std::filesystem::exists(OV2_BINARY_DIR "/ctl/ipsecov2ctl")) GTEST_SKIP() << "ipsecov2ctl is not built here";
  const RunResult enc = run_command("OV2_TEST_IPSECMB_UNAVAILABLE=1 " OV2_BINARY_DIR
                                    "/ctl/ipsecov2ctl pcap encrypt --crypto ipsec-mb "
                                    "--json --sa-file /nonexistent/sa.json a.pcap b.pcap");
  // The fallback is announced before the (here missing) SA file is read.
  EXPECT_NE(enc.out.find("crypto: intel-ipsec-mb"), std::string::npos) << enc.out;
  EXPECT_NE(enc.out.find("disabled by OV2_TEST_IPSECMB_UNAVAILABLE); using OpenSSL"), std::string::npos) << enc.out;
  EXPECT_EQ(enc.exit_code, 2) << enc.out;
}

TEST(TsharkChecksOurEspOnIpsecMb, AnUnknownCryptoBackendIsAUsageErrorNamingTheChoices) {
  const RunResult enc = run_cli({"pcap", "encrypt", "--crypto", "aesni", "--sa-file", "x.json", "a.pcap", "b.pcap"});
  EXPECT_EQ(enc.exit_code, 2);
  EXPECT_NE(enc.err.find("--crypto must be openssl or ipsec-mb, not 'aesni'"), std::string::npos) << enc.err;
}

std::string tshark_case_name(const ::testing::TestParamInfo<TsharkChecksOurEsp::ParamType>& info) {
  const auto& [case_index, tunnel, natt] = info.param;
  return all_algorithms()[kTsharkAlgs[case_index].alg_index].name + (tunnel ? "_tunnel" : "_transport") +
         (natt ? "_natt" : "");
}

INSTANTIATE_TEST_SUITE_P(Algorithms, TsharkChecksOurEsp,
                         ::testing::Combine(::testing::Range<size_t>(0, std::size(kTsharkAlgs)), ::testing::Bool(),
                                            ::testing::Bool()),
                         tshark_case_name);

// ---- scapy --------------------------------------------------------------------

// The sealer script (also used to make the checked-in fixture).
const std::string kScapySealer = OV2_TEST_DATA "/pcap/scapy_seal.py";

struct ScapyCase {
  const char* name;
  size_t alg_index;
  const char* crypt;  // scapy names
  const char* auth;
  bool tunnel, v6, natt;
};

const ScapyCase kScapyCases[] = {
    {"aes_gcm_128_tunnel_v4", 0, "AES-GCM", "NULL", true, false, false},
    {"aes_gcm_256_transport_v6", 1, "AES-GCM", "NULL", false, true, false},
    {"chacha20_poly1305_tunnel_v6", 2, "CHACHA20-POLY1305", "NULL", true, true, false},
    {"aes_cbc_128_hmac_sha256_transport_v4", 3, "AES-CBC", "SHA2-256-128", false, false, false},
    {"null_hmac_sha1_tunnel_v4", 4, "NULL", "HMAC-SHA1-96", true, false, false},
    {"aes_gcm_128_tunnel_v4_natt", 0, "AES-GCM", "NULL", true, false, true},
    {"aes_cbc_128_hmac_sha256_transport_v4_natt", 3, "AES-CBC", "SHA2-256-128", false, false, true},
};

Bytes from_hex(const std::string& s) {
  Bytes b;
  for (size_t i = 0; i + 1 < s.size(); i += 2)
    b.push_back(static_cast<uint8_t>(std::stoi(s.substr(i, 2), nullptr, 16)));
  return b;
}

class ScapySealsWeOpen : public ::testing::TestWithParam<size_t> {};

TEST_P(ScapySealsWeOpen, DecryptGivesTheExactPlaintextScapyStartedFrom) {
  const ScapyCase& c = kScapyCases[GetParam()];
  const AlgCase& alg = all_algorithms()[c.alg_index];
  TempDir dir;
  const char* src = c.tunnel ? (c.v6 ? kGwA6 : kGwA4) : (c.v6 ? kHostA6 : kHostA4);
  const char* dst = c.tunnel ? (c.v6 ? kGwB6 : kGwB4) : (c.v6 ? kHostB6 : kHostB4);
  const uint32_t spi = 0x3000 + static_cast<uint32_t>(GetParam());
  const nlohmann::json sa = sa_object(alg, "in", c.tunnel ? "tunnel" : "transport", src, dst, spi, c.natt, 7);
  write_text(dir.path("sa.json"), nlohmann::json::array({sa}).dump());

  nlohmann::json cfg_case = {{"family", c.v6 ? 6 : 4},
                             {"mode", c.tunnel ? "tunnel" : "transport"},
                             {"spi", spi},
                             {"crypt", c.crypt},
                             {"auth", c.auth},
                             {"natt", c.natt},
                             {"sa_src", src},
                             {"sa_dst", dst},
                             {"src", c.v6 ? kHostA6 : kHostA4},
                             {"dst", c.v6 ? kHostB6 : kHostB4}};
  cfg_case["crypt_key"] = sa.contains("key") ? sa["key"] : sa.contains("enc-key") ? sa["enc-key"] : "";
  cfg_case["auth_key"] = sa.contains("auth-key") ? sa["auth-key"] : "";
  write_text(dir.path("cfg.json"), nlohmann::json{{"cases", {cfg_case}}}.dump());
  const RunResult py = run_command("/usr/bin/python3 " + kScapySealer + " " + dir.path("cfg.json") + " " +
                                   dir.path("plain.hex") + " " + dir.path("esp.pcap"));
  ASSERT_EQ(py.exit_code, 0) << "scapy (python3-scapy, python3-cryptography) must be installed: " << py.out;

  const RunResult dec =
      run_cli({"pcap", "decrypt", "--sa-file", dir.path("sa.json"), dir.path("esp.pcap"), dir.path("back.pcap")});
  EXPECT_EQ(dec.exit_code, 0) << dec.out << dec.err;

  std::ifstream hex(dir.path("plain.hex"));
  std::vector<Bytes> expected;
  for (std::string line; std::getline(hex, line);)
    if (!line.empty()) expected.push_back(from_hex(line));
  ASSERT_EQ(expected.size(), 4u);
  const Capture back = read_capture(dir.path("back.pcap"));
  ASSERT_EQ(back.frames.size(), expected.size()) << dec.out;
  for (size_t i = 0; i < expected.size(); ++i) {
    ASSERT_GE(back.frames[i].size(), 14u);
    const Bytes ip(back.frames[i].begin() + 14, back.frames[i].end());
    EXPECT_EQ(ip, expected[i]) << "packet " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, ScapySealsWeOpen, ::testing::Range<size_t>(0, std::size(kScapyCases)),
                         [](const auto& info) { return std::string(kScapyCases[info.param].name); });

// The checked-in fixture (tests/data/pcap/README.md): regression without python.
TEST(ScapyFixture, CheckedInScapyCaptureOpensToTheRecordedPlaintext) {
  TempDir dir;
  const std::string data = OV2_TEST_DATA "/pcap/";
  const RunResult dec = run_cli({"pcap", "decrypt", "--json", "--sa-file", data + "scapy_sa.json",
                                 data + "scapy_esp.pcap", dir.path("back.pcap")});
  ASSERT_EQ(dec.exit_code, 0) << dec.out << dec.err;
  EXPECT_EQ(nlohmann::json::parse(dec.out)["opened"], 12);
  std::ifstream hex(data + "scapy_plain.hex");
  std::vector<Bytes> expected;
  for (std::string line; std::getline(hex, line);)
    if (!line.empty()) expected.push_back(from_hex(line));
  const Capture back = read_capture(dir.path("back.pcap"));
  ASSERT_EQ(back.frames.size(), expected.size());
  ASSERT_EQ(expected.size(), 12u);
  for (size_t i = 0; i < expected.size(); ++i)
    EXPECT_EQ(Bytes(back.frames[i].begin() + 14, back.frames[i].end()), expected[i]) << "packet " << i;
}

}  // namespace
}  // namespace ov2::pcap::test
