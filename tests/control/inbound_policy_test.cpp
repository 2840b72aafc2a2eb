// The inbound SPD check the AF_XDP workers apply to decrypted packets
// (dataplane/inbound_policy.h): selector extraction from real packet bytes,
// the RFC 4301 decision (best matching policy must be PROTECT with this SA),
// the "SA named by no inbound policy: unchecked" rule, and the publication
// through EpochDomain (an old table lives until every reader moved on).
#include "dataplane/inbound_policy.h"

#include <gtest/gtest.h>
#include <netinet/in.h>

#include <string>
#include <vector>

#include "policy_builder.h"

namespace ov2 {
namespace {

constexpr uint64_t kSa = 0x1000001;
constexpr uint64_t kOtherSa = 0x2000002;

CompiledPolicy policy(uint32_t id, const std::string& src, const std::string& dst, PolicyAction action, uint64_t sa = 0,
                      uint32_t priority = 1000, uint16_t proto = kAnyProto, PortRange sport = {},
                      PortRange dport = {}) {
  PolicySpec s = test::policy(Direction::In, src, dst, action, sa, priority);
  s.proto = proto;
  s.sport = sport;
  s.dport = dport;
  return CompiledPolicy{id, s, action == PolicyAction::Protect ? sa : 0, 0};
}

// The control plane hands the list best first (priority, then id).
std::vector<CompiledPolicy> ordered(std::vector<CompiledPolicy> v) {
  std::stable_sort(v.begin(), v.end(), [](const CompiledPolicy& a, const CompiledPolicy& b) {
    return a.spec.priority != b.spec.priority ? a.spec.priority < b.spec.priority : a.id < b.id;
  });
  return v;
}

std::vector<uint8_t> ipv4(const std::string& src, const std::string& dst, uint8_t proto, uint16_t sport = 0,
                          uint16_t dport = 0, uint16_t frag = 0) {
  std::vector<uint8_t> p(20 + 8, 0);
  p[0] = 0x45;
  p[3] = static_cast<uint8_t>(p.size());
  p[6] = static_cast<uint8_t>(frag >> 8);
  p[7] = static_cast<uint8_t>(frag);
  p[8] = 64;
  p[9] = proto;
  const IpAddr s = IpAddr::parse(src), d = IpAddr::parse(dst);
  std::copy(s.bytes.begin(), s.bytes.begin() + 4, p.begin() + 12);
  std::copy(d.bytes.begin(), d.bytes.begin() + 4, p.begin() + 16);
  p[20] = static_cast<uint8_t>(sport >> 8);
  p[21] = static_cast<uint8_t>(sport);
  p[22] = static_cast<uint8_t>(dport >> 8);
  p[23] = static_cast<uint8_t>(dport);
  return p;
}

// IPv6 with one destination-options header (8 bytes) before the upper layer.
std::vector<uint8_t> ipv6(const std::string& src, const std::string& dst, uint8_t proto, uint16_t sport = 0,
                          uint16_t dport = 0) {
  std::vector<uint8_t> p(40 + 8 + 8, 0);
  p[0] = 0x60;
  p[5] = 16;
  p[6] = IPPROTO_DSTOPTS;
  p[7] = 64;
  const IpAddr s = IpAddr::parse(src), d = IpAddr::parse(dst);
  std::copy(s.bytes.begin(), s.bytes.end(), p.begin() + 8);
  std::copy(d.bytes.begin(), d.bytes.end(), p.begin() + 24);
  p[40] = proto;  // destination options: next header, length 0 (8 bytes)
  p[48] = static_cast<uint8_t>(sport >> 8);
  p[49] = static_cast<uint8_t>(sport);
  p[50] = static_cast<uint8_t>(dport >> 8);
  p[51] = static_cast<uint8_t>(dport);
  return p;
}

InboundVerdict verdict(const InboundPolicyTable& t, uint64_t sa, const std::vector<uint8_t>& pkt) {
  PacketSelector s;
  EXPECT_TRUE(packet_selector_of(pkt.data(), static_cast<uint32_t>(pkt.size()), &s));
  return t.check(sa, s);
}

TEST(InboundPolicySelector, ReadsAddressesProtocolAndPortsOfIpv4AndIpv6) {
  PacketSelector s;
  auto v4 = ipv4("10.2.0.5", "10.1.0.7", IPPROTO_TCP, 40000, 443);
  ASSERT_TRUE(packet_selector_of(v4.data(), static_cast<uint32_t>(v4.size()), &s));
  EXPECT_EQ(s.src, IpAddr::parse("10.2.0.5"));
  EXPECT_EQ(s.dst, IpAddr::parse("10.1.0.7"));
  EXPECT_EQ(s.proto, IPPROTO_TCP);
  EXPECT_EQ(s.sport, 40000);
  EXPECT_EQ(s.dport, 443);
  auto v6 = ipv6("fd02::5", "fd01::7", IPPROTO_UDP, 5353, 53);
  ASSERT_TRUE(packet_selector_of(v6.data(), static_cast<uint32_t>(v6.size()), &s));
  EXPECT_EQ(s.src, IpAddr::parse("fd02::5"));
  EXPECT_EQ(s.dst, IpAddr::parse("fd01::7"));
  EXPECT_EQ(s.proto, IPPROTO_UDP) << "the destination-options header is skipped";
  EXPECT_EQ(s.sport, 5353);
  EXPECT_EQ(s.dport, 53);
  // ICMP has no ports; a non-first fragment carries none.
  auto icmp = ipv4("10.2.0.5", "10.1.0.7", IPPROTO_ICMP, 0x0800, 0x1234);
  ASSERT_TRUE(packet_selector_of(icmp.data(), static_cast<uint32_t>(icmp.size()), &s));
  EXPECT_EQ(s.sport, 0);
  EXPECT_EQ(s.dport, 0);
  auto frag = ipv4("10.2.0.5", "10.1.0.7", IPPROTO_UDP, 1000, 2000, /*offset*/ 0x0010);
  ASSERT_TRUE(packet_selector_of(frag.data(), static_cast<uint32_t>(frag.size()), &s));
  EXPECT_EQ(s.sport, 0);
  EXPECT_EQ(s.dport, 0);
  // Not IP / cut short: refused.
  std::vector<uint8_t> junk{0x10, 0, 0, 0};
  EXPECT_FALSE(packet_selector_of(junk.data(), static_cast<uint32_t>(junk.size()), &s));
  EXPECT_FALSE(packet_selector_of(v4.data(), 19, &s));
  EXPECT_FALSE(packet_selector_of(v6.data(), 39, &s));
}

TEST(InboundPolicyTable, PrefixesDecideForIpv4AndIpv6) {
  InboundPolicyTable t(ordered({policy(1, "10.2.0.0/24", "10.1.0.0/24", PolicyAction::Protect, kSa),
                                policy(2, "fd02::/64", "fd01::/64", PolicyAction::Protect, kSa)}));
  EXPECT_EQ(verdict(t, kSa, ipv4("10.2.0.9", "10.1.0.1", IPPROTO_ICMP)), InboundVerdict::Accept);
  EXPECT_EQ(verdict(t, kSa, ipv4("10.9.0.9", "10.1.0.1", IPPROTO_ICMP)), InboundVerdict::Mismatch)
      << "source outside the policy: no policy matches";
  EXPECT_EQ(verdict(t, kSa, ipv4("10.2.0.9", "10.1.1.1", IPPROTO_ICMP)), InboundVerdict::Mismatch);
  EXPECT_EQ(verdict(t, kSa, ipv6("fd02::1", "fd01::2", IPPROTO_TCP, 1, 2)), InboundVerdict::Accept);
  EXPECT_EQ(verdict(t, kSa, ipv6("fd03::1", "fd01::2", IPPROTO_TCP, 1, 2)), InboundVerdict::Mismatch);
  // The family is a selector: an IPv4 /0 policy does not cover IPv6.
  InboundPolicyTable any4(ordered({policy(1, "0.0.0.0/0", "0.0.0.0/0", PolicyAction::Protect, kSa)}));
  EXPECT_EQ(verdict(any4, kSa, ipv6("fd02::1", "fd01::2", IPPROTO_TCP)), InboundVerdict::Mismatch);
  EXPECT_EQ(verdict(any4, kSa, ipv4("192.0.2.1", "198.51.100.1", IPPROTO_UDP)), InboundVerdict::Accept);
}

TEST(InboundPolicyTable, ProtocolAndPortsAreSelectors) {
  InboundPolicyTable t(ordered(
      {policy(1, "10.2.0.0/24", "10.1.0.0/24", PolicyAction::Protect, kSa, 1000, IPPROTO_TCP, {}, {443, 443})}));
  EXPECT_EQ(verdict(t, kSa, ipv4("10.2.0.1", "10.1.0.1", IPPROTO_TCP, 5000, 443)), InboundVerdict::Accept);
  EXPECT_EQ(verdict(t, kSa, ipv4("10.2.0.1", "10.1.0.1", IPPROTO_TCP, 5000, 444)), InboundVerdict::Mismatch);
  EXPECT_EQ(verdict(t, kSa, ipv4("10.2.0.1", "10.1.0.1", IPPROTO_UDP, 5000, 443)), InboundVerdict::Mismatch);
  EXPECT_EQ(verdict(t, kSa, ipv4("10.2.0.1", "10.1.0.1", IPPROTO_ICMP)), InboundVerdict::Mismatch);
}

TEST(InboundPolicyTable, TheBestMatchingPolicyDecides) {
  // A narrower DISCARD / BYPASS of better priority wins over the PROTECT.
  InboundPolicyTable t(ordered({policy(1, "10.2.0.0/24", "10.1.0.0/24", PolicyAction::Protect, kSa, 1000),
                                policy(2, "10.2.0.66/32", "10.1.0.0/24", PolicyAction::Discard, 0, 10),
                                policy(3, "10.2.0.77/32", "10.1.0.0/24", PolicyAction::Bypass, 0, 10)}));
  EXPECT_EQ(verdict(t, kSa, ipv4("10.2.0.5", "10.1.0.1", IPPROTO_ICMP)), InboundVerdict::Accept);
  EXPECT_EQ(verdict(t, kSa, ipv4("10.2.0.66", "10.1.0.1", IPPROTO_ICMP)), InboundVerdict::Mismatch);
  EXPECT_EQ(verdict(t, kSa, ipv4("10.2.0.77", "10.1.0.1", IPPROTO_ICMP)), InboundVerdict::Mismatch)
      << "BYPASS traffic must arrive in clear, not inside an SA";
  // Worse priority than the PROTECT: the PROTECT decides.
  InboundPolicyTable worse(ordered({policy(1, "10.2.0.0/24", "10.1.0.0/24", PolicyAction::Protect, kSa, 10),
                                    policy(2, "10.2.0.66/32", "10.1.0.0/24", PolicyAction::Discard, 0, 1000)}));
  EXPECT_EQ(verdict(worse, kSa, ipv4("10.2.0.66", "10.1.0.1", IPPROTO_ICMP)), InboundVerdict::Accept);
  // Equal priority: the earlier policy (lower id) decides.
  InboundPolicyTable tie(ordered({policy(2, "10.2.0.66/32", "10.1.0.0/24", PolicyAction::Discard, 0, 50),
                                  policy(1, "10.2.0.0/24", "10.1.0.0/24", PolicyAction::Protect, kSa, 50)}));
  EXPECT_EQ(verdict(tie, kSa, ipv4("10.2.0.66", "10.1.0.1", IPPROTO_ICMP)), InboundVerdict::Accept);
}

TEST(InboundPolicyTable, APacketOfAnotherSasPolicyIsAMismatch) {
  InboundPolicyTable t(ordered({policy(1, "10.2.0.0/24", "10.1.0.0/24", PolicyAction::Protect, kSa),
                                policy(2, "10.3.0.0/24", "10.1.0.0/24", PolicyAction::Protect, kOtherSa)}));
  EXPECT_EQ(verdict(t, kSa, ipv4("10.3.0.1", "10.1.0.1", IPPROTO_ICMP)), InboundVerdict::Mismatch);
  EXPECT_EQ(verdict(t, kOtherSa, ipv4("10.3.0.1", "10.1.0.1", IPPROTO_ICMP)), InboundVerdict::Accept);
  EXPECT_EQ(verdict(t, kOtherSa, ipv4("10.2.0.1", "10.1.0.1", IPPROTO_ICMP)), InboundVerdict::Mismatch);
}

TEST(InboundPolicyTable, AnSaNoInboundPolicyNamesIsUnchecked) {
  InboundPolicyTable t(ordered({policy(1, "10.2.0.0/24", "10.1.0.0/24", PolicyAction::Protect, kSa),
                                policy(2, "10.9.0.0/24", "10.1.0.0/24", PolicyAction::Discard)}));
  EXPECT_TRUE(t.names(kSa));
  EXPECT_FALSE(t.names(kOtherSa));
  EXPECT_EQ(verdict(t, kOtherSa, ipv4("10.9.0.1", "10.1.0.1", IPPROTO_ICMP)), InboundVerdict::Unchecked);
  InboundPolicyTable empty({});
  EXPECT_EQ(verdict(empty, kSa, ipv4("10.2.0.1", "10.1.0.1", IPPROTO_ICMP)), InboundVerdict::Unchecked);
}

TEST(InboundPolicies, AReplacedTableIsFreedOnlyOnceNoReaderCanSeeIt) {
  EpochDomain epochs;
  InboundPolicies pol(epochs);
  EXPECT_EQ(pol.current(), nullptr);
  pol.publish({policy(1, "10.2.0.0/24", "10.1.0.0/24", PolicyAction::Protect, kSa)});
  epochs.enter(0);  // a worker starts a batch and reads the table
  const InboundPolicyTable* seen = pol.current();
  ASSERT_NE(seen, nullptr);
  pol.publish({policy(1, "10.3.0.0/24", "10.1.0.0/24", PolicyAction::Protect, kSa)});
  EXPECT_NE(pol.current(), seen);
  EXPECT_EQ(pol.reclaim(), 1u) << "the reader may still use the old table";
  EXPECT_EQ(verdict(*seen, kSa, ipv4("10.2.0.1", "10.1.0.1", IPPROTO_ICMP)), InboundVerdict::Accept);
  epochs.leave(0);
  EXPECT_EQ(pol.reclaim(), 0u);
  EXPECT_EQ(verdict(*pol.current(), kSa, ipv4("10.3.0.1", "10.1.0.1", IPPROTO_ICMP)), InboundVerdict::Accept);
}

}  // namespace
}  // namespace ov2
