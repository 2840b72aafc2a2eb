// ov2_wire through BPF_PROG_TEST_RUN: every branch, the bytes it passes (always
// untouched, never metadata) and its per-CPU counters.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "bpf_harness.h"

namespace ov2::test {
namespace {

using ::testing::HasSubstr;

constexpr uint32_t kEspSpi = 0x1000;    // plain ESP SA for 192.0.2.2
constexpr uint32_t kUdpSpi = 0x2000;    // UDP-encapsulated SA for 192.0.2.2
constexpr uint32_t kV6Spi = 0x3000;     // plain ESP SA for 2001:db8::2
constexpr uint32_t kV6UdpSpi = 0x4000;  // UDP-encapsulated SA for 2001:db8::2
constexpr uint64_t kEspHandle = 0x11;

ov2_sa_key sa_key(uint32_t spi, const std::string& dst) {
  ov2_sa_key key{};
  key.spi_be = htonl(spi);
  Bytes d = addr(dst);
  key.family = d.size() == 4 ? OV2_AF_INET : OV2_AF_INET6;
  std::memcpy(key.daddr, d.data(), d.size());
  return key;
}

class WireTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    programs().put_inbound_sa(sa_key(kEspSpi, "192.0.2.2"), ov2_sa_value{kEspHandle, 0, 0, 0});
    programs().put_inbound_sa(sa_key(kUdpSpi, "192.0.2.2"), ov2_sa_value{0x22, OV2_SA_F_UDP_ENCAP, 4500, 0});
    programs().put_inbound_sa(sa_key(kV6Spi, "2001:db8::2"), ov2_sa_value{0x33, 0, 0, 0});
    programs().put_inbound_sa(sa_key(kV6UdpSpi, "2001:db8::2"), ov2_sa_value{0x44, OV2_SA_F_UDP_ENCAP, 4500, 0});
  }

  // Runs the frame and checks: XDP_PASS, bytes untouched, no metadata, and
  // exactly RX + `counter` counted.
  static void expect_pass(const Bytes& frame, ov2_wire_counter counter, const std::string& what = "") {
    CounterDelta counters(&BpfPrograms::wire_counters);
    XdpRun r = run_xdp(programs().wire_prog_fd(), frame);
    ASSERT_EQ(r.err, 0);
    EXPECT_EQ(r.action, XDP_PASS);
    EXPECT_EQ(r.frame, frame);
    EXPECT_TRUE(r.meta.empty());
    EXPECT_EQ(counters.delta(),
              CounterDelta::only(OV2_WIRE_COUNTER_MAX, {{OV2_WIRE_RX, 1}, {static_cast<size_t>(counter), 1}}))
        << what << " frame of " << frame.size() << " bytes";
  }

  // Runs a fragment (a worker XSK registered) and checks: XDP_REDIRECT, bytes
  // untouched, no metadata, and exactly RX + redirect-fragment counted.
  static void expect_redirect_fragment(const Bytes& frame, const std::string& what) {
    CounterDelta counters(&BpfPrograms::wire_counters);
    XdpRun r = run_xdp(programs().wire_prog_fd(), frame);
    ASSERT_EQ(r.err, 0);
    EXPECT_EQ(r.action, XDP_REDIRECT) << what;
    EXPECT_EQ(r.frame, frame) << what;
    EXPECT_TRUE(r.meta.empty()) << what;
    EXPECT_EQ(counters.delta(),
              CounterDelta::only(OV2_WIRE_COUNTER_MAX, {{OV2_WIRE_RX, 1}, {OV2_WIRE_REDIRECT_FRAGMENT, 1}}))
        << what;
  }
};

TEST_F(WireTest, EspWithKnownSpiRedirectsToTheWorkerXsk) {
  XskEnvironment xsk(programs().wire_xsks_map_fd());
  for (const Bytes& frame : {esp_v4_frame(kEspSpi), esp_v6_frame(kV6Spi), natt_v4_frame(kUdpSpi)}) {
    CounterDelta counters(&BpfPrograms::wire_counters);
    XdpRun r = run_xdp(programs().wire_prog_fd(), frame);
    ASSERT_EQ(r.err, 0);
    EXPECT_EQ(r.action, XDP_REDIRECT);
    EXPECT_EQ(r.frame, frame);
    EXPECT_TRUE(r.meta.empty()) << "ov2_wire must never write metadata";
    EXPECT_EQ(counters.delta(), CounterDelta::only(OV2_WIRE_COUNTER_MAX, {{OV2_WIRE_RX, 1}, {OV2_WIRE_REDIRECT, 1}}));
  }
}

TEST_F(WireTest, KnownSaWithoutXskOnTheQueuePassesAsNoWorker) {
  expect_pass(esp_v4_frame(kEspSpi), OV2_WIRE_PASS_NO_WORKER);
  expect_pass(esp_v6_frame(kV6Spi), OV2_WIRE_PASS_NO_WORKER);
  expect_pass(natt_v4_frame(kUdpSpi), OV2_WIRE_PASS_NO_WORKER);
}

TEST_F(WireTest, RedirectStopsWhenTheWorkerXskIsRemoved) {
  {
    XskEnvironment xsk(programs().wire_xsks_map_fd());
    EXPECT_EQ(run_xdp(programs().wire_prog_fd(), esp_v4_frame(kEspSpi)).action, XDP_REDIRECT);
  }
  expect_pass(esp_v4_frame(kEspSpi), OV2_WIRE_PASS_NO_WORKER);
}

