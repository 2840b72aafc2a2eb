// ov2_deliver through BPF_PROG_TEST_RUN: only a shim with the right cookie
// becomes data_meta + the inner packet; the output bytes are checked exactly.
#include <gtest/gtest.h>

#include "bpf_harness.h"

namespace ov2::test {
namespace {

constexpr uint64_t kSaHandle = 0x1122334455667788ULL;

Bytes inner_ipv4() {
  return FrameBuilder().ipv4("10.1.0.1", "10.2.0.1", kProtoUdp).udp(1234, 80).payload({1, 2, 3, 4, 5}).build();
}
Bytes inner_ipv6() {
  return FrameBuilder().ipv6("2001:db8::1", "2001:db8::2", kProtoUdp).udp(1234, 80).payload({9, 8, 7}).build();
}
Bytes shim_frame(uint64_t cookie, uint32_t rx_info, uint16_t inner_type, const Bytes& inner) {
  return FrameBuilder()
      .ethernet(OV2_SHIM_ETHERTYPE)
      .shim(cookie, kSaHandle, rx_info, inner_type)
      .payload(inner)
      .build();
}

void expect_drop(const Bytes& frame, ov2_deliver_counter counter) {
  CounterDelta counters(&BpfPrograms::deliver_counters);
  XdpRun r = run_xdp(programs().deliver_prog_fd(), frame);
  ASSERT_EQ(r.err, 0);
  EXPECT_EQ(r.action, XDP_DROP);
  EXPECT_EQ(counters.delta(),
            CounterDelta::only(OV2_DELIVER_COUNTER_MAX, {{OV2_DELIVER_RX, 1}, {static_cast<size_t>(counter), 1}}))
      << "frame of " << frame.size() << " bytes";
}

TEST(DeliverTest, ShimWithTheCookieBecomesMetadataAndTheInnerFrame) {
  const uint32_t rx_info = ov2_rx_make(1, 1, 0, CRYPTO_SUCCESS);
  for (auto [type, inner] : {std::pair{kEthIpv4, inner_ipv4()}, std::pair{kEthIpv6, inner_ipv6()}}) {
    CounterDelta counters(&BpfPrograms::deliver_counters);
    XdpRun r = run_xdp(programs().deliver_prog_fd(), shim_frame(programs().cookie(), rx_info, type, inner));
    ASSERT_EQ(r.err, 0);
    EXPECT_EQ(r.action, XDP_PASS);
    EXPECT_EQ(r.meta, rx_meta_bytes(rx_info, kSaHandle));
    EXPECT_EQ(r.frame, FrameBuilder().ethernet(type).payload(inner).build()) << "MACs kept, EtherType = inner";
    EXPECT_EQ(counters.delta(),
              CounterDelta::only(OV2_DELIVER_COUNTER_MAX, {{OV2_DELIVER_RX, 1}, {OV2_DELIVER_ACCEPTED, 1}}));
  }
}

TEST(DeliverTest, ReceiveWordIsCopiedVerbatimIncludingFailureStatus) {
  const uint32_t rx_info = ov2_rx_make(0, 1, 1, CRYPTO_TUNNEL_ESP_AUTH_FAILED) | 0x00080000u;
  XdpRun r = run_xdp(programs().deliver_prog_fd(), shim_frame(programs().cookie(), rx_info, kEthIpv4, inner_ipv4()));
  EXPECT_EQ(r.action, XDP_PASS);
  EXPECT_EQ(r.meta, rx_meta_bytes(rx_info, kSaHandle));
}

// A datagram for the wire's ingress keeps its wire frame's 802.1Q TCI:
// ov2_deliver carries it from the shim into the metadata for ov2_verdict.
TEST(DeliverTest, WireVlanTciIsCopiedIntoTheMetadata) {
  const uint32_t rx_info = OV2_RX_DELIVER_WIRE | OV2_RX_WIRE_VLAN;
  const Bytes frame = FrameBuilder()
                          .ethernet(OV2_SHIM_ETHERTYPE)
                          .shim(programs().cookie(), 0, rx_info, kEthIpv4, 0xa064)  // PCP 5, VID 100
                          .payload(inner_ipv4())
                          .build();
  XdpRun r = run_xdp(programs().deliver_prog_fd(), frame);
  ASSERT_EQ(r.err, 0);
  EXPECT_EQ(r.action, XDP_PASS);
  EXPECT_EQ(r.meta, rx_meta_bytes(rx_info, 0, 0xa064));
  EXPECT_EQ(r.frame, FrameBuilder().ethernet(kEthIpv4).payload(inner_ipv4()).build()) << "no tag in the frame itself";
}

TEST(DeliverTest, ForgedShimWithWrongCookieIsDropped) {
  expect_drop(shim_frame(programs().cookie() ^ 1, ov2_rx_make(0, 1, 0, 0), kEthIpv4, inner_ipv4()),
              OV2_DELIVER_BAD_COOKIE);
  expect_drop(shim_frame(0, ov2_rx_make(0, 1, 0, 0), kEthIpv4, inner_ipv4()), OV2_DELIVER_BAD_COOKIE);
}

TEST(DeliverTest, AnythingButTheShimIsDropped) {
  expect_drop(FrameBuilder().ethernet(kEthIpv4).payload(inner_ipv4()).build(), OV2_DELIVER_NOT_SHIM);
  expect_drop(FrameBuilder().ethernet(kEthArp).zeros(28).build(), OV2_DELIVER_NOT_SHIM);
  expect_drop(FrameBuilder()
                  .ethernet(kEth8021Q)
                  .vlan(1, OV2_SHIM_ETHERTYPE)
                  .shim(programs().cookie(), 1, 2, kEthIpv4)
                  .payload(inner_ipv4())
                  .build(),
              OV2_DELIVER_NOT_SHIM);
}

TEST(DeliverTest, ShimWithANonIpInnerProtocolIsMalformed) {
  expect_drop(shim_frame(programs().cookie(), ov2_rx_make(0, 1, 0, 0), kEthArp, Bytes(28, 0)), OV2_DELIVER_MALFORMED);
}

TEST(DeliverTest, ShimTruncatedAtEveryOffsetIsMalformed) {
  const Bytes full = shim_frame(programs().cookie(), ov2_rx_make(0, 1, 0, 0), kEthIpv4, inner_ipv4());
  for (size_t len = 14; len < 14 + OV2_SHIM_SIZE; ++len) {
    expect_drop(Bytes(full.begin(), full.begin() + static_cast<long>(len)), OV2_DELIVER_MALFORMED);
    if (HasFailure()) return;
  }
}

}  // namespace
}  // namespace ov2::test
