// Capability detection on a veth (no ESP offload) through ethtool netlink and
// the SIOCETHTOOL ioctl, the NDIS capability form, and the offload decision.
#include "xfrm/offload_caps.h"

#include <gtest/gtest.h>

#include <memory>
#include <sstream>

#include "common/error.h"
#include "ov2_abi.h"
#include "xfrm/test_netns.h"

namespace ov2::xfrm {
namespace {

using test::TestNetns;

class OffloadCapsOnVeth : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ns_ = std::make_unique<TestNetns>("c"); }
  static void TearDownTestSuite() { ns_.reset(); }
  static std::unique_ptr<TestNetns> ns_;
};
std::unique_ptr<TestNetns> OffloadCapsOnVeth::ns_;

SaSpec gcm_sa() {
  SaSpec sa;
  sa.dir = Direction::Out;
  sa.src = IpAddr::parse("192.0.2.1");
  sa.dst = IpAddr::parse("192.0.2.2");
  sa.spi = 0x100;
  sa.enc = EncAlg::AesGcm128;
  return sa;
}

TEST_F(OffloadCapsOnVeth, EthtoolNetlinkAndIoctlBothSayVethHasNoEspOffload) {
  ns_->run_inside([&] {
    const EspFeatures nl = query_esp_features_netlink(ns_->dev());
    const EspFeatures io = query_esp_features_ioctl(ns_->dev());
    EXPECT_EQ(nl.source, "ethtool-netlink");
    EXPECT_EQ(io.source, "ioctl");
    for (const EspFeatures* f : {&nl, &io}) {
      EXPECT_FALSE(f->esp_hw_offload) << f->source;
      EXPECT_FALSE(f->esp_tx_csum_hw_offload) << f->source;
      EXPECT_FALSE(f->tx_esp_segmentation) << f->source;
      EXPECT_FALSE(f->esp_hw_offload_changeable) << f->source;  // "[fixed]" in ethtool -k
      EXPECT_EQ(f->ifindex, ns_->ifindex(ns_->dev())) << f->source;
    }
    EXPECT_EQ(query_esp_features(ns_->dev()).source, "ethtool-netlink");
  });
}

// Both readers return every feature by name; they must agree with each other
// and with `ethtool -k` for every feature ethtool prints under the same name
// (a reader that always said "off" would fail: a veth has features on).
TEST_F(OffloadCapsOnVeth, NetlinkAndIoctlFeatureSetsAgreeWithEachOtherAndWithEthtoolK) {
  DeviceFeatures nl, io;
  ns_->run_inside([&] {
    nl = read_device_features_netlink(ns_->dev());
    io = read_device_features_ioctl(ns_->dev());
  });
  EXPECT_FALSE(io.active.empty());
  EXPECT_EQ(nl.active, io.active);
  EXPECT_EQ(nl.changeable, io.changeable);
  const auto k = test::run_command("ip netns exec " + ns_->name() + " ethtool -k " + ns_->dev());
  ASSERT_EQ(k.status, 0);
  // ethtool -k prints "name: on|off [fixed]"; a few names are ethtool's own
  // aliases (rx-checksumming for rx-checksum ...) and are skipped.
  int on_in_both = 0, off_in_both = 0;
  std::istringstream lines(k.out);
  for (std::string line; std::getline(lines, line);) {
    const auto start = line.find_first_not_of(" \t");
    const auto colon = line.find(": ");
    if (start == std::string::npos || colon == std::string::npos || colon < start) continue;
    const std::string name = line.substr(start, colon - start);
    const bool on = line.compare(colon + 2, 2, "on") == 0;
    const bool reader_on = io.active.count(name) > 0;
    if (on && !reader_on) continue;  // alias, or a name the readers do not use
    EXPECT_EQ(on, reader_on) << name;
    (on ? on_in_both : off_in_both)++;
  }
  EXPECT_GE(on_in_both, 3);    // real "on" bits were read by name
  EXPECT_GE(off_in_both, 10);  // ... and real "off" ones, esp-hw-offload among them
}

