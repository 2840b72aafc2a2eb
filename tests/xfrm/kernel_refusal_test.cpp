// On this machine (no kernel ESP, no offload-capable NIC) the NIC engine's
// requests reach the kernel and are refused; the refusal comes back in plain
// words, with no key bytes, and nothing is left installed.
#include <gtest/gtest.h>

#include <memory>

#include "common/error.h"
#include "common/secure_bytes.h"
#include "xfrm/test_netns.h"
#include "xfrm/xfrm_socket.h"

namespace ov2::xfrm::test {
namespace {

constexpr const char* kGcmKeyHex = "0x00112233445566778899aabbccddeeff01020304";  // test-only
constexpr const char* kCbcKeyHex = "0xa0a1a2a3a4a5a6a7a8a9aaabacadaeaf";          // test-only
constexpr const char* kHmacKeyHex = "0xb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf";

class KernelRefusal : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ns_ = std::make_unique<TestNetns>("r"); }
  static void TearDownTestSuite() { ns_.reset(); }

  static SaSpec gcm_sa(Direction dir) {
    SaSpec sa;
    sa.dir = dir;
    sa.mode = Mode::Tunnel;
    sa.src = IpAddr::parse("192.0.2.1");
    sa.dst = IpAddr::parse("192.0.2.2");
    sa.spi = 0x3001;
    sa.enc = EncAlg::AesGcm128;
    sa.enc_key = SecureBytes::from_hex(kGcmKeyHex);
    return sa;
  }
  static SaSpec cbc_sa() {
    SaSpec sa = gcm_sa(Direction::Out);
    sa.spi = 0x3002;
    sa.enc = EncAlg::AesCbc128;
    sa.enc_key = SecureBytes::from_hex(kCbcKeyHex);
    sa.auth = AuthAlg::HmacSha256;
    sa.auth_key = SecureBytes::from_hex(kHmacKeyHex);
    return sa;
  }
  // Adds the SA through XfrmSocket inside the namespace; returns the error.
  static std::optional<Error> add(const SaSpec& sa, OffloadKind kind) {
    std::optional<Error> error;
    ns_->run_inside([&] {
      XfrmSocket sock;
      NewSaOptions options;
      options.offload = kind;
      options.reqid = 1;
      options.ifindex = kind == OffloadKind::None ? 0 : ns_->ifindex(ns_->dev());
      try {
        sock.add_sa(sa, options, ns_->dev());
      } catch (const Error& e) {
        error = e;
      }
    });
    return error;
  }
  static std::string installed_states() { return run_command("ip -n " + ns_->name() + " xfrm state").out; }
  static void expect_no_key_bytes(const std::string& message) {
    for (const char* k : {kGcmKeyHex, kCbcKeyHex, kHmacKeyHex}) {
      EXPECT_EQ(message.find(std::string(k).substr(2, 16)), std::string::npos) << "key bytes in: " << message;
    }
  }
  static std::unique_ptr<TestNetns> ns_;
};
std::unique_ptr<TestNetns> KernelRefusal::ns_;

TEST_F(KernelRefusal, CbcHmacSaWithCryptoOffloadIsRefusedForMissingEspInPlainWordsAndNothingIsInstalled) {
  const auto error = add(cbc_sa(), OffloadKind::Crypto);
  ASSERT_TRUE(error.has_value()) << "the kernel accepted an ESP SA; this test expects a kernel without ESP";
  const std::string msg = error->what();
  EXPECT_EQ(error->code(), ErrorCode::Unsupported) << msg;
  EXPECT_NE(msg.find("the kernel refused the SA"), std::string::npos) << msg;
  EXPECT_NE(msg.find("it has no ESP support (CONFIG_INET_ESP is off) — use --engine afxdp"), std::string::npos) << msg;
  EXPECT_NE(msg.find("outbound SA spi 0x00003002 to 192.0.2.2"), std::string::npos) << msg;
  expect_no_key_bytes(msg);
  EXPECT_EQ(installed_states(), "");
}