TEST_F(WireTest, UnknownSpiPassesUntouched) { expect_pass(esp_v4_frame(0xdead), OV2_WIRE_PASS_NO_SA); }

TEST_F(WireTest, KnownSpiWithAnotherDestinationPassesAsNoSa) {
  expect_pass(esp_v4_frame(kEspSpi, "192.0.2.3"), OV2_WIRE_PASS_NO_SA);
  // Same SPI, IPv6 destination: the family is part of the key.
  expect_pass(esp_v6_frame(kEspSpi, "2001:db8::2"), OV2_WIRE_PASS_NO_SA);
}

TEST_F(WireTest, EncapsulationMismatchPassesAndIsCounted) {
  expect_pass(natt_v4_frame(kEspSpi), OV2_WIRE_PASS_ENCAP_MISMATCH);  // SA wants plain ESP
  expect_pass(esp_v4_frame(kUdpSpi), OV2_WIRE_PASS_ENCAP_MISMATCH);   // SA wants UDP-ESP
}

TEST_F(WireTest, SaExpectingAnotherUdpPortIsAnEncapsulationMismatch) {
  const ov2_sa_key key = sa_key(0x2001, "192.0.2.2");
  programs().put_inbound_sa(key, ov2_sa_value{0x44, OV2_SA_F_UDP_ENCAP, 4501, 0});
  expect_pass(natt_v4_frame(0x2001), OV2_WIRE_PASS_ENCAP_MISMATCH);
  programs().delete_inbound_sa(key);
}

TEST_F(WireTest, DeletedSaIsNoLongerFound) {
  const ov2_sa_key key = sa_key(0x5555, "192.0.2.2");
  programs().put_inbound_sa(key, ov2_sa_value{0x55, 0, 0, 0});
  expect_pass(esp_v4_frame(0x5555), OV2_WIRE_PASS_NO_WORKER);
  ov2_sa_value v{};
  EXPECT_TRUE(programs().lookup_inbound_sa(key, &v));
  EXPECT_EQ(v.handle, 0x55u);
  programs().delete_inbound_sa(key);
  EXPECT_FALSE(programs().lookup_inbound_sa(key, nullptr));
  expect_pass(esp_v4_frame(0x5555), OV2_WIRE_PASS_NO_SA);
  EXPECT_THROW(programs().delete_inbound_sa(key), ov2::Error);
}

TEST_F(WireTest, SpiZeroIsMalformed) { expect_pass(esp_v4_frame(0), OV2_WIRE_PASS_MALFORMED); }

TEST_F(WireTest, NonIpFramesPass) {
  expect_pass(FrameBuilder().ethernet(kEthArp).zeros(28).build(), OV2_WIRE_PASS_NOT_IP);
  expect_pass(FrameBuilder().ethernet(0x88cc).zeros(40).build(), OV2_WIRE_PASS_NOT_IP);  // LLDP
}

TEST_F(WireTest, NonEspIpPasses) {
  expect_pass(FrameBuilder().ethernet(kEthIpv4).ipv4("198.51.100.1", "192.0.2.2", kProtoTcp).tcp(1, 2).build(),
              OV2_WIRE_PASS_NOT_ESP);
  expect_pass(
      FrameBuilder().ethernet(kEthIpv4).ipv4("198.51.100.1", "192.0.2.2", kProtoUdp).udp(500, 500).zeros(20).build(),
      OV2_WIRE_PASS_NOT_ESP);
  expect_pass(FrameBuilder().ethernet(kEthIpv6).ipv6("2001:db8::1", "2001:db8::2", kProtoAh).zeros(24).build(),
              OV2_WIRE_PASS_NOT_ESP);
}

TEST_F(WireTest, VlanAndQinQTaggedEspReachesTheSaLookup) {
  expect_pass(FrameBuilder()
                  .ethernet(kEth8021Q)
                  .vlan(10, kEthIpv4)
                  .ipv4("198.51.100.1", "192.0.2.2", kProtoEsp)
                  .esp(kEspSpi, 1)
                  .build(),
              OV2_WIRE_PASS_NO_WORKER);
  expect_pass(FrameBuilder()
                  .ethernet(kEth8021AD)
                  .vlan(100, kEth8021Q)
                  .vlan(10, kEthIpv4)
                  .ipv4("198.51.100.1", "192.0.2.2", kProtoEsp)
                  .esp(kEspSpi, 1)
                  .build(),
              OV2_WIRE_PASS_NO_WORKER);
  expect_pass(FrameBuilder()
                  .ethernet(kEth8021Q)
                  .vlan(10, kEthIpv6)
                  .ipv6("2001:db8::1", "2001:db8::2", kProtoEsp)
                  .esp(kV6Spi, 1)
                  .build(),
              OV2_WIRE_PASS_NO_WORKER);
}

TEST_F(WireTest, ThirdVlanTagIsBeyondTheParseDepthAndPassesAsNotIp) {
  expect_pass(FrameBuilder()
                  .ethernet(kEth8021AD)
                  .vlan(1, kEth8021Q)
                  .vlan(2, kEth8021Q)
                  .vlan(3, kEthIpv4)
                  .ipv4("198.51.100.1", "192.0.2.2", kProtoEsp)
                  .esp(kEspSpi, 1)
                  .build(),
              OV2_WIRE_PASS_NOT_IP);
}