TEST_F(OffloadCapsOnVeth, VethSaIsNotOffloadableBecauseEspHwOffloadIsOff) {
  ns_->run_inside([&] {
    const EspFeatures f = query_esp_features(ns_->dev());
    const OffloadDecision d = can_offload(gcm_sa(), f);
    EXPECT_FALSE(d.offloadable);
    EXPECT_EQ(d.reason.rfind("cannot offload: device has no ESP offload (esp-hw-offload off)", 0), 0u) << d.reason;
    EXPECT_NE(d.reason.find(ns_->dev()), std::string::npos) << d.reason;
    const Capabilities c = nic_capabilities(f);
    EXPECT_FALSE(c.esp);
    EXPECT_EQ(c.encryption_algorithms, 0u);
    EXPECT_EQ(c.authentication_algorithms, 0u);
    EXPECT_EQ(c.engine, "nic");
  });
}

TEST_F(OffloadCapsOnVeth, UnknownDeviceIsNotFound) {
  ns_->run_inside([&] {
    try {
      query_esp_features("ov2nosuchdev");
      ADD_FAILURE() << "no error for a missing device";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::NotFound);
      EXPECT_NE(std::string(e.what()).find("ov2nosuchdev does not exist"), std::string::npos) << e.what();
    }
  });
}

EspFeatures capable_nic() {
  EspFeatures f;
  f.device = "eth9";
  f.ifindex = 9;
  f.esp_hw_offload = true;
  f.esp_tx_csum_hw_offload = true;
  f.source = "test";
  return f;
}

TEST(OffloadDecision, GcmSaOnAnEspOffloadNicIsOffloadable) {
  for (EncAlg alg : {EncAlg::AesGcm128, EncAlg::AesGcm192, EncAlg::AesGcm256}) {
    SaSpec sa = gcm_sa();
    sa.enc = alg;
    sa.esn = true;
    const OffloadDecision d = can_offload(sa, capable_nic());
    EXPECT_TRUE(d.offloadable) << d.reason;
    EXPECT_TRUE(d.reason.empty());
  }
}

TEST(OffloadDecision, NatTAndNonGcmSasAreRefusedWithTheReason) {
  SaSpec natt = gcm_sa();
  natt.udp_encap = true;
  for (OffloadKind kind : {OffloadKind::Crypto, OffloadKind::Packet}) {
    const OffloadDecision d = can_offload(natt, capable_nic(), kind);
    EXPECT_FALSE(d.offloadable);
    EXPECT_EQ(d.reason.rfind("cannot offload: UDP-encapsulated ESP (NAT-T)", 0), 0u) << d.reason;
  }
  SaSpec cbc = gcm_sa();
  cbc.enc = EncAlg::AesCbc128;
  cbc.auth = AuthAlg::HmacSha256;
  OffloadDecision d = can_offload(cbc, capable_nic());
  EXPECT_FALSE(d.offloadable);
  EXPECT_NE(d.reason.find("AES-GCM (rfc4106) only; this SA uses aes-cbc-128 + hmac-sha256"), std::string::npos)
      << d.reason;
  SaSpec chacha = gcm_sa();
  chacha.enc = EncAlg::ChaCha20Poly1305;
  d = can_offload(chacha, capable_nic());
  EXPECT_FALSE(d.offloadable);
  EXPECT_NE(d.reason.find("chacha20-poly1305"), std::string::npos) << d.reason;
  SaSpec gmac = gcm_sa();
  gmac.enc = EncAlg::Null;
  gmac.auth = AuthAlg::AesGmac128;
  EXPECT_FALSE(can_offload(gmac, capable_nic()).offloadable);
}

TEST(OffloadDecision, CapableNicReportsNdisCryptoOffloadCapabilities) {
  EspFeatures f = capable_nic();
  f.tx_esp_segmentation = true;
  const Capabilities c = nic_capabilities(f);
  EXPECT_TRUE(c.esp);
  EXPECT_TRUE(c.ipv6);
  EXPECT_TRUE(c.transport);
  EXPECT_TRUE(c.tunnel);
  EXPECT_TRUE(c.extended_sequence_numbers);
  EXPECT_TRUE(c.lso_supported);
  EXPECT_FALSE(c.ah);
  EXPECT_FALSE(c.ah_esp_combined);
  EXPECT_FALSE(c.transport_tunnel_combined);
  EXPECT_EQ(c.udp_esp, uint32_t{IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_NONE});
  EXPECT_EQ(c.encryption_algorithms,
            uint32_t{IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_128 | IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_192 |
                     IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_256});
  EXPECT_EQ(c.authentication_algorithms,
            uint32_t{IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_128 | IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_192 |
                     IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_256});
  EXPECT_EQ(c.sa_offload_capacity, 0u);
  EXPECT_FALSE(c.chacha20_poly1305);
}

}  // namespace
}  // namespace ov2::xfrm
