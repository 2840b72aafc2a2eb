// The inbound SPD check the AF_XDP workers apply to decrypted packets
// (dataplane/inbound_policy.h): selector extraction from real packet bytes,
// the RFC 4301 decision (best matching policy must be PROTECT with this SA),
// the "SA named by no inbound policy: unchecked" rule, and the publication
// through EpochDomain (an old table lives until every reader moved on).
#include "dataplane/inbound_policy.h"

#include <gtest/gtest.h>
#include <netinet/in.h>

#include <random>
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

// The RFC 4301 rule spelled out on the whole ordered list: the first policy
// whose selectors match decides.  The per-SA candidate lists must agree.
InboundVerdict reference_verdict(const std::vector<CompiledPolicy>& ps, uint64_t sa, const PacketSelector& s) {
  bool named = false;
  for (const auto& p : ps) named = named || (p.spec.action == PolicyAction::Protect && p.spec.sa_handle == sa);
  if (!named) return InboundVerdict::Unchecked;
  for (const auto& p : ps)
    if (policy_matches(p.spec, s))
      return p.spec.action == PolicyAction::Protect && p.spec.sa_handle == sa ? InboundVerdict::Accept
                                                                              : InboundVerdict::Mismatch;
  return InboundVerdict::Mismatch;
}

// Addresses and prefixes from a small space, so that policies nest, overlap
// and shadow each other often; both families.
struct RandomSpd {
  std::mt19937 rng;
  explicit RandomSpd(uint32_t seed) : rng(seed) {}
  uint32_t below(uint32_t n) { return std::uniform_int_distribution<uint32_t>(0, n - 1)(rng); }
  IpAddr address(Family f) {
    IpAddr a = IpAddr::any(f);
    a.bytes[0] = 10;
    a.bytes[1] = static_cast<uint8_t>(below(2));
    a.bytes[2] = static_cast<uint8_t>(below(4));
    a.bytes[f == Family::V4 ? 3 : 15] = static_cast<uint8_t>(below(4));
    return a;
  }
  IpPrefix prefix(Family f) {
    static const uint8_t v4[] = {0, 8, 15, 16, 23, 24, 30, 31, 32};
    static const uint8_t v6[] = {0, 8, 16, 24, 64, 126, 127, 128};
    const uint8_t len = f == Family::V4 ? v4[below(sizeof v4)] : v6[below(sizeof v6)];
    IpPrefix p{address(f), len};
    for (unsigned bit = len; bit < p.addr.size() * 8; ++bit)
      p.addr.bytes[bit / 8] &= static_cast<uint8_t>(~(0x80 >> (bit % 8)));
    return p;
  }
  PortRange ports() {
    if (below(2) == 0) return {};
    const auto lo = static_cast<uint16_t>(below(4));
    return {lo, static_cast<uint16_t>(lo + below(3))};
  }
  uint16_t proto() {
    static const uint16_t protos[] = {kAnyProto, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP};
    return protos[below(4)];
  }
  std::vector<CompiledPolicy> spd(uint32_t n) {
    std::vector<CompiledPolicy> v;
    for (uint32_t id = 1; id <= n; ++id) {
      const Family f = below(4) == 0 ? Family::V6 : Family::V4;
      PolicySpec s;
      s.dir = Direction::In;
      s.src = prefix(f);
      s.dst = prefix(f);
      s.proto = proto();
      if (s.proto == IPPROTO_TCP || s.proto == IPPROTO_UDP) {
        s.sport = ports();
        s.dport = ports();
      }
      const uint32_t a = below(5);
      s.action = a < 3 ? PolicyAction::Protect : a == 3 ? PolicyAction::Bypass : PolicyAction::Discard;
      s.sa_handle = s.action == PolicyAction::Protect ? 1 + below(6) : 0;
      s.priority = below(4) * 100;
      v.push_back(CompiledPolicy{id, s, s.sa_handle, 0});
    }
    return ordered(v);
  }
  PacketSelector packet() {
    const Family f = below(4) == 0 ? Family::V6 : Family::V4;
    PacketSelector s;
    s.src = address(f);
    s.dst = address(f);
    static const uint8_t protos[] = {IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_GRE};
    s.proto = protos[below(4)];
    if (s.proto == IPPROTO_TCP || s.proto == IPPROTO_UDP) {
      s.sport = static_cast<uint16_t>(below(7));
      s.dport = static_cast<uint16_t>(below(7));
    }
    return s;
  }
};

