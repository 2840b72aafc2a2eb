// The NIC engine after a crash and while it runs, on this machine's kernel:
//
//  - restart recovery: kernel policies carrying ipsecov2's index tag (a
//    SIGKILLed run's) are found at start, replaced in place by the restored
//    policies with the same key, the rest removed by finish_restore(); a
//    policy somebody else installed (no tag) is never touched;
//  - kernel SA events: XFRM_MSG_EXPIRE (soft, hard) and XFRM_MSG_DELSA
//    notifications decoded and mapped to the offload handle the engine holds.
//    This kernel has no ESP, so no SA can be installed and the kernel never
//    sends such an event here: the messages are built in the kernel's layout
//    (net/xfrm/xfrm_user.c build_expire(): struct xfrm_user_expire;
//    xfrm_notify_sa() for DELSA: struct xfrm_usersa_id, then XFRMA_SA with the
//    whole xfrm_usersa_info) and go through the same decoder the socket uses.
//    The subscription itself (XFRMNLGRP_EXPIRE + XFRMNLGRP_SA) is made for
//    real in a test namespace.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/xfrm.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <regex>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "common/error.h"
#include "engine/nic_engine.h"
#include "xfrm/kernel_shaped.h"
#include "xfrm/netlink_decoder.h"
#include "policy_builder.h"
#include "xfrm/test_netns.h"
#include "xfrm/xfrm_messages.h"
#include "xfrm/xfrm_nic_backend.h"
#include "xfrm/xfrm_socket.h"

namespace ov2::xfrm::test {
namespace {

const nlmsghdr* header(const std::vector<uint8_t>& msg) { return reinterpret_cast<const nlmsghdr*>(msg.data()); }

xfrm_usersa_info state(uint8_t af, const char* src, const char* dst, uint32_t spi) {
  xfrm_usersa_info si = state_body(af, src, dst, spi);
  si.reqid = 0x01000002;
  return si;
}

std::vector<uint8_t> expire(const xfrm_usersa_info& si, bool hard) {
  xfrm_user_expire ue{};
  ue.state = si;
  ue.hard = hard ? 1 : 0;
  return kernel_message(XFRM_MSG_EXPIRE, ue);
}

TEST(KernelSaEvents, SoftExpireByPacketsIsDecodedWithTheSaKeyAndCounters) {
  xfrm_usersa_info si = state(AF_INET, "192.0.2.1", "192.0.2.2", 0x1001);
  si.lft.soft_packet_limit = 1000;
  si.lft.hard_packet_limit = 2000;
  si.curlft.packets = 1000;
  si.curlft.bytes = 150000;
  const auto msg = parse_kernel_sa_event(header(expire(si, false)));
  ASSERT_TRUE(msg);
  EXPECT_EQ(msg->kind, KernelSaEventKind::SoftExpire);
  EXPECT_EQ(msg->id.spi, 0x1001u);
  EXPECT_EQ(msg->id.dst, IpAddr::parse("192.0.2.2"));
  EXPECT_EQ(msg->id.src, IpAddr::parse("192.0.2.1"));
  EXPECT_EQ(msg->id.proto, IPPROTO_ESP);
  EXPECT_EQ(msg->reqid, 0x01000002u);
  EXPECT_EQ(msg->packets, 1000u);
  EXPECT_EQ(msg->bytes, 150000u);
  EXPECT_EQ(msg->limit, "packets");
}

TEST(KernelSaEvents, HardExpireSaysWhichLimitRanOutBytesOrTime) {
  xfrm_usersa_info si = state(AF_INET6, "2001:db8::1", "2001:db8::2", 0x2002);
  si.lft.hard_byte_limit = 1 << 20;
  si.curlft.bytes = 1 << 20;
  auto msg = parse_kernel_sa_event(header(expire(si, true)));
  ASSERT_TRUE(msg);
  EXPECT_EQ(msg->kind, KernelSaEventKind::HardExpire);
  EXPECT_EQ(msg->id.dst, IpAddr::parse("2001:db8::2"));
  EXPECT_EQ(msg->limit, "bytes");
  si.curlft.bytes = 10;  // below every counter limit: the time ran out
  si.lft.hard_add_expires_seconds = 3600;
  msg = parse_kernel_sa_event(header(expire(si, true)));
  ASSERT_TRUE(msg);
  EXPECT_EQ(msg->limit, "seconds");
}

TEST(KernelSaEvents, DeleteNotificationTakesTheSourceAndCountersFromXfrmaSa) {
  xfrm_usersa_id id{};
  const IpAddr d = IpAddr::parse("192.0.2.1");
  std::memcpy(&id.daddr, d.bytes.data(), 4);
  id.spi = htonl(0x3003);
  id.family = AF_INET;
  id.proto = IPPROTO_ESP;
  auto raw = kernel_message(XFRM_MSG_DELSA, id);
  xfrm_usersa_info si = state(AF_INET, "192.0.2.2", "192.0.2.1", 0x3003);
  si.curlft.packets = 7;
  append_attr(raw, XFRMA_SA, bytes_of(si));
  const auto msg = parse_kernel_sa_event(header(raw));
  ASSERT_TRUE(msg);
  EXPECT_EQ(msg->kind, KernelSaEventKind::Deleted);
  EXPECT_EQ(msg->id.spi, 0x3003u);
  EXPECT_EQ(msg->id.dst, d);
  EXPECT_EQ(msg->id.src, IpAddr::parse("192.0.2.2"));
  EXPECT_EQ(msg->packets, 7u);
  EXPECT_EQ(msg->limit, "");
}

TEST(KernelSaEvents, OtherMessagesAreNotEventsAndTruncatedOnesAreRefused) {
  const xfrm_usersa_info si = state(AF_INET, "192.0.2.1", "192.0.2.2", 0x1001);
  EXPECT_FALSE(parse_kernel_sa_event(header(kernel_message(XFRM_MSG_NEWSA, si))));  // the SA group also carries these
  auto cut = expire(si, false);
  auto* h = reinterpret_cast<nlmsghdr*>(cut.data());
  h->nlmsg_len = NLMSG_LENGTH(sizeof(xfrm_usersa_info) - 8);
  EXPECT_THROW(parse_kernel_sa_event(h), Error);
}

// The same mapping NicEngine::read_kernel_events applies to each decoded
// message: by SPI, destination and protocol to the handle in the engine's table.
TEST(KernelSaEvents, EventsOfSasTheEngineHoldsMapToTheirHandleOthersAreDropped) {
  XfrmSaTable table;
  XfrmSaEntry out;
  out.key = XfrmSaKey{0x1001, IpAddr::parse("192.0.2.2"), IPPROTO_ESP, Direction::Out};
  out.src = IpAddr::parse("192.0.2.1");
  table.insert(0x0100000002ull, out);
  XfrmSaEntry in;
  in.key = XfrmSaKey{0x3003, IpAddr::parse("192.0.2.1"), IPPROTO_ESP, Direction::In};
  in.src = IpAddr::parse("192.0.2.2");
  table.insert(0x0200000003ull, in);

  xfrm_usersa_info si = state(AF_INET, "192.0.2.1", "192.0.2.2", 0x1001);
  si.lft.soft_packet_limit = 5;
  si.curlft.packets = 5;
  auto e = kernel_sa_event(table, *parse_kernel_sa_event(header(expire(si, false))));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->handle, 0x0100000002ull);
  EXPECT_EQ(e->kind, KernelSaEvent::Kind::SoftExpire);
  EXPECT_EQ(e->limit, "packets");
  EXPECT_EQ(e->packets, 5u);