TEST_F(WireTest, TruncatedVlanTagIsMalformed) {
  expect_pass(FrameBuilder().ethernet(kEth8021Q).payload({0, 10}).build(), OV2_WIRE_PASS_MALFORMED);
}

TEST_F(WireTest, Ipv4OptionsAreSkippedByIhl) {
  FrameBuilder::Ipv4Options opts;
  opts.options = Bytes(12, 1);  // 12 bytes of NOP: IHL 8
  expect_pass(
      FrameBuilder().ethernet(kEthIpv4).ipv4("198.51.100.1", "192.0.2.2", kProtoEsp, opts).esp(kEspSpi, 1).build(),
      OV2_WIRE_PASS_NO_WORKER);
  opts.options = Bytes(40, 1);  // maximum IHL 15
  expect_pass(
      FrameBuilder().ethernet(kEthIpv4).ipv4("198.51.100.1", "192.0.2.2", kProtoEsp, opts).esp(kEspSpi, 1).build(),
      OV2_WIRE_PASS_NO_WORKER);
  // The SPI is read behind the options, not at offset 20.
  opts.options = Bytes(8, 1);
  expect_pass(
      FrameBuilder().ethernet(kEthIpv4).ipv4("198.51.100.1", "192.0.2.2", kProtoEsp, opts).esp(0xdead, 1).build(),
      OV2_WIRE_PASS_NO_SA);
}

TEST_F(WireTest, BadIhlOrTotalLengthIsMalformed) {
  for (int ihl : {0, 1, 4}) {
    FrameBuilder::Ipv4Options opts;
    opts.forced_ihl = ihl;
    expect_pass(
        FrameBuilder().ethernet(kEthIpv4).ipv4("198.51.100.1", "192.0.2.2", kProtoEsp, opts).esp(kEspSpi, 1).build(),
        OV2_WIRE_PASS_MALFORMED);
  }
  FrameBuilder::Ipv4Options long_ihl;
  long_ihl.forced_ihl = 15;  // 60-byte header in a 20+16-byte packet
  expect_pass(FrameBuilder()
                  .ethernet(kEthIpv4)
                  .ipv4("198.51.100.1", "192.0.2.2", kProtoEsp, long_ihl)
                  .esp(kEspSpi, 1, 8)
                  .build(),
              OV2_WIRE_PASS_MALFORMED);
  for (int total : {0, 19, 27, 2000}) {  // shorter than header, than header+ESP, longer than the frame
    FrameBuilder::Ipv4Options opts;
    opts.forced_total_len = total;
    expect_pass(
        FrameBuilder().ethernet(kEthIpv4).ipv4("198.51.100.1", "192.0.2.2", kProtoEsp, opts).esp(kEspSpi, 1).build(),
        OV2_WIRE_PASS_MALFORMED, "total length " + std::to_string(total));
  }
  Bytes wrong_version = esp_v4_frame(kEspSpi);
  wrong_version[14] = 0x65;
  expect_pass(wrong_version, OV2_WIRE_PASS_MALFORMED);
}

TEST_F(WireTest, EthernetPaddingAfterTheIpPacketIsAccepted) {
  Bytes frame = esp_v4_frame(kEspSpi);
  frame.resize(frame.size() + 10, 0);
  expect_pass(frame, OV2_WIRE_PASS_NO_WORKER);
}

Bytes v4_fragment(uint16_t frag_off, uint8_t proto = kProtoEsp, size_t esp_payload = 48,
                  const std::string& dst = "192.0.2.2") {
  FrameBuilder::Ipv4Options o;
  o.frag_off = frag_off;
  FrameBuilder b;
  b.ethernet(kEthIpv4).ipv4("198.51.100.1", dst, proto, o);
  if (proto == kProtoUdp) return b.udp(4500, 4500).esp(kUdpSpi, 1).build();
  return b.esp(kEspSpi, 1, esp_payload).build();
}

Bytes v6_fragment(uint16_t offset_units, bool more, size_t esp_payload = 48, bool after_hop_by_hop = false) {
  FrameBuilder b;
  b.ethernet(kEthIpv6).ipv6("2001:db8::1", "2001:db8::2", after_hop_by_hop ? kIpv6HopByHop : kIpv6Fragment);
  if (after_hop_by_hop) b.ipv6_ext(kIpv6Fragment);
  return b.ipv6_fragment(kProtoEsp, offset_units, more).esp(kV6Spi, 1, esp_payload).build();
}

// A non-first fragment has no SPI to look up: every sane ESP fragment goes to
// the worker, which reassembles it (esp/reassembly.h) before ESP.
TEST_F(WireTest, EspFragmentsGoToTheWorkerForReassembly) {
  XskEnvironment xsk(programs().wire_xsks_map_fd());
  const std::vector<std::pair<std::string, Bytes>> frames = {
      {"IPv4 first (MF, offset 0)", v4_fragment(0x2000)},
      {"IPv4 middle (MF, offset 1480)", v4_fragment(0x2000 | 185)},
      {"IPv4 last (offset 128)", v4_fragment(0x0010)},
      {"IPv4 last with DF", v4_fragment(0x4000 | 0x0010)},
      {"IPv4 first fragment with only the ESP header", v4_fragment(0x2000, kProtoEsp, 0)},
      {"IPv4 last fragment shorter than an ESP header", v4_fragment(0x0010, kProtoEsp, 0)},
      {"IPv4 last fragment ending at 65535", v4_fragment(0x1ffe, kProtoEsp, 7)},
      {"IPv6 first", v6_fragment(0, true)},
      {"IPv6 last", v6_fragment(10, false)},
      {"IPv6 atomic fragment", v6_fragment(0, false)},
      {"IPv6 fragment after hop-by-hop", v6_fragment(10, false, 48, true)},
  };
  for (const auto& [what, frame] : frames) expect_redirect_fragment(frame, what);
}

