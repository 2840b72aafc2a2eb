// ipsecov2d --crypto: the daemon selects the worker's crypto backend at start,
// says which in its log, `caps` and `stats`, and a wrong name is refused.
// (The bytes the intel-ipsec-mb backend seals are checked by tshark in
// tests/pcap/interop_test.cpp and against OpenSSL in tests/esp.)
// Needs root (namespaces, BPF).  Namespaces are named ov2t<pid><letter>.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "daemon_harness.h"

namespace {

using namespace ov2::daemon_test;
using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::StartsWith;

class CryptoBackendE2e : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces, BPF)";
  }
};

TEST_F(CryptoBackendE2e, WithCryptoIpsecMbTheDaemonLogsCapsAndStatsNameIntelIpsecMb) {
  DaemonInNamespace d('m', {"--crypto", "ipsec-mb"});
  Result r = d.ctl({"--json", "caps"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(json::parse(r.out)["caps"]["Crypto"].get<std::string>(), StartsWith("ipsec-mb (intel-ipsec-mb 1."));
  r = d.ctl({"caps"});
  EXPECT_THAT(r.out, HasSubstr("ipsec-mb (intel-ipsec-mb"));
  r = d.ctl({"--json", "stats"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["dataplane"]["crypto"], "ipsec-mb");
  r = d.ctl({"stats"});
  EXPECT_THAT(r.out, HasSubstr("crypto ipsec-mb"));
  EXPECT_THAT(d.log(), HasSubstr("crypto: ipsec-mb (intel-ipsec-mb"));
}

TEST_F(CryptoBackendE2e, WithCryptoOpensslTheDaemonRunsOpenSsl) {
  DaemonInNamespace d('n', {"--crypto", "openssl"});
  Result r = d.ctl({"--json", "caps"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(json::parse(r.out)["caps"]["Crypto"].get<std::string>(), StartsWith("openssl (OpenSSL 3"));
  r = d.ctl({"--json", "stats"});
  EXPECT_EQ(json::parse(r.out)["dataplane"]["crypto"], "openssl");
}

TEST_F(CryptoBackendE2e, WithoutTheOptionTheDaemonRunsIpsecMb) {
  DaemonInNamespace d('o');
  Result r = d.ctl({"--json", "stats"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["dataplane"]["crypto"], "ipsec-mb");
}

TEST_F(CryptoBackendE2e, WhereIntelIpsecMbCannotRunTheDaemonSaysSoAndRunsOpenSsl) {
  setenv("OV2_TEST_IPSECMB_UNAVAILABLE", "1", 1);  // inherited by the daemon
  DaemonInNamespace d('p');
  unsetenv("OV2_TEST_IPSECMB_UNAVAILABLE");
  Result r = d.ctl({"--json", "stats"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["dataplane"]["crypto"], "openssl");
  EXPECT_THAT(d.log(), HasSubstr("crypto: intel-ipsec-mb 1."));
  EXPECT_THAT(d.log(), HasSubstr("cannot run here (disabled by OV2_TEST_IPSECMB_UNAVAILABLE); using OpenSSL"));
}

TEST_F(CryptoBackendE2e, AnUnknownBackendNameStopsTheDaemonWithTheChoices) {
  const Result r = run({kDaemon, "--crypto", "aesni", "--socket", "/tmp/ov2t-crypto-never.sock"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.out + r.err, HasSubstr("--crypto"));
  EXPECT_THAT(r.out + r.err, HasSubstr("ipsec-mb"));
}

}  // namespace