  e = kernel_sa_event(table, *parse_kernel_sa_event(header(expire(state(AF_INET, "192.0.2.2", "192.0.2.1", 0x3003),
                                                                    true))));
  ASSERT_TRUE(e) << "inbound SAs are found too";
  EXPECT_EQ(e->handle, 0x0200000003ull);
  EXPECT_EQ(e->kind, KernelSaEvent::Kind::HardExpire);

  // Another process's SA (an IKE daemon's software SA): not ours, no event.
  EXPECT_FALSE(kernel_sa_event(table, *parse_kernel_sa_event(
                                          header(expire(state(AF_INET, "192.0.2.1", "192.0.2.2", 0x9999), true)))));
  EXPECT_FALSE(kernel_sa_event(table, *parse_kernel_sa_event(
                                          header(expire(state(AF_INET, "192.0.2.1", "192.0.2.9", 0x1001), true)))));
}

TEST(KernelSaEvents, TheExpireAndSaGroupsCanBeJoinedInANamespaceAndNothingArrivesUnasked) {
  TestNetns ns("e");
  ns.run_inside([] {
    XfrmEventSocket events;
    ASSERT_GE(events.fd(), 0);
    // The kernel's view: a NETLINK_XFRM (6) socket in this namespace in groups
    // XFRMNLGRP_EXPIRE (2) and XFRMNLGRP_SA (3): group bits 0x2 | 0x4.
    std::ifstream f("/proc/thread-self/net/netlink");
    const std::string table((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    EXPECT_TRUE(std::regex_search(table, std::regex("\\n[0-9a-f]+ +6 +-?[0-9]+ +00000006 "))) << table;
    // A policy change is not an SA event (the policy group is not joined).
    ASSERT_EQ(run_command("ip xfrm policy add src 10.1.0.0/24 dst 10.2.0.0/24 dir out").status, 0);
    pollfd p{events.fd(), POLLIN, 0};
    EXPECT_EQ(poll(&p, 1, 100), 0) << "nothing may arrive on the expire/SA groups for a policy";
    bool lost = false;
    EXPECT_TRUE(events.read(&lost).empty());
    EXPECT_FALSE(lost);
  });
}

// ---------------------------------------------------------------------------
// Restart recovery.

PolicySpec bypass(Direction dir, const char* src, const char* dst, uint32_t priority) {
  return ov2::test::policy(dir, src, dst, PolicyAction::Bypass, 0, priority);
}

TEST(PolicyIndex, CarriesTheTagTheIdAndTheKernelsDirection) {
  EXPECT_EQ(ov2_policy_index(7, XfrmPolicyDir::Out), 0xB0000039u);
  EXPECT_EQ(ov2_policy_index(7, XfrmPolicyDir::In), 0xB0000038u);
  EXPECT_EQ(ov2_policy_index(7, XfrmPolicyDir::Fwd), 0xB000003Au);
  EXPECT_TRUE(is_ov2_policy_index(ov2_policy_index(0xFFFFFFFF, XfrmPolicyDir::Out)));
  EXPECT_FALSE(is_ov2_policy_index(9)) << "the kernel's own indexes count up from 8";
  EXPECT_FALSE(is_ov2_policy_index(0xA0000039u));
}

class RestartRecovery : public ::testing::Test {
 protected:
  void SetUp() override { ns_ = std::make_unique<TestNetns>("r"); }
  void TearDown() override { ns_.reset(); }
  std::string policies() const { return run_command("ip -n " + ns_->name() + " -s xfrm policy").out; }
  std::unique_ptr<TestNetns> ns_;
};

TEST_F(RestartRecovery, LeftoversAreReplacedInPlaceOrRemovedAndForeignPoliciesStay) {
  ns_->run_inside([&] {
    // A killed run's entries for its policies 1 and 2, as its backend installed them.
    for (const auto& [id, dst, prio] : {std::tuple{1u, "10.2.0.0/24", 10}, std::tuple{2u, "10.3.0.0/24", 20}})
      ASSERT_EQ(run_command("ip xfrm policy add src 10.1.0.0/24 dst " + std::string(dst) + " dir out priority " +
                            std::to_string(prio) + " index " +
                            std::to_string(ov2_policy_index(id, XfrmPolicyDir::Out)))
                    .status,
                0);
    ASSERT_EQ(run_command("ip xfrm policy add src 10.7.0.0/24 dst 10.8.0.0/24 dir out priority 5").status, 0)
        << "a foreign policy";
    ASSERT_EQ(run_command("ip xfrm policy add src 10.7.0.0/24 dst 10.9.0.0/24 dir in action block").status, 0);

    XfrmNicBackend next(NicBackendConfig{ns_->dev(), OffloadKind::Crypto, true});
    ASSERT_EQ(next.leftovers().size(), 2u) << "only the tagged entries are ours";
    // The saved state still has policy 1 (now with another priority): replaced, not "exists".
    next.replace_policies(Direction::Out, {{1, bypass(Direction::Out, "10.1.0.0/24", "10.2.0.0/24", 15)}});
    EXPECT_EQ(next.leftovers().size(), 1u);
    EXPECT_EQ(next.finish_restore(nullptr), 1u);
    EXPECT_TRUE(next.leftovers().empty());
    const std::string now = policies();  // before `next` goes (it removes what it holds)
    EXPECT_NE(now.find("src 10.1.0.0/24 dst 10.2.0.0/24 uid 0\n\tdir out action allow index " +
                       std::to_string(ov2_policy_index(1, XfrmPolicyDir::Out)) + " priority 15 "),
              std::string::npos)
        << now;
    EXPECT_EQ(now.find("10.3.0.0/24"), std::string::npos) << "the policy the saved state no longer has is gone";
  });
  const std::string now = policies();
  EXPECT_EQ(now.find("10.1.0.0/24"), std::string::npos) << "a normal stop removes the taken-over policy too";
  EXPECT_NE(now.find("src 10.7.0.0/24 dst 10.8.0.0/24"), std::string::npos) << "foreign policies stay";
  EXPECT_NE(now.find("src 10.7.0.0/24 dst 10.9.0.0/24"), std::string::npos);
}

TEST_F(RestartRecovery, AForeignPolicyWithTheSameSelectorIsNotTakenOver) {
  ASSERT_EQ(run_command("ip -n " + ns_->name() + " xfrm policy add src 10.1.0.0/24 dst 10.2.0.0/24 dir out priority 5")
                .status,
            0);
  ns_->run_inside([&] {
    XfrmNicBackend b(NicBackendConfig{ns_->dev(), OffloadKind::Crypto, true});
    EXPECT_TRUE(b.leftovers().empty());
    try {
      b.replace_policies(Direction::Out, {{1, bypass(Direction::Out, "10.1.0.0/24", "10.2.0.0/24", 10)}});
      ADD_FAILURE() << "a foreign policy was replaced";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::Exists);
      EXPECT_NE(std::string(e.what()).find("policy 1:"), std::string::npos) << e.what();
    }
    EXPECT_EQ(b.finish_restore(nullptr), 0u);
  });
  const std::string now = policies();
  EXPECT_NE(now.find("priority 5 "), std::string::npos) << now;
  EXPECT_EQ(now.find("priority 10 "), std::string::npos) << now;
}

}  // namespace
}  // namespace ov2::xfrm::test