TEST_F(WireTest, EspFragmentWithoutAWorkerXskPassesAsNoWorker) {
  expect_pass(v4_fragment(0x2000), OV2_WIRE_PASS_NO_WORKER);
  expect_pass(v6_fragment(10, false), OV2_WIRE_PASS_NO_WORKER);
}

// A non-first UDP fragment has no port: UDP fragments go to the worker only
// for a destination with a UDP-encapsulated SA (natt_dests); the rest, and
// every other protocol, stay the stack's.
TEST_F(WireTest, UdpFragmentsGoToTheWorkerOnlyForADestinationWithANattSa) {
  XskEnvironment xsk(programs().wire_xsks_map_fd());
  expect_redirect_fragment(v4_fragment(0x2000, kProtoUdp), "UDP first fragment to a NAT-T SA's destination");
  expect_redirect_fragment(v4_fragment(0x0010, kProtoUdp), "UDP last fragment (no ports) to it");
  expect_redirect_fragment(FrameBuilder()
                               .ethernet(kEthIpv6)
                               .ipv6("2001:db8::1", "2001:db8::2", kIpv6Fragment)
                               .ipv6_fragment(kProtoUdp, 0, true)
                               .udp(4500, 4500)
                               .esp(kV6UdpSpi, 1)
                               .build(),
                           "IPv6 UDP first fragment to a NAT-T SA's destination");
  expect_pass(v4_fragment(0x2000, kProtoUdp, 48, "192.0.2.3"), OV2_WIRE_PASS_FRAGMENT, "UDP to another address");
  expect_pass(v4_fragment(0x0010, kProtoUdp, 48, "192.0.2.3"), OV2_WIRE_PASS_FRAGMENT, "UDP last to another");
  FrameBuilder::Ipv4Options more;
  more.frag_off = 0x2000 | 3;
  expect_pass(FrameBuilder().ethernet(kEthIpv4).ipv4("198.51.100.1", "192.0.2.2", kProtoTcp, more).tcp(1, 2).build(),
              OV2_WIRE_PASS_FRAGMENT, "TCP");
  // Malformed sizes are malformed for UDP too.
  expect_pass(v4_fragment(0x1fff, kProtoUdp), OV2_WIRE_PASS_MALFORMED, "UDP past 65535");
}

// A router's wire: ESP between two other hosts passes through in fragments.
// Without an ESP SA for their destination they are the stack's to forward
// (or reassemble), untouched, even when a worker XSK is there.
TEST_F(WireTest, EspFragmentsToAnAddressWithoutAnEspSaPassToTheStack) {
  XskEnvironment xsk(programs().wire_xsks_map_fd());
  const ov2_sa_key natt_only = sa_key(0x6001, "192.0.2.8");
  programs().put_inbound_sa(natt_only, ov2_sa_value{0x61, OV2_SA_F_UDP_ENCAP, 4500, 0});
  auto v6_to = [](const std::string& dst, uint16_t offset_units, bool more) {
    return FrameBuilder()
        .ethernet(kEthIpv6)
        .ipv6("2001:db8::1", dst, kIpv6Fragment)
        .ipv6_fragment(kProtoEsp, offset_units, more)
        .esp(kV6Spi, 1)
        .build();
  };
  const std::vector<std::pair<std::string, Bytes>> frames = {
      {"IPv4 first to an address with no SA", v4_fragment(0x2000, kProtoEsp, 48, "192.0.2.9")},
      {"IPv4 middle", v4_fragment(0x2000 | 185, kProtoEsp, 48, "192.0.2.9")},
      {"IPv4 last", v4_fragment(0x0010, kProtoEsp, 48, "192.0.2.9")},
      {"IPv4 to an address with only a NAT-T SA", v4_fragment(0x2000, kProtoEsp, 48, "192.0.2.8")},
      {"IPv4 with a known SPI, another destination", v4_fragment(0x2000, kProtoEsp, 48, "192.0.2.3")},
      {"IPv4 past 65535: the stack's to judge", v4_fragment(0x1fff, kProtoEsp, 48, "192.0.2.9")},
      {"IPv6 first", v6_to("2001:db8::9", 0, true)},
      {"IPv6 last", v6_to("2001:db8::9", 10, false)},
      {"IPv6 with the IPv4 SA's address bytes", v6_to("c000:202::", 10, false)},
      {"802.1Q-tagged IPv4", FrameBuilder()
                                 .ethernet(kEth8021Q)
                                 .vlan(10, kEthIpv4)
                                 .ipv4("198.51.100.1", "192.0.2.9", kProtoEsp, Ipv4Options{.frag_off = 0x2000})
                                 .esp(kEspSpi, 1)
                                 .build()},
  };
  for (const auto& [what, frame] : frames) expect_pass(frame, OV2_WIRE_PASS_FRAGMENT_NO_SA, what);
  programs().delete_inbound_sa(natt_only);
}