TEST(InboundPolicyTable, PerSaCandidateListsGiveTheVerdictsOfTheLinearScanOnRandomSpds) {
  size_t verdicts[3] = {};
  size_t linear_tables = 0;
  for (uint32_t seed = 1; seed <= 300; ++seed) {
    RandomSpd r(seed);
    const auto ps = r.spd(1 + r.below(40));
    const InboundPolicyTable indexed(ps);
    const InboundPolicyTable linear(ps, /*index_budget*/ 0);
    ASSERT_TRUE(indexed.indexed());
    if (!linear.indexed()) ++linear_tables;
    for (int k = 0; k < 400; ++k) {
      const PacketSelector s = r.packet();
      const uint64_t sa = r.below(8);  // 0 and 7 are named by no policy
      const InboundVerdict want = reference_verdict(ps, sa, s);
      ASSERT_EQ(indexed.check(sa, s), want) << "seed " << seed << " packet " << k;
      ASSERT_EQ(linear.check(sa, s), want) << "seed " << seed << " packet " << k;
      ++verdicts[static_cast<int>(want)];
    }
  }
  // The random SPDs exercise every outcome, many times.
  EXPECT_GT(verdicts[static_cast<int>(InboundVerdict::Accept)], 1000u);
  EXPECT_GT(verdicts[static_cast<int>(InboundVerdict::Unchecked)], 1000u);
  EXPECT_GT(verdicts[static_cast<int>(InboundVerdict::Mismatch)], 1000u);
  EXPECT_GT(linear_tables, 250u);  // budget 0 really ran the linear scan
}

TEST(InboundPolicyTable, OverlapIsTrueForEveryPairThatMatchesOnePacket) {
  // policies_overlap() may only over-approximate: two policies matching one
  // packet must overlap (else the candidate lists could miss a shadowing policy).
  RandomSpd r(77);
  const auto ps = r.spd(60);
  size_t both = 0;
  for (int k = 0; k < 3000; ++k) {
    const PacketSelector s = r.packet();
    for (const auto& a : ps)
      for (const auto& b : ps)
        if (policy_matches(a.spec, s) && policy_matches(b.spec, s)) {
          ++both;
          ASSERT_TRUE(policies_overlap(a.spec, b.spec)) << a.id << " " << b.id;
        }
  }
  EXPECT_GT(both, 1000u);
  EXPECT_FALSE(policies_overlap(policy(1, "10.1.0.0/24", "10.2.0.0/24", PolicyAction::Bypass).spec,
                                policy(2, "10.1.0.0/24", "10.3.0.0/24", PolicyAction::Bypass).spec));
  EXPECT_FALSE(policies_overlap(policy(1, "10.1.0.0/24", "10.2.0.0/24", PolicyAction::Bypass).spec,
                                policy(2, "fd00::/8", "fd01::/16", PolicyAction::Bypass).spec));
}

TEST(InboundPolicyTable, AnSpdOverTheIndexBudgetKeepsTheLinearScan) {
  std::vector<CompiledPolicy> ps;
  for (uint32_t i = 0; i < 100; ++i)
    ps.push_back(policy(i + 1, "10.1.0.0/16", "10.2.0." + std::to_string(i) + "/32", PolicyAction::Protect, i + 1));
  ps = ordered(ps);
  const InboundPolicyTable small(ps, /*index_budget*/ 100), big(ps);
  EXPECT_FALSE(small.indexed());
  EXPECT_TRUE(big.indexed());
  PacketSelector s;
  s.src = IpAddr::parse("10.1.0.1");
  s.dst = IpAddr::parse("10.2.0.99");
  s.proto = IPPROTO_UDP;
  EXPECT_EQ(small.check(100, s), InboundVerdict::Accept);
  EXPECT_EQ(big.check(100, s), InboundVerdict::Accept);
  EXPECT_EQ(small.check(99, s), InboundVerdict::Mismatch);
  EXPECT_EQ(big.check(99, s), InboundVerdict::Mismatch);
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