TEST_F(KernelRefusal, GcmSaWithCryptoOffloadIsRefusedInPlainWordsAndNothingIsInstalled) {
  const auto error = add(gcm_sa(Direction::In), OffloadKind::Crypto);
  ASSERT_TRUE(error.has_value());
  const std::string msg = error->what();
  EXPECT_EQ(error->code(), ErrorCode::Unsupported) << msg;
  // Without ESP the kernel stops at the first missing piece: the GCM template
  // (ENOSYS) on kernels without it, else ESP itself (EPROTONOSUPPORT).
  const bool no_gcm = msg.find("it has no implementation of rfc4106(gcm(aes))") != std::string::npos;
  const bool no_esp = msg.find("it has no ESP support (CONFIG_INET_ESP is off)") != std::string::npos;
  EXPECT_TRUE(no_gcm || no_esp) << msg;
  EXPECT_NE(msg.find("use --engine afxdp"), std::string::npos) << msg;
  expect_no_key_bytes(msg);
  EXPECT_EQ(installed_states(), "");
}

TEST_F(KernelRefusal, PacketOffloadAndPlainSasAreRefusedTooAndNothingIsInstalled) {
  for (OffloadKind kind : {OffloadKind::Packet, OffloadKind::None}) {
    const auto error = add(cbc_sa(), kind);
    ASSERT_TRUE(error.has_value()) << to_string(kind);
    EXPECT_NE(std::string(error->what()).find("no ESP support"), std::string::npos) << error->what();
  }
  EXPECT_EQ(installed_states(), "");
}

TEST_F(KernelRefusal, DeletingAnUnknownSaSaysTheKernelHasNoSuchSa) {
  std::optional<Error> error;
  ns_->run_inside([&] {
    XfrmSocket sock;
    try {
      sock.delete_sa(sa_id_of(gcm_sa(Direction::Out)));
    } catch (const Error& e) {
      error = e;
    }
  });
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code(), ErrorCode::NotFound);
  EXPECT_NE(std::string(error->what()).find("the kernel has no such SA"), std::string::npos) << error->what();
}

TEST_F(KernelRefusal, ReadingAnUnknownSaOrItsReplayStateIsNotFound) {
  ns_->run_inside([&] {
    XfrmSocket sock;
    const SaId id = sa_id_of(gcm_sa(Direction::In));
    try {
      sock.get_sa(id);
      ADD_FAILURE() << "GETSA of an unknown SA succeeded";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::NotFound) << e.what();
    }
    try {
      sock.set_esn_high_bits(id, 1, Direction::In, 9);
      ADD_FAILURE() << "UPDATE of an unknown SA succeeded";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::NotFound) << e.what();
    }
  });
}

// This kernel (no CONFIG_XFRM_OFFLOAD) accepts the policy and silently drops
// XFRMA_OFFLOAD_DEV; the read-back catches it and removes the policy.
TEST_F(KernelRefusal, PacketOffloadPolicyOnVethIsReportedAsNotOffloadableAndRemoved) {
  std::optional<Error> error;
  ns_->run_inside([&] {
    XfrmSocket sock;
    XfrmPolicy p;
    p.dir = XfrmPolicyDir::Out;
    p.has_template = true;
    p.src = IpPrefix::parse("10.1.0.0/24");
    p.dst = IpPrefix::parse("10.2.0.0/24");
    p.tmpl_src = IpAddr::parse("192.0.2.1");
    p.tmpl_dst = IpAddr::parse("192.0.2.2");
    p.reqid = 1;
    p.offload_ifindex = ns_->ifindex(ns_->dev());
    try {
      sock.add_policy(p, ns_->dev());
    } catch (const Error& e) {
      error = e;
    }
  });
  ASSERT_TRUE(error.has_value()) << "a packet-offload policy on a veth was reported as installed";
  const std::string msg = error->what();
  EXPECT_EQ(error->code(), ErrorCode::Unsupported) << msg;
  EXPECT_NE(msg.find("device " + ns_->dev() + " cannot offload this policy"), std::string::npos) << msg;
  EXPECT_NE(msg.find("use --nic-offload crypto or --engine afxdp"), std::string::npos) << msg;
  EXPECT_EQ(run_command("ip -n " + ns_->name() + " xfrm policy").out, "");
}

}  // namespace
}  // namespace ov2::xfrm::test