// The inbound SAs of each address are counted by encapsulation (in user
// space) through every put of a new SA, replacement (same or other
// encapsulation), failed put and delete; inbound_dests, read back from the
// BPF map, holds 1 for each non-zero count and loses an address whose last
// SA goes.  ESP and UDP fragments follow their own kind.
TEST_F(WireTest, InboundDestinationsCountEspAndNattSasPerAddress) {
  XskEnvironment xsk(programs().wire_xsks_map_fd());
  const ov2_sa_key k1 = sa_key(0x7001, "192.0.2.7"), k2 = sa_key(0x7002, "192.0.2.7");
  const ov2_sa_key k3 = sa_key(0x7003, "192.0.2.7");
  const Bytes esp_frag = v4_fragment(0x0010, kProtoEsp, 48, "192.0.2.7");
  const Bytes udp_frag = v4_fragment(0x0010, kProtoUdp, 48, "192.0.2.7");
  using Counts = std::pair<uint32_t, uint32_t>;
  auto counts = [&] {
    const ov2_dest_sas d = programs().inbound_destination_sas(k1);
    return Counts{d.esp, d.udp_encap};
  };
  auto in_map = [&] {
    const ov2_dest_sas d = programs().inbound_destination(k1).value_or(ov2_dest_sas{});
    return Counts{d.esp, d.udp_encap};
  };
  auto action = [](const Bytes& frame) { return run_xdp(programs().wire_prog_fd(), frame).action; };
  EXPECT_FALSE(programs().inbound_destination(k1).has_value());
  expect_pass(esp_frag, OV2_WIRE_PASS_FRAGMENT_NO_SA, "no SA yet");
  programs().put_inbound_sa(k1, ov2_sa_value{0x71, 0, 0, 0});
  programs().put_inbound_sa(k2, ov2_sa_value{0x72, 0, 0, 0});
  EXPECT_EQ(counts(), (Counts{2, 0}));
  EXPECT_EQ(in_map(), (Counts{1, 0}));
  EXPECT_EQ(action(esp_frag), XDP_REDIRECT);
  expect_pass(udp_frag, OV2_WIRE_PASS_FRAGMENT, "ESP SAs only: UDP stays the stack's");
  programs().put_inbound_sa(k1, ov2_sa_value{0x71, OV2_SA_F_ESN, 0, 0});  // replaced, same encapsulation
  EXPECT_EQ(counts(), (Counts{2, 0}));
  ov2_sa_value v{};
  ASSERT_TRUE(programs().lookup_inbound_sa(k1, &v));
  EXPECT_EQ(v.flags, unsigned(OV2_SA_F_ESN)) << "the replacement is in the SA map";
  programs().put_inbound_sa(k2, ov2_sa_value{0x72, OV2_SA_F_UDP_ENCAP, 4500, 0});  // replaced by NAT-T
  EXPECT_EQ(counts(), (Counts{1, 1}));
  EXPECT_EQ(in_map(), (Counts{1, 1}));
  EXPECT_EQ(action(esp_frag), XDP_REDIRECT);
  EXPECT_EQ(action(udp_frag), XDP_REDIRECT);
  programs().put_inbound_sa(k3, ov2_sa_value{0x73, OV2_SA_F_UDP_ENCAP, 4500, 0});
  EXPECT_EQ(counts(), (Counts{1, 2}));
  EXPECT_EQ(in_map(), (Counts{1, 1}));
  programs().delete_inbound_sa(k1);
  EXPECT_EQ(counts(), (Counts{0, 2}));
  EXPECT_EQ(in_map(), (Counts{0, 1}));
  expect_pass(esp_frag, OV2_WIRE_PASS_FRAGMENT_NO_SA, "the last ESP SA deleted");
  EXPECT_EQ(action(udp_frag), XDP_REDIRECT);
  EXPECT_THROW(programs().delete_inbound_sa(k1), ov2::Error);  // not there: nothing counted
  EXPECT_EQ(counts(), (Counts{0, 2}));
  programs().put_inbound_sa(k2, ov2_sa_value{0x72, 0, 0, 0});  // back to plain ESP
  EXPECT_EQ(counts(), (Counts{1, 1}));
  EXPECT_EQ(in_map(), (Counts{1, 1}));
  EXPECT_EQ(programs().inbound_destinations_mismatch(), "");
  // Every SA of the address deleted (what a flush does): the entry is gone.
  programs().delete_inbound_sa(k2);
  EXPECT_EQ(in_map(), (Counts{0, 1}));
  programs().delete_inbound_sa(k3);
  EXPECT_FALSE(programs().inbound_destination(k1).has_value());
  EXPECT_EQ(counts(), (Counts{0, 0}));
  EXPECT_EQ(programs().inbound_destinations_mismatch(), "");
  expect_pass(esp_frag, OV2_WIRE_PASS_FRAGMENT_NO_SA, "all SAs deleted");
  expect_pass(udp_frag, OV2_WIRE_PASS_FRAGMENT, "all SAs deleted");
}

