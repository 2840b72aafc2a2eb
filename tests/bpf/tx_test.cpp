// ov2_tx through BPF_PROG_TEST_RUN: SPD order and selectors, the metadata it
// writes (byte for byte), drops and counters.
#include <gtest/gtest.h>

#include "spd_fixture.h"

namespace ov2::test {
namespace {

Bytes udp_v4(const std::string& src, const std::string& dst, uint16_t sport, uint16_t dport) {
  return FrameBuilder().ethernet(kEthIpv4).ipv4(src, dst, kProtoUdp).udp(sport, dport).zeros(32).build();
}
Bytes tcp_v4(const std::string& src, const std::string& dst, uint16_t sport, uint16_t dport) {
  return FrameBuilder().ethernet(kEthIpv4).ipv4(src, dst, kProtoTcp).tcp(sport, dport).zeros(16).build();
}

class TxTest : public ::testing::Test {
 protected:
  // With a worker XSK: PROTECT/BYPASS redirect with exactly this metadata.
  static void expect_redirect(const Bytes& frame, uint64_t handle, uint64_t tunnel, ov2_tx_counter counter) {
    CounterDelta counters(&BpfPrograms::tx_counters);
    XdpRun r = run_xdp(programs().tx_prog_fd(), frame);
    ASSERT_EQ(r.err, 0);
    EXPECT_EQ(r.action, XDP_REDIRECT);
    EXPECT_EQ(r.meta, tx_meta_bytes(handle, tunnel));
    EXPECT_EQ(r.frame, frame) << "the packet itself is not modified";
    EXPECT_EQ(counters.delta(),
              CounterDelta::only(OV2_TX_COUNTER_MAX, {{OV2_TX_RX, 1}, {static_cast<size_t>(counter), 1}}));
  }
  static void expect_drop(const Bytes& frame, ov2_tx_counter counter) {
    CounterDelta counters(&BpfPrograms::tx_counters);
    XdpRun r = run_xdp(programs().tx_prog_fd(), frame);
    ASSERT_EQ(r.err, 0);
    EXPECT_EQ(r.action, XDP_DROP);
    EXPECT_EQ(counters.delta(),
              CounterDelta::only(OV2_TX_COUNTER_MAX, {{OV2_TX_RX, 1}, {static_cast<size_t>(counter), 1}}));
  }
};

TEST_F(TxTest, ProtectWritesOffloadAndTunnelHandlesAndRedirects) {
  XskEnvironment xsk(programs().tx_xsks_map_fd());
  load_outbound_spd({make_policy(1, {.dst = "10.1.0.0/16", .handle = 0xabc, .tunnel = 0xdef}),
                     make_policy(2, {.dst = "2001:db8:1::/48", .handle = 0x66})});
  expect_redirect(udp_v4("10.0.0.1", "10.1.2.3", 1000, 53), 0xabc, 0xdef, OV2_TX_PROTECT);
  expect_redirect(FrameBuilder().ethernet(kEthIpv6).ipv6("2001:db8::1", "2001:db8:1::9", kProtoUdp).udp(1, 2).build(),
                  0x66, 0, OV2_TX_PROTECT);
}

TEST_F(TxTest, BypassRedirectsWithOffloadHandleZero) {
  XskEnvironment xsk(programs().tx_xsks_map_fd());
  load_outbound_spd({make_policy(1, {.dst = "10.1.0.0/16", .action = PolicyAction::Bypass})});
  expect_redirect(udp_v4("10.0.0.1", "10.1.2.3", 1000, 53), 0, 0, OV2_TX_BYPASS);
}

TEST_F(TxTest, DiscardDrops) {
  load_outbound_spd({make_policy(1, {.dst = "10.1.0.0/16", .action = PolicyAction::Discard})});
  expect_drop(udp_v4("10.0.0.1", "10.1.2.3", 1000, 53), OV2_TX_DISCARD);
}

TEST_F(TxTest, NoPolicyDrops) {
  load_outbound_spd({make_policy(1, {.dst = "10.1.0.0/16", .handle = 1})});
  expect_drop(udp_v4("10.0.0.1", "10.2.2.3", 1000, 53), OV2_TX_NO_POLICY);  // no leaf
  load_outbound_spd({make_policy(1, {.dst = "10.1.0.0/16", .handle = 1, .proto = kProtoTcp})});
  expect_drop(udp_v4("10.0.0.1", "10.1.2.3", 1000, 53), OV2_TX_NO_POLICY);  // leaf, no selector match
}

TEST_F(TxTest, ProtectWithoutWorkerXskDrops) {
  load_outbound_spd({make_policy(1, {.dst = "10.1.0.0/16", .handle = 1})});
  expect_drop(udp_v4("10.0.0.1", "10.1.2.3", 1000, 53), OV2_TX_NO_WORKER);
}

TEST_F(TxTest, LowerPriorityNumberWinsEvenOverALongerPrefix) {
  XskEnvironment xsk(programs().tx_xsks_map_fd());
  load_outbound_spd({make_policy(1, {.dst = "10.1.2.0/24", .handle = 0x24, .priority = 50}),
                     make_policy(2, {.dst = "10.0.0.0/8", .handle = 0x8, .priority = 10}),
                     make_policy(3, {.dst = "10.1.2.3/32", .handle = 0x32, .priority = 100})});
  expect_redirect(udp_v4("10.9.9.9", "10.1.2.3", 1, 2), 0x8, 0, OV2_TX_PROTECT);
  load_outbound_spd({make_policy(1, {.dst = "10.1.2.0/24", .handle = 0x24, .priority = 50}),
                     make_policy(2, {.dst = "10.0.0.0/8", .handle = 0x8, .priority = 100}),
                     make_policy(3, {.dst = "10.1.2.3/32", .handle = 0x32, .priority = 100})});
  expect_redirect(udp_v4("10.9.9.9", "10.1.2.3", 1, 2), 0x24, 0, OV2_TX_PROTECT);
  expect_redirect(udp_v4("10.9.9.9", "10.7.2.3", 1, 2), 0x8, 0, OV2_TX_PROTECT);
}

TEST_F(TxTest, EqualPriorityIsDecidedByPolicyId) {
  XskEnvironment xsk(programs().tx_xsks_map_fd());
  load_outbound_spd(
      {make_policy(7, {.dst = "10.1.0.0/16", .handle = 0x7}), make_policy(3, {.dst = "10.0.0.0/8", .handle = 0x3})});
  expect_redirect(udp_v4("10.9.9.9", "10.1.2.3", 1, 2), 0x3, 0, OV2_TX_PROTECT);
}

TEST_F(TxTest, FirstMatchingCandidateWinsAfterEarlierOnesFailSelectors) {
  XskEnvironment xsk(programs().tx_xsks_map_fd());
  load_outbound_spd(
      {make_policy(1, {.dst = "10.1.0.0/16", .action = PolicyAction::Discard, .priority = 1, .proto = kProtoTcp}),
       make_policy(2, {.dst = "10.1.0.0/16", .src = "192.168.0.0/16", .handle = 0x2, .priority = 2}),
       make_policy(3, {.dst = "10.0.0.0/8", .handle = 0x3, .priority = 3})});
  expect_drop(tcp_v4("192.168.1.1", "10.1.0.5", 1, 2), OV2_TX_DISCARD);
  expect_redirect(udp_v4("192.168.1.1", "10.1.0.5", 1, 2), 0x2, 0, OV2_TX_PROTECT);
  expect_redirect(udp_v4("172.16.1.1", "10.1.0.5", 1, 2), 0x3, 0, OV2_TX_PROTECT);  // source prefix misses
}

TEST_F(TxTest, PortRangesAreInclusiveAndCheckedOnBothPorts) {
  XskEnvironment xsk(programs().tx_xsks_map_fd());
  load_outbound_spd({make_policy(1, {.dst = "10.1.0.0/16",
                                     .handle = 0x1,
                                     .priority = 1,
                                     .proto = kProtoTcp,
                                     .sport = {1024, 2047},
                                     .dport = {443, 443}}),
                     make_policy(2, {.dst = "10.1.0.0/16", .action = PolicyAction::Bypass, .priority = 2})});
  expect_redirect(tcp_v4("10.0.0.1", "10.1.0.1", 1024, 443), 0x1, 0, OV2_TX_PROTECT);
  expect_redirect(tcp_v4("10.0.0.1", "10.1.0.1", 2047, 443), 0x1, 0, OV2_TX_PROTECT);
  expect_redirect(tcp_v4("10.0.0.1", "10.1.0.1", 1023, 443), 0, 0, OV2_TX_BYPASS);
  expect_redirect(tcp_v4("10.0.0.1", "10.1.0.1", 2048, 443), 0, 0, OV2_TX_BYPASS);
  expect_redirect(tcp_v4("10.0.0.1", "10.1.0.1", 1500, 444), 0, 0, OV2_TX_BYPASS);
  expect_redirect(udp_v4("10.0.0.1", "10.1.0.1", 1500, 443), 0, 0, OV2_TX_BYPASS);  // protocol differs
}

TEST_F(TxTest, SctpPortsAreSelectors) {
  XskEnvironment xsk(programs().tx_xsks_map_fd());
  load_outbound_spd(
      {make_policy(1, {.dst = "10.1.0.0/16", .handle = 0x1, .priority = 1, .proto = kProtoSctp, .dport = {3868, 3868}}),
       make_policy(2, {.dst = "10.1.0.0/16", .action = PolicyAction::Bypass, .priority = 2})});
  expect_redirect(FrameBuilder().ethernet(kEthIpv4).ipv4("10.0.0.1", "10.1.0.1", kProtoSctp).sctp(5, 3868).build(), 0x1,
                  0, OV2_TX_PROTECT);
  expect_redirect(FrameBuilder().ethernet(kEthIpv4).ipv4("10.0.0.1", "10.1.0.1", kProtoSctp).sctp(5, 3869).build(), 0,
                  0, OV2_TX_BYPASS);
}

TEST_F(TxTest, FragmentsHaveNoPortsAndMatchOnlyPortlessPolicies) {
  XskEnvironment xsk(programs().tx_xsks_map_fd());
  load_outbound_spd(
      {make_policy(1, {.dst = "10.1.0.0/16", .handle = 0x1, .priority = 1, .proto = kProtoUdp, .dport = {53, 53}}),
       make_policy(2, {.dst = "10.1.0.0/16", .handle = 0x2, .priority = 2, .proto = kProtoUdp})});
  Ipv4Options frag;
  frag.frag_off = 0x0020;  // non-first fragment: its "ports" are payload
  expect_redirect(FrameBuilder().ethernet(kEthIpv4).ipv4("10.0.0.1", "10.1.0.1", kProtoUdp, frag).udp(53, 53).build(),
                  0x2, 0, OV2_TX_PROTECT);
  expect_redirect(udp_v4("10.0.0.1", "10.1.0.1", 53, 53), 0x1, 0, OV2_TX_PROTECT);
}

TEST_F(TxTest, Ipv6SourcePrefixAndExtensionHeaders) {
  XskEnvironment xsk(programs().tx_xsks_map_fd());
  load_outbound_spd({make_policy(1, {.dst = "2001:db8:1::/48",
                                     .src = "2001:db8:aa::/47",
                                     .handle = 0x1,
                                     .priority = 1,
                                     .proto = kProtoTcp,
                                     .dport = {22, 22}}),
                     make_policy(2, {.dst = "::/0", .action = PolicyAction::Discard, .priority = 9})});
  expect_redirect(FrameBuilder()
                      .ethernet(kEthIpv6)
                      .ipv6("2001:db8:ab::1", "2001:db8:1::2", kIpv6HopByHop)
                      .ipv6_ext(kProtoTcp)
                      .tcp(999, 22)
                      .build(),
                  0x1, 0, OV2_TX_PROTECT);
  expect_drop(FrameBuilder().ethernet(kEthIpv6).ipv6("2001:db8:ac::1", "2001:db8:1::2", kProtoTcp).tcp(999, 22).build(),
              OV2_TX_DISCARD);
}

TEST_F(TxTest, FamiliesDoNotMix) {
  load_outbound_spd({make_policy(1, {.dst = "0.0.0.0/0", .action = PolicyAction::Discard})});
  expect_drop(FrameBuilder().ethernet(kEthIpv6).ipv6("::1", "::2", kProtoUdp).udp(1, 2).build(), OV2_TX_NO_POLICY);
  expect_drop(udp_v4("10.0.0.1", "10.1.0.1", 1, 2), OV2_TX_DISCARD);
}

TEST_F(TxTest, ArpAndNeighbourDiscoveryAreDroppedAsNotIp) {
  load_outbound_spd({make_policy(1, {.dst = "::/0", .action = PolicyAction::Bypass}),
                     make_policy(2, {.dst = "0.0.0.0/0", .action = PolicyAction::Bypass})});
  expect_drop(FrameBuilder().ethernet(kEthArp).zeros(28).build(), OV2_TX_NOT_IP);
  for (uint8_t type = 133; type <= 137; ++type)
    expect_drop(
        FrameBuilder().ethernet(kEthIpv6).ipv6("fe80::1", "ff02::1", kProtoIcmpv6).icmpv6(type).zeros(16).build(),
        OV2_TX_NOT_IP);
}

TEST_F(TxTest, OtherIcmpv6IsClassifiedByTheSpd) {
  XskEnvironment xsk(programs().tx_xsks_map_fd());
  load_outbound_spd({make_policy(1, {.dst = "::/0", .action = PolicyAction::Bypass})});
  expect_redirect(
      FrameBuilder().ethernet(kEthIpv6).ipv6("2001:db8::1", "2001:db8::2", kProtoIcmpv6).icmpv6(128).build(), 0, 0,
      OV2_TX_BYPASS);
}

TEST_F(TxTest, MalformedPacketsAreDropped) {
  load_outbound_spd({make_policy(1, {.dst = "0.0.0.0/0", .action = PolicyAction::Bypass})});
  Ipv4Options bad_ihl;
  bad_ihl.forced_ihl = 4;
  expect_drop(FrameBuilder().ethernet(kEthIpv4).ipv4("10.0.0.1", "10.1.0.1", kProtoUdp, bad_ihl).udp(1, 2).build(),
              OV2_TX_MALFORMED);
  // TCP header cut before the ports.
  expect_drop(FrameBuilder().ethernet(kEthIpv4).ipv4("10.0.0.1", "10.1.0.1", kProtoTcp).payload({0, 1}).build(),
              OV2_TX_MALFORMED);
  const Bytes full = udp_v4("10.0.0.1", "10.1.0.1", 1, 2);
  for (size_t len = 14; len < 14 + 20 + 4; ++len)
    expect_drop(Bytes(full.begin(), full.begin() + static_cast<long>(len)), OV2_TX_MALFORMED);
}

}  // namespace
}  // namespace ov2::test
