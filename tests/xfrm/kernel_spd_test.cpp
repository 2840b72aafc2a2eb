// The NIC engine's SPD translation against this kernel: XFRM policies work
// here (only SAs are refused, no ESP), so the policies replace_policies()
// installs really appear in `ip xfrm policy` of a throwaway namespace, go on
// replace/remove, and a failing replace leaves the kernel as it was.
// Protect policies need an SA on the NIC, which this kernel cannot hold; their
// translated entries are installed through XfrmSocket directly instead.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "common/error.h"
#include "policy_builder.h"
#include "xfrm/test_netns.h"
#include "xfrm/xfrm_nic_backend.h"
#include "xfrm/xfrm_socket.h"

namespace ov2::xfrm::test {
namespace {

using ov2::test::policy;  // PROTECT entries name no SA (0): the tests hand kernel_policies_of the NIC SA

class KernelSpd : public ::testing::Test {
 protected:
  void SetUp() override { ns_ = std::make_unique<TestNetns>("k"); }
  void TearDown() override { ns_.reset(); }
  std::string policies() const { return run_command("ip -n " + ns_->name() + " xfrm policy").out; }
  // Number of lines of `ip xfrm policy` starting with "src " (one per policy).
  int policy_count() const {
    const std::string out = policies();
    int n = 0;
    for (size_t pos = 0; (pos = out.find("src ", pos)) != std::string::npos; ++pos)
      if (pos == 0 || out[pos - 1] == '\n') ++n;
    return n;
  }
  std::unique_ptr<TestNetns> ns_;
};

TEST_F(KernelSpd, BypassAndDiscardPoliciesAppearInTheKernelAndGoOnReplaceAndOnStop) {
  ns_->run_inside([&] {
    XfrmNicBackend nic({ns_->dev(), OffloadKind::Crypto, true});
    auto ike = policy(Direction::Out, "0.0.0.0/0", "0.0.0.0/0", PolicyAction::Bypass, 0, 10);
    ike.proto = 17;
    ike.dport = {500, 500};
    const auto block = policy(Direction::Out, "10.1.0.0/24", "10.9.0.0/16", PolicyAction::Discard, 0, 2000);
    nic.replace_policies(Direction::Out, {{1, ike}, {2, block}});
    nic.replace_policies(Direction::In,
                         {{3, policy(Direction::In, "10.9.0.0/16", "10.1.0.0/24", PolicyAction::Discard, 0, 2000)}});
    const std::string all = policies();
    EXPECT_NE(all.find("src 0.0.0.0/0 dst 0.0.0.0/0 proto udp dport 500 \n\tdir out priority 10"), std::string::npos)
        << all;
    EXPECT_NE(all.find("src 10.1.0.0/24 dst 10.9.0.0/16 \n\tdir out action block priority 2000"), std::string::npos)
        << all;
    EXPECT_NE(all.find("src 10.9.0.0/16 dst 10.1.0.0/24 \n\tdir in action block priority 2000"), std::string::npos)
        << all;
    EXPECT_EQ(policy_count(), 3);

    nic.replace_policies(Direction::Out, {{2, block}});  // policy del 1
    EXPECT_EQ(policies().find("dport 500"), std::string::npos) << policies();
    EXPECT_EQ(policy_count(), 2);
  });  // the backend goes away: the daemon stopping
  EXPECT_EQ(policies(), "");
}

TEST_F(KernelSpd, AFailingReplaceLeavesTheKernelAsItWasAndSaysWhichPolicy) {
  ns_->run_inside([&] {
    XfrmNicBackend nic({ns_->dev(), OffloadKind::Crypto, true});
    const auto keep = policy(Direction::Out, "10.1.0.0/24", "10.2.0.0/24", PolicyAction::Bypass, 0, 50);
    nic.replace_policies(Direction::Out, {{1, keep}});
    const std::string before = policies();
    // 2 is new and fine; 3 has 2's selectors: the kernel keeps one policy per selector and direction.
    const auto fresh = policy(Direction::Out, "10.3.0.0/24", "10.4.0.0/24", PolicyAction::Discard, 0, 60);
    const auto twin = policy(Direction::Out, "10.3.0.0/24", "10.4.0.0/24", PolicyAction::Bypass, 0, 70);
    try {
      nic.replace_policies(Direction::Out, {{1, keep}, {2, fresh}, {3, twin}});
      ADD_FAILURE() << "two kernel policies with the same selectors were accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::Exists) << e.what();
      EXPECT_NE(std::string(e.what()).find("policy 3: "), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("one policy per selector and direction"), std::string::npos) << e.what();
    }
    EXPECT_EQ(policies(), before);
    EXPECT_TRUE(nic.installed_policies(Direction::Out, 2).empty());
    // An untranslatable port range changes nothing either (refused before any request).
    auto ranged = fresh;
    ranged.proto = 6;
    ranged.dport = {1000, 2000};
    EXPECT_THROW(nic.replace_policies(Direction::Out, {{4, ranged}}), Error);
    EXPECT_EQ(policies(), before);
    // A protect policy whose SA the NIC does not hold is refused.
    auto protect = keep;
    protect.action = PolicyAction::Protect;
    protect.sa_handle = 99;
    EXPECT_THROW(nic.replace_policies(Direction::Out, {{5, protect}}), Error);
    EXPECT_EQ(policies(), before);
  });
  EXPECT_EQ(policies(), "");
}

TEST_F(KernelSpd, TranslatedProtectPoliciesAreAcceptedWithTheSaTemplateInAndFwd) {
  XfrmSaEntry sa;
  sa.key = XfrmSaKey{0x2001, IpAddr::parse("192.0.2.1"), 50, Direction::In};
  sa.src = IpAddr::parse("192.0.2.2");
  sa.reqid = 21;
  sa.mode = Mode::Tunnel;
  const auto entries =
      kernel_policies_of(1, policy(Direction::In, "10.2.0.0/24", "10.1.0.0/24", PolicyAction::Protect, 0, 100), &sa);
  ASSERT_EQ(entries.size(), 2u);
  ns_->run_inside([&] {
    XfrmSocket sock;
    for (const auto& e : entries) sock.add_policy(e, ns_->dev());
  });
  const std::string all = policies();
  for (const char* dir : {"in", "fwd"}) {
    EXPECT_NE(all.find(std::string("src 10.2.0.0/24 dst 10.1.0.0/24 \n\tdir ") + dir +
                       " priority 100 ptype main \n\ttmpl src 192.0.2.2 dst 192.0.2.1\n\t\tproto esp reqid 21 "
                       "mode tunnel"),
              std::string::npos)
        << all;
  }
  ns_->run_inside([&] {
    XfrmSocket sock;
    for (const auto& e : entries) sock.delete_policy(e);
  });
  EXPECT_EQ(policies(), "");
}

}  // namespace
}  // namespace ov2::xfrm::test