// A put that the destination map refuses (full: OV2_MAX_INBOUND_DESTS
// addresses) changes nothing: no SA entry, no count, no destination entry;
// a new SA to an address already there still goes in, and once an address
// is freed the refused one goes in too.
TEST_F(WireTest, APutRefusedByAFullDestinationMapChangesNothing) {
  BpfPrograms p(BpfPrograms::Options{.cookie = 0x43, .verdict_mark = 0});
  auto dest = [](uint32_t i) {
    ov2_sa_key k{};
    k.spi_be = htonl(0x9000);
    k.family = OV2_AF_INET;
    const uint32_t a = htonl(0x0a000000u + i);  // 10.0.0.0/8
    std::memcpy(k.daddr, &a, 4);
    return k;
  };
  for (uint32_t i = 0; i < OV2_MAX_INBOUND_DESTS; ++i) p.put_inbound_sa(dest(i), ov2_sa_value{0x100 + i, 0, 0, 0});
  ov2_sa_key extra = dest(OV2_MAX_INBOUND_DESTS);
  try {
    p.put_inbound_sa(extra, ov2_sa_value{0x1, 0, 0, 0});
    ADD_FAILURE() << "a destination beyond the map's capacity was taken";
  } catch (const ov2::Error& e) {
    EXPECT_EQ(e.code(), ov2::ErrorCode::ResourceExhausted);
    EXPECT_THAT(e.what(), HasSubstr("inbound destination map is full"));
  }
  EXPECT_FALSE(p.lookup_inbound_sa(extra, nullptr));
  EXPECT_FALSE(p.inbound_destination(extra).has_value());
  EXPECT_EQ(p.inbound_destination_sas(extra).esp, 0u);
  // A second SA (another SPI) to an address in the map needs no new destination entry.
  ov2_sa_key second = dest(5);
  second.spi_be = htonl(0x9001);
  p.put_inbound_sa(second, ov2_sa_value{0x2, OV2_SA_F_UDP_ENCAP, 4500, 0});
  EXPECT_EQ(p.inbound_destination_sas(second).udp_encap, 1u);
  EXPECT_EQ(p.inbound_destinations_mismatch(), "");
  p.delete_inbound_sa(dest(7));
  p.put_inbound_sa(extra, ov2_sa_value{0x1, 0, 0, 0});
  EXPECT_EQ(p.inbound_destination(extra).value_or(ov2_dest_sas{}).esp, 1u);
  EXPECT_EQ(p.inbound_destinations_mismatch(), "");
}

// A daemon restart loads the programs anew: their maps are the process's own
// (not pinned), so the counts start from zero and follow the SAs installed
// again, whatever another instance holds.
TEST_F(WireTest, FreshlyLoadedProgramsCountOnlyTheSasPutIntoThem) {
  const ov2_sa_key k = sa_key(kEspSpi, "192.0.2.2");
  using Counts = std::pair<uint32_t, uint32_t>;
  auto counts = [&](const BpfPrograms& p) {
    const ov2_dest_sas d = p.inbound_destination_sas(k);
    return Counts{d.esp, d.udp_encap};
  };
  auto in_map = [&](const BpfPrograms& p) {
    const ov2_dest_sas d = p.inbound_destination(k).value_or(ov2_dest_sas{});
    return Counts{d.esp, d.udp_encap};
  };
  ASSERT_EQ(counts(programs()), (Counts{1, 1})) << "the suite's SAs in the first instance";
  BpfPrograms restarted(BpfPrograms::Options{.cookie = 0x42, .verdict_mark = 0});
  EXPECT_FALSE(restarted.inbound_destination(k).has_value());
  EXPECT_EQ(counts(restarted), (Counts{0, 0}));
  restarted.put_inbound_sa(k, ov2_sa_value{kEspHandle, 0, 0, 0});
  restarted.put_inbound_sa(sa_key(kUdpSpi, "192.0.2.2"), ov2_sa_value{0x22, OV2_SA_F_UDP_ENCAP, 4500, 0});
  EXPECT_EQ(counts(restarted), (Counts{1, 1}));
  EXPECT_EQ(in_map(restarted), (Counts{1, 1}));
  EXPECT_EQ(restarted.inbound_destinations_mismatch(), "");
  EXPECT_EQ(counts(programs()), (Counts{1, 1})) << "the first instance is untouched";
  EXPECT_EQ(programs().inbound_destinations_mismatch(), "");
}

TEST_F(WireTest, EspFragmentsWithImpossibleOffsetsOrLengthsAreMalformed) {
  XskEnvironment xsk(programs().wire_xsks_map_fd());
  // 56 payload bytes at offset 65528: beyond 65535.
  expect_pass(v4_fragment(0x1fff), OV2_WIRE_PASS_MALFORMED, "IPv4 past 65535");
  expect_pass(v4_fragment(0x2000 | 0x1fff), OV2_WIRE_PASS_MALFORMED, "IPv4 MF past 65535");
  expect_pass(v6_fragment(8191, false), OV2_WIRE_PASS_MALFORMED, "IPv6 past 65535");
  // A fragment that is not the last carries a non-zero multiple of 8 bytes.
  expect_pass(v4_fragment(0x2000, kProtoEsp, 44), OV2_WIRE_PASS_MALFORMED, "IPv4 MF with 52 bytes");
  expect_pass(v6_fragment(0, true, 44), OV2_WIRE_PASS_MALFORMED, "IPv6 M with 52 bytes");
  FrameBuilder::Ipv4Options empty;
  empty.frag_off = 0x2000 | 1;
  empty.forced_total_len = 20;
  expect_pass(FrameBuilder().ethernet(kEthIpv4).ipv4("198.51.100.1", "192.0.2.2", kProtoEsp, empty).build(),
              OV2_WIRE_PASS_MALFORMED, "IPv4 MF with no payload");
  // A fragment header cut off by the payload length stays malformed.
  expect_pass(FrameBuilder()
                  .ethernet(kEthIpv6)
                  .ipv6("2001:db8::1", "2001:db8::2", kIpv6Fragment, 4)
                  .ipv6_fragment(kProtoEsp, 0, true)
                  .build(),
              OV2_WIRE_PASS_MALFORMED, "IPv6 fragment header beyond the payload");
}

