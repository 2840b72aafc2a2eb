// The NIC engine's kernel side end to end on this machine: a veth without ESP
// offload, a kernel without ESP.  ADD_SA is refused with the reason (first by
// the capability check, then, with the check skipped, by the kernel), nothing
// is installed, no handle is recorded; DELETE/UPDATE of unknown handles fail
// as NDIS says.
#include "xfrm/xfrm_nic_backend.h"

#include <gtest/gtest.h>

#include <memory>

#include "common/error.h"
#include "common/secure_bytes.h"
#include "xfrm/test_netns.h"

namespace ov2::xfrm {
namespace {

using test::TestNetns;

class NicBackendOnVeth : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ns_ = std::make_unique<TestNetns>("b"); }
  static void TearDownTestSuite() { ns_.reset(); }
  static SaSpec gcm_sa() {
    SaSpec sa;
    sa.dir = Direction::Out;
    sa.src = IpAddr::parse("192.0.2.1");
    sa.dst = IpAddr::parse("192.0.2.2");
    sa.spi = 0x4001;
    sa.enc = EncAlg::AesGcm128;
    sa.enc_key = SecureBytes::from_hex("0x000102030405060708090a0b0c0d0e0f10111213");  // test-only
    sa.esn = true;
    return sa;
  }
  static std::unique_ptr<TestNetns> ns_;
};
std::unique_ptr<TestNetns> NicBackendOnVeth::ns_;

TEST_F(NicBackendOnVeth, AddSaIsRefusedByTheCapabilityCheckWithTheReasonAndNoHandleIsRecorded) {
  ns_->run_inside([&] {
    XfrmNicBackend nic({ns_->dev(), OffloadKind::Crypto, false});
    EXPECT_FALSE(nic.capabilities().esp);
    try {
      nic.add_sa(7, gcm_sa());
      ADD_FAILURE() << "ADD_SA to a veth succeeded";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::Unsupported);
      EXPECT_NE(std::string(e.what()).find("cannot offload: device has no ESP offload (esp-hw-offload off)"),
                std::string::npos)
          << e.what();
      EXPECT_NE(std::string(e.what()).find("use --engine afxdp"), std::string::npos) << e.what();
    }
    EXPECT_EQ(nic.table().size(), 0u);
  });
  EXPECT_EQ(test::run_command("ip -n " + ns_->name() + " xfrm state").out, "");
}

TEST_F(NicBackendOnVeth, WithoutTheCheckTheKernelRefusesAndNothingIsInstalled) {
  ns_->run_inside([&] {
    XfrmNicBackend nic({ns_->dev(), OffloadKind::Crypto, true});
    try {
      nic.add_sa(8, gcm_sa());
      ADD_FAILURE() << "the kernel accepted an ESP SA";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::Unsupported) << e.what();
      EXPECT_NE(std::string(e.what()).find("the kernel refused the SA (outbound SA spi 0x00004001 to 192.0.2.2)"),
                std::string::npos)
          << e.what();
    }
    EXPECT_EQ(nic.table().size(), 0u);
  });
  EXPECT_EQ(test::run_command("ip -n " + ns_->name() + " xfrm state").out, "");
}

TEST_F(NicBackendOnVeth, UnknownHandlesAndBundlesAreRefusedAsNdisSays) {
  ns_->run_inside([&] {
    XfrmNicBackend nic({ns_->dev(), OffloadKind::Crypto, true});
    auto code_of = [](const std::function<void()>& f) {
      try {
        f();
      } catch (const Error& e) {
        return e.code();
      }
      return ErrorCode::Internal;
    };
    EXPECT_EQ(code_of([&] { nic.delete_sa(99); }), ErrorCode::NotFound);
    EXPECT_EQ(code_of([&] { nic.update_sa(99, 1); }), ErrorCode::NotFound);
    EXPECT_EQ(code_of([&] { nic.statistics(99); }), ErrorCode::NotFound);
    EXPECT_EQ(code_of([&] { nic.add_sa(0, gcm_sa()); }), ErrorCode::InvalidArgument);
    SaSpec bundle = gcm_sa();
    bundle.inner_handle = 5;
    EXPECT_EQ(code_of([&] { nic.add_sa(9, bundle); }), ErrorCode::Unsupported);
  });
}

TEST_F(NicBackendOnVeth, UnknownDeviceIsNotFound) {
  ns_->run_inside([&] {
    try {
      XfrmNicBackend nic({"ov2nosuchnic", OffloadKind::Crypto, false});
      ADD_FAILURE();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::NotFound) << e.what();
    }
  });
}

}  // namespace
}  // namespace ov2::xfrm