TEST_F(WireTest, Ipv6ExtensionHeaderChainIsWalked) {
  expect_pass(FrameBuilder()
                  .ethernet(kEthIpv6)
                  .ipv6("2001:db8::1", "2001:db8::2", kIpv6HopByHop)
                  .ipv6_ext(kIpv6DestOpts)
                  .ipv6_ext(kIpv6Routing, 2)
                  .ipv6_ext(kProtoEsp, 1)
                  .esp(kV6Spi, 1)
                  .build(),
              OV2_WIRE_PASS_NO_WORKER);
}

TEST_F(WireTest, SixIpv6ExtensionHeadersAreWalkedSevenAreTooDeep) {
  auto chain = [](int n, uint32_t spi) {
    FrameBuilder b;
    b.ethernet(kEthIpv6).ipv6("2001:db8::1", "2001:db8::2", n > 0 ? kIpv6DestOpts : kProtoEsp);
    for (int i = 0; i < n; ++i) b.ipv6_ext(i + 1 < n ? kIpv6DestOpts : kProtoEsp);
    return b.esp(spi, 1).build();
  };
  expect_pass(chain(6, kV6Spi), OV2_WIRE_PASS_NO_WORKER);
  expect_pass(chain(7, kV6Spi), OV2_WIRE_PASS_EXT_TOO_DEEP);
}

// An IPv6 ESP fragment behind `ext` (Hop-by-Hop, Routing, Destination
// Options: the unfragmentable part, RFC 8200 §4.1/4.5), to the ESP SA's address.
Bytes v6_fragment_behind(const std::vector<uint8_t>& ext, uint16_t offset_units, bool more) {
  FrameBuilder b;
  b.ethernet(kEthIpv6).ipv6("2001:db8::1", "2001:db8::2", ext.empty() ? kIpv6Fragment : ext[0]);
  for (size_t i = 0; i < ext.size(); ++i) b.ipv6_ext(i + 1 < ext.size() ? ext[i + 1] : kIpv6Fragment, i == 1 ? 2 : 0);
  return b.ipv6_fragment(kProtoEsp, offset_units, more).esp(kV6Spi, 1).build();
}

TEST_F(WireTest, Ipv6EspFragmentsBehindExtensionHeadersGoToTheWorker) {
  XskEnvironment xsk(programs().wire_xsks_map_fd());
  const std::vector<std::pair<std::string, Bytes>> frames = {
      {"behind Routing", v6_fragment_behind({kIpv6Routing}, 0, true)},
      {"behind Destination Options", v6_fragment_behind({kIpv6DestOpts}, 10, false)},
      {"behind Hop-by-Hop, Destination Options, Routing",
       v6_fragment_behind({kIpv6HopByHop, kIpv6DestOpts, kIpv6Routing}, 10, true)},
      {"behind six headers", v6_fragment_behind(std::vector<uint8_t>(6, kIpv6DestOpts), 10, false)},
  };
  for (const auto& [what, frame] : frames) expect_redirect_fragment(frame, what);
}

TEST_F(WireTest, Ipv6FragmentsBehindBrokenOrTooLongChainsPass) {
  XskEnvironment xsk(programs().wire_xsks_map_fd());
  expect_pass(v6_fragment_behind(std::vector<uint8_t>(7, kIpv6DestOpts), 10, false), OV2_WIRE_PASS_EXT_TOO_DEEP,
              "seven headers before the fragment header");
  Bytes past = v6_fragment_behind({kIpv6DestOpts}, 10, false);
  past[14 + 41] = 200;  // the header's length runs past the packet
  expect_pass(past, OV2_WIRE_PASS_MALFORMED, "a header past the packet");
  // The fragment header itself cut off behind the chain.
  expect_pass(FrameBuilder()
                  .ethernet(kEthIpv6)
                  .ipv6("2001:db8::1", "2001:db8::2", kIpv6Routing, 12)
                  .ipv6_ext(kIpv6Fragment)
                  .ipv6_fragment(kProtoEsp, 0, true)
                  .build(),
              OV2_WIRE_PASS_MALFORMED, "fragment header beyond the payload");
}

TEST_F(WireTest, MalformedIpv6IsCounted) {
  // Payload length 0 (jumbogram) and longer than the frame.
  expect_pass(FrameBuilder().ethernet(kEthIpv6).ipv6("2001:db8::1", "2001:db8::2", kProtoEsp, 0).esp(kV6Spi, 1).build(),
              OV2_WIRE_PASS_MALFORMED);
  expect_pass(
      FrameBuilder().ethernet(kEthIpv6).ipv6("2001:db8::1", "2001:db8::2", kProtoEsp, 500).esp(kV6Spi, 1).build(),
      OV2_WIRE_PASS_MALFORMED);
  // An extension header whose length runs past the packet.
  expect_pass(FrameBuilder()
                  .ethernet(kEthIpv6)
                  .ipv6("2001:db8::1", "2001:db8::2", kIpv6HopByHop)
                  .payload({kProtoEsp, 200, 0, 0, 0, 0, 0, 0})
                  .esp(kV6Spi, 1)
                  .build(),
              OV2_WIRE_PASS_MALFORMED);
}

TEST_F(WireTest, NatTraversalNonEspMarkerIsIke) {
  expect_pass(FrameBuilder()
                  .ethernet(kEthIpv4)
                  .ipv4("198.51.100.1", "192.0.2.2", kProtoUdp)
                  .udp(4500, 4500)
                  .zeros(4)
                  .payload({0x12, 0x34, 0x56, 0x78})
                  .zeros(60)
                  .build(),
              OV2_WIRE_PASS_IKE);
}

TEST_F(WireTest, Ipv6UdpEncapsulatedEspIsHandledLikeIpv4) {
  auto natt_v6 = [](uint32_t spi) {
    return FrameBuilder()
        .ethernet(kEthIpv6)
        .ipv6("2001:db8::1", "2001:db8::2", kProtoUdp)
        .udp(4500, 4500)
        .esp(spi, 1)
        .build();
  };
  expect_pass(natt_v6(kV6UdpSpi), OV2_WIRE_PASS_NO_WORKER);
  expect_pass(natt_v6(kV6Spi), OV2_WIRE_PASS_ENCAP_MISMATCH);
  expect_pass(FrameBuilder()
                  .ethernet(kEthIpv6)
                  .ipv6("2001:db8::1", "2001:db8::2", kProtoUdp)
                  .udp(4500, 4500)
                  .zeros(4)
                  .zeros(40)
                  .build(),
              OV2_WIRE_PASS_IKE);
  XskEnvironment xsk(programs().wire_xsks_map_fd());
  EXPECT_EQ(run_xdp(programs().wire_prog_fd(), natt_v6(kV6UdpSpi)).action, XDP_REDIRECT);
}

TEST_F(WireTest, NatKeepaliveIsPassed) {
  expect_pass(FrameBuilder()
                  .ethernet(kEthIpv4)
                  .ipv4("198.51.100.1", "192.0.2.2", kProtoUdp)
                  .udp(4500, 4500)
                  .payload({0xff})
                  .build(),
              OV2_WIRE_PASS_KEEPALIVE);
  // Ethernet padding must not turn a keepalive into something else.
  Bytes padded = FrameBuilder()
                     .ethernet(kEthIpv4)
                     .ipv4("198.51.100.1", "192.0.2.2", kProtoUdp)
                     .udp(4500, 4500)
                     .payload({0xff})
                     .build();
  padded.resize(60, 0);
  expect_pass(padded, OV2_WIRE_PASS_KEEPALIVE);
}

TEST_F(WireTest, ShortOrInconsistentUdpEncapsulationIsMalformed) {
  auto udp_payload = [](Bytes payload, int forced_udp_len = -1) {
    return FrameBuilder()
        .ethernet(kEthIpv4)
        .ipv4("198.51.100.1", "192.0.2.2", kProtoUdp)
        .udp(4500, 4500, forced_udp_len)
        .payload(payload)
        .build();
  };
  expect_pass(udp_payload({}), OV2_WIRE_PASS_MALFORMED);                     // no payload
  expect_pass(udp_payload({0x00}), OV2_WIRE_PASS_MALFORMED);                 // one byte, not 0xff
  expect_pass(udp_payload({0x00, 0x00, 0x10}), OV2_WIRE_PASS_MALFORMED);     // 3 bytes
  expect_pass(udp_payload({0, 0, 0x20, 0, 0, 0}), OV2_WIRE_PASS_MALFORMED);  // SPI but no sequence number
  expect_pass(udp_payload(Bytes(16, 1), 4), OV2_WIRE_PASS_MALFORMED);        // UDP length < 8
  expect_pass(udp_payload(Bytes(16, 1), 200), OV2_WIRE_PASS_MALFORMED);      // UDP length past the IP packet
  // A truncated UDP header.
  expect_pass(FrameBuilder()
                  .ethernet(kEthIpv4)
                  .ipv4("198.51.100.1", "192.0.2.2", kProtoUdp)
                  .payload({0x11, 0x94, 0x11})
                  .build(),
              OV2_WIRE_PASS_MALFORMED);
}

TEST_F(WireTest, ReferenceEspFrameTruncatedAtEveryOffsetPassesAsMalformed) {
  for (const Bytes& full : {esp_v4_frame(kEspSpi, "192.0.2.2", 8), natt_v4_frame(kUdpSpi, "192.0.2.2", 8),
                            esp_v6_frame(kV6Spi, "2001:db8::2", 8)}) {
    for (size_t len = 0; len < full.size(); ++len) {
      Bytes cut(full.begin(), full.begin() + static_cast<long>(len));
      if (len < 14) {
        // test_run refuses frames shorter than an Ethernet header itself.
        XdpRun r = run_xdp(programs().wire_prog_fd(), cut);
        if (r.err != 0) continue;
      }
      expect_pass(cut, OV2_WIRE_PASS_MALFORMED);
      if (HasFailure()) {
        ADD_FAILURE() << "truncated at " << len << " of " << full.size();
        return;
      }
    }
  }
}

}  // namespace
}  // namespace ov2::test
